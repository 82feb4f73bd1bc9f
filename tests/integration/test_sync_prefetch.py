"""The source's batches read ahead of the target's writes (pgferry.sync.prefetch), on a real
server.

Invariant: each query's blocks hold exactly the bytes psycopg's own ``Copy.read()`` returns,
in order, whatever the number of queries, their sizes and how far ahead the thread may
read; afterwards the source connection is in its transaction, not aborted, ready for the
next query, also when the caller stops early. A server error in a query is raised where
that query's data is read; a backend terminated while the caller works is raised there too,
and nothing hangs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import pq, sql

from pgferry.sync import prefetch


@pytest.fixture
def dsn(make_db: Callable[..., str]) -> str:
    return make_db("prefetch")


def _query(n: int, width: int, fmt: str) -> str:
    return (
        sql.SQL(
            "COPY (SELECT i, repeat(chr(65 + i % 26), (i::int8 * 7919 % ({w} + 1))::int)"
            " FROM generate_series(1, {n}) i) TO STDOUT (FORMAT {f})"
        )
        .format(w=sql.Literal(width), n=sql.Literal(n), f=sql.SQL(fmt))
        .as_string(None)
    )


def _reference(conn: psycopg.Connection[Any], q: str) -> bytes:
    with conn.cursor().copy(q) as out:
        return b"".join(bytes(d) for d in out)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shapes=st.lists(
        st.tuples(st.sampled_from([0, 1, 3, 2000, 40_000]), st.integers(0, 300)),
        min_size=1,
        max_size=5,
    ),
    depth=st.sampled_from([1, 2, 32]),
    fmt=st.sampled_from(["binary", "text"]),
)
def test_every_query_data_as_psycopg_reads_it(
    dsn: str, monkeypatch: pytest.MonkeyPatch, shapes: list[tuple[int, int]], depth: int, fmt: str
) -> None:
    monkeypatch.setattr(prefetch, "DEPTH", depth)
    queries = [_query(n, w, fmt) for n, w in shapes]
    with psycopg.connect(dsn) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        want = [_reference(conn, q) for q in queries]
        got: list[bytes] = []
        with contextlib.closing(prefetch.copies(conn, queries)) as ahead:
            for data in ahead:
                time.sleep(0.001)  # the caller's own work: the thread reads ahead meanwhile
                got.append(b"".join(data))
        assert got == want
        assert conn.pgconn.transaction_status == pq.TransactionStatus.INTRANS
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_stopped_early_the_transaction_goes_on(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller fails in the middle: the query under way is read to its end, not cancelled
    (a cancel would abort the source's transaction and its snapshot)."""
    monkeypatch.setattr(prefetch, "DEPTH", 2)
    queries = [_query(50_000, 200, "binary") for _ in range(4)]
    with psycopg.connect(dsn) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snap = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        with (
            pytest.raises(ZeroDivisionError),
            contextlib.closing(prefetch.copies(conn, queries)) as ahead,
        ):
            data = next(ahead)
            next(data)  # one block read; the thread waits on its full queue
            1 / 0  # noqa: B018 - the caller's failure
        assert conn.pgconn.transaction_status == pq.TransactionStatus.INTRANS
        assert conn.execute("SELECT pg_current_snapshot()::text").fetchone() == snap
        assert not any(t.name == "pgferry-prefetch" for t in threading.enumerate())


def test_a_server_error_is_raised_where_its_data_is_read(dsn: str) -> None:
    bad = "COPY (SELECT 1 / (i - 3) FROM generate_series(1, 5) i) TO STDOUT"
    queries = [_query(10, 5, "text"), bad, _query(10, 5, "text")]
    with psycopg.connect(dsn) as conn:
        conn.execute("BEGIN")
        want = _reference(conn, queries[0])
        with contextlib.closing(prefetch.copies(conn, queries)) as ahead:
            assert b"".join(next(ahead)) == want
            with pytest.raises(psycopg.errors.DivisionByZero):
                b"".join(next(ahead))
        assert conn.pgconn.transaction_status == pq.TransactionStatus.INERROR
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_each_query_read_to_its_end_before_the_next(dsn: str) -> None:
    queries = [_query(10, 5, "text"), _query(10, 5, "text")]
    with psycopg.connect(dsn) as conn:
        with contextlib.closing(prefetch.copies(conn, queries)) as ahead:
            next(ahead)  # not read
            with pytest.raises(RuntimeError, match="read to its end"):
                next(ahead)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_terminated_source_is_raised_and_nothing_hangs(
    dsn: str, pg_admin_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefetch, "DEPTH", 1)
    queries = [_query(200_000, 200, "binary") for _ in range(3)]
    with psycopg.connect(dsn) as conn:
        pid = conn.info.backend_pid
        with (
            pytest.raises(psycopg.OperationalError),
            contextlib.closing(prefetch.copies(conn, queries)) as ahead,
        ):
            data = next(ahead)
            next(data)
            with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            for _ in data:
                pass
            for more in ahead:
                for _ in more:
                    pass
        assert conn.broken


def test_a_lazy_query_list_runs_in_the_thread_and_stops_with_the_caller(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queries made on the source connection as they are needed (the next batch's bound)
    run in the reading thread, one after another; closed early, no more are made."""
    monkeypatch.setattr(prefetch, "DEPTH", 1)
    made: list[str] = []

    def queries(conn: psycopg.Connection[Any]) -> Any:
        for i in range(10):
            row = conn.execute("SELECT %s::int * 1000", [i + 1]).fetchone()
            assert row is not None
            made.append(threading.current_thread().name)
            yield _query(row[0], 50, "binary")

    with psycopg.connect(dsn) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        with contextlib.closing(prefetch.copies(conn, queries(conn))) as ahead:
            for i, data in enumerate(ahead):
                assert b"".join(data)  # (the connection is the thread's until the end)
                if i == 1:
                    break
        assert set(made) == {"pgferry-prefetch"}
        assert 2 <= len(made) <= 4
        assert conn.pgconn.transaction_status == pq.TransactionStatus.INTRANS

"""Reading a COPY in blocks (pgferry.pg.copy_reader.blocks), on a real server.

Invariant: the blocks hold exactly the bytes psycopg's own ``Copy.read()`` returns, row by
row, for any number and width of rows, in binary and text; every block but the last holds
at least the asked size; afterwards the connection is where psycopg leaves it (in its
transaction, ready for the next query). A server error in the middle of the data, or a
backend terminated while it sends, is raised as psycopg raises it, and the connection
recovers with a rollback (the error) or is reported lost (the termination).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import pq, sql

from pgferry.pg import copy_reader
from pgferry.pg.copy_reader import blocks


@pytest.fixture
def dsn(make_db: Callable[..., str]) -> str:
    return make_db("copy")


def _rows(n: int, width: int, fmt: str) -> sql.Composed:
    return sql.SQL(
        "COPY (SELECT i, repeat(chr(65 + i % 26), (i::int8 * 7919 % ({w} + 1))::int),"
        " i::numeric / 7, CASE WHEN i % 5 = 0 THEN NULL ELSE now() END"
        " FROM generate_series(1, {n}) i) TO STDOUT (FORMAT {f})"
    ).format(w=sql.Literal(width), n=sql.Literal(n), f=sql.SQL(fmt))


def _reference(conn: psycopg.Connection[Any], q: sql.Composed) -> bytes:
    with conn.cursor().copy(q) as out:
        return b"".join(bytes(d) for d in out)


def _read(conn: psycopg.Connection[Any], q: sql.Composed, size: int) -> list[bytes]:
    with conn.cursor().copy(q) as out:
        return list(blocks(out, size))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.sampled_from([0, 1, 2, 3, 50, 1000, 30_000]),
    width=st.integers(0, 400),
    size=st.sampled_from([1, 100, 4096, copy_reader.BLOCK]),
    fmt=st.sampled_from(["binary", "text"]),
)
def test_blocks_hold_what_psycopg_reads(dsn: str, n: int, width: int, size: int, fmt: str) -> None:
    q = _rows(n, width, fmt)
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")  # now() alike in both reads
        want = _reference(conn, q)
        got = _read(conn, q, size)
        assert b"".join(got) == want
        assert all(len(b) >= size for b in got[:-1])
        assert all(got)  # no empty block
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How often each way out of the fast path ran: psycopg's wait, and the reader's own
    taking of the COPY's result."""
    seen = {"read": 0, "take": 0}
    read, take = psycopg.Copy.read, copy_reader._take_result

    def counted_read(self: psycopg.Copy) -> Any:
        seen["read"] += 1
        return read(self)

    def counted_take(conn: psycopg.Connection[Any]) -> None:
        seen["take"] += 1
        take(conn)

    monkeypatch.setattr(psycopg.Copy, "read", counted_read)
    monkeypatch.setattr(copy_reader, "_take_result", counted_take)
    yield seen


def test_both_endings_are_taken(dsn: str, paths: dict[str, int]) -> None:
    """A few rows arrive with the COPY's end (the reader takes the result itself); many rows
    outrun libpq's buffer (psycopg waits for the next one). Both leave the connection
    ready, with the server's row count read right."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert b"".join(_read(conn, _rows(3, 10, "text"), 100)).count(b"\n") == 3
        assert paths["take"] >= 1
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        paths.update(read=0, take=0)
        assert b"".join(_read(conn, _rows(300_000, 50, "text"), 1 << 16)).count(b"\n") == 300_000
        assert paths["read"] >= 2
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("n", [3, 300_000])
def test_an_error_in_the_data_is_raised_as_psycopg_raises_it(dsn: str, n: int) -> None:
    """Division by zero at the second-last row: after rows were sent (a few: in the same
    read as the end; many: after waits). The class is psycopg's for the SQLSTATE."""
    q = sql.SQL("COPY (SELECT 1 / ({n} - 1 - i) FROM generate_series(1, {n}) i) TO STDOUT").format(
        n=sql.Literal(n)
    )
    with psycopg.connect(dsn) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero) as err:
            _read(conn, q, 1 << 16)
        assert err.value.sqlstate == "22012"
        conn.rollback()
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_a_terminated_backend_is_a_lost_connection(dsn: str, pg_admin_dsn: str) -> None:
    with psycopg.connect(dsn) as conn, psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        pid = conn.info.backend_pid
        q = "COPY (SELECT i, repeat('x', 100) FROM generate_series(1, 20000000) i) TO STDOUT"
        with pytest.raises(psycopg.OperationalError):  # noqa: PT012 - the kill is mid-read
            with conn.cursor().copy(q) as out:
                for i, _ in enumerate(blocks(out, 1 << 16)):
                    if i == 1:
                        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert conn.broken or conn.closed

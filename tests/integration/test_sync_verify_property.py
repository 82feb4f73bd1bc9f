"""Property: diff_table agrees with a row-by-row comparison in Python, whatever the chunking."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgferry.sync import differ
from pgferry.sync.verify import DiffRange, diff_table

BASE_ROWS = 600
# k2 as text (keys read back by a second query) or bigint (keys packed with the hashes)
DDL = "CREATE TABLE kv (k1 int, k2 {}, v text, n numeric, PRIMARY KEY (k1, k2))"
K2 = {"text": "(ARRAY['a', 'B', 'ü'])[g %% 3 + 1]", "bigint": "g %% 3 + 1"}
BASE = (
    "INSERT INTO kv SELECT g / 3, {}, "
    "CASE WHEN g %% 11 = 0 THEN NULL ELSE 'v' || g END, g / 7.0 "
    "FROM generate_series(0, %s) g"
)
AS_INT = {"a": 1, "B": 2, "ü": 3, "z": 4}

keys = st.tuples(st.integers(-5, BASE_ROWS // 3 + 5), st.sampled_from(["a", "B", "ü", "z"]))
ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"), keys, st.one_of(st.none(), st.text(max_size=4)), st.integers(-3, 3)
        ),
        st.tuples(st.just("del"), keys, st.none(), st.just(0)),
    ),
    max_size=30,
)


class _Spec:
    schema, name, qualname = "public", "kv", "public.kv"
    key = ("k1", "k2")
    columns = ["k1", "k2", "v", "n"]
    where = None


@pytest.fixture(params=["text", "bigint"])
def pair(request: pytest.FixtureRequest, make_db: Callable[..., str]) -> Iterator[tuple[Any, ...]]:
    conns = [psycopg.connect(make_db(p), autocommit=True) for p in ("psrc", "ptgt")]
    for c in conns:
        c.execute(DDL.format(request.param))
    yield (*conns, request.param)
    for c in conns:
        c.close()


def _apply(c: psycopg.Connection[Any], todo: list[tuple[Any, ...]], k2type: str) -> None:
    for kind, (k1, k2), v, n in todo:
        if k2type == "bigint":
            k2 = AS_INT[k2]
        if kind == "put":
            c.execute(
                "INSERT INTO kv VALUES (%s, %s, %s, %s) ON CONFLICT (k1, k2) DO UPDATE "
                "SET v = excluded.v, n = excluded.n",
                [k1, k2, None if v is None else v.replace("\x00", ""), n],
            )
        else:
            c.execute("DELETE FROM kv WHERE k1 = %s AND k2 = %s", [k1, k2])


def _rows(c: psycopg.Connection[Any]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {(r[0], r[1]): r for r in c.execute("SELECT k1, k2, v, n FROM kv")}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    src_ops=ops,
    tgt_ops=ops,
    chunk_rows=st.integers(1, 300),
    list_rows=st.integers(1, 60),
    fanout=st.integers(2, 9),
    empty_side=st.sampled_from([None, "src", "tgt"]),
    group_rows=st.sampled_from([1, 40, 200_000]),
)
def test_diff_table_matches_a_row_by_row_comparison(
    pair: tuple[Any, ...],
    src_ops: list[Any],
    tgt_ops: list[Any],
    chunk_rows: int,
    list_rows: int,
    fanout: int,
    empty_side: str | None,
    group_rows: int,
) -> None:
    src, tgt, k2type = pair
    for c, todo, side in ((src, src_ops, "src"), (tgt, tgt_ops, "tgt")):
        c.execute("TRUNCATE kv")
        if empty_side != side:
            c.execute(BASE.format(K2[k2type]), [BASE_ROWS])
        _apply(c, todo, k2type)
    a, b = _rows(src), _rows(tgt)
    want = {
        "differing": {k for k in a.keys() & b.keys() if a[k] != b[k]},
        "only_in_source": a.keys() - b.keys(),
        "only_in_target": b.keys() - a.keys(),
    }
    ranges: list[DiffRange] = []
    # changed rows are streamed a few at a time: pieces straddle the fetches
    saved, differ.STREAM_FETCH = differ.STREAM_FETCH, group_rows
    try:
        d = diff_table(
            src,
            tgt,
            _Spec(),
            chunk_rows=chunk_rows,
            list_rows=list_rows,
            fanout=fanout,
            key_limit=10,
            on_range=ranges.append,
        )
    finally:
        differ.STREAM_FETCH = saved
    assert (d.differing, d.only_in_source, d.only_in_target) == tuple(
        len(want[k]) for k in ("differing", "only_in_source", "only_in_target")
    )
    assert d.matched == len(a) - d.differing - d.only_in_source
    assert (d.source_rows, d.target_rows) == (len(a), len(b))
    assert d.identical == (a == b)
    assert (d.source_checksum == d.target_checksum) == (a == b)
    assert len(d.first_keys) == min(10, sum(len(v) for v in want.values()))
    assert all(k.key in want[k.kind] for k in d.first_keys)
    # the ranges handed to the checksum strategy cover every difference exactly once
    listed = [(k.kind, k.key) for r in ranges for k in (r.diffs or [])]
    assert len(listed) == len(set(listed))
    whole_src = sum(r.source_rows for r in ranges if r.diffs is None)
    whole_tgt = sum(r.target_rows for r in ranges if r.diffs is None)
    assert len(listed) + whole_src + whole_tgt == sum(len(v) for v in want.values())
    assert all(key in want[kind] for kind, key in listed)

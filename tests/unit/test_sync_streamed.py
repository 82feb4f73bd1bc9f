"""The matching of physical slices (pgferry.sync.streamed.Matcher), against a plain model.

Invariant: for any packable key (integers with negative and extreme values, uuids,
several columns), any rows, any differences, any physical order of either side and any
cut of either side into slices (the two sides cut differently), the Matcher reports per
key range exactly the differing keys of a row-by-row comparison (each kind, with both
row hashes, in the order a packed comparison lists them), the matching rows, both sides'
row counts, sums that are equal exactly when the range's rows are, and sums that add up
to the whole table's; and it gives up exactly when the rows it would hold at once
(pending on one side, or differing) pass its limit.
"""

from __future__ import annotations

import struct
import uuid
from functools import reduce
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from pgferry.sync import packed, streamed
from pgferry.sync.chunks import KeyRange, split
from pgferry.sync.columns import ColumnInfo
from pgferry.sync.sides import Side

TYPES = {"int2": ">h", "int4": ">i", "int8": ">q"}
KEYS = [("int8",), ("int4", "int8"), ("uuid",), ("uuid", "int2"), ("int2",)]
LIMITS = {"int2": 2**15, "int4": 2**31, "int8": 2**63}


def _side(types: tuple[str, ...]) -> Side:
    cols = tuple(
        ColumnInfo(f"k{i}", sql.SQL(t), f"pg_catalog.{t}", False, "", True)
        for i, t in enumerate(types)
    )
    return Side(sql.Identifier("t"), cols, cols)


def _key(types: tuple[str, ...], n: int) -> tuple[Any, ...]:
    """The ``n``-th key: extremes first, then values spread over the type, signs mixed."""
    out: list[Any] = []
    for i, t in enumerate(types):
        m = n * 7 + i
        if t == "uuid":
            out.append(uuid.UUID(int=(m * 0x9E3779B97F4A7C15 + (m % 3) * 2**127) % 2**128))
        else:
            lim = LIMITS[t]
            edge = [-lim, lim - 1, 0, -1]
            out.append(edge[m] if m < len(edge) else (m * 2654435761) % (2 * lim) - lim)
    return tuple(out)


def _pack(types: tuple[str, ...], rows: list[tuple[tuple[Any, ...], int]]) -> packed.Packed:
    data = b"".join(
        b"".join(
            v.bytes if t == "uuid" else struct.pack(TYPES[t], v)
            for t, v in zip(types, k, strict=True)
        )
        + struct.pack(">q", h)
        for k, h in rows
    )
    return packed.Packed(len(rows), data)


def _slices(rows: list[Any], cuts: list[int]) -> list[list[Any]]:
    at = sorted({min(len(rows), c) for c in cuts})
    edges = [0, *at, len(rows)]
    return [rows[a:b] for a, b in zip(edges, edges[1:], strict=False)]


hashes = st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 3)  # small ones: XORs that meet


@settings(max_examples=300, deadline=None)
@given(
    types=st.sampled_from(KEYS),
    base=st.dictionaries(st.integers(0, 300), hashes, max_size=120),
    changes=st.lists(
        st.tuples(st.sampled_from(["update", "delete", "insert"]), st.integers(0, 330), hashes),
        max_size=40,
    ),
    order=st.randoms(use_true_random=False),
    cuts=st.tuples(
        st.lists(st.integers(0, 150), max_size=6), st.lists(st.integers(0, 150), max_size=6)
    ),
    bounds_at=st.lists(st.integers(0, 330), max_size=5),
    limit=st.integers(0, 200) | st.just(10**6),
)
def test_the_matcher_reports_what_a_row_by_row_comparison_does(
    types: tuple[str, ...],
    base: dict[int, int],
    changes: list[tuple[str, int, int]],
    order: Any,
    cuts: tuple[list[int], list[int]],
    bounds_at: list[int],
    limit: int,
) -> None:
    src = {_key(types, n): h for n, h in base.items()}
    tgt = dict(src)
    for what, n, h in changes:
        k = _key(types, n)
        if what == "delete":
            tgt.pop(k, None)
        elif what == "insert":
            src[k] = h
        elif k in tgt:
            tgt[k] = h
    # physical orders: the source's shuffled; the target's the source's with some rows moved
    s_rows = list(src.items())
    order.shuffle(s_rows)
    t_rows = [(k, tgt[k]) for k, _ in s_rows if k in tgt] + [
        (k, h) for k, h in tgt.items() if k not in src
    ]
    for _ in range(len(t_rows) // 10):
        i, j = order.randrange(len(t_rows)), order.randrange(len(t_rows))
        t_rows[i], t_rows[j] = t_rows[j], t_rows[i]
    a_slices, b_slices = _slices(s_rows, cuts[0]), _slices(t_rows, cuts[1])
    n = max(len(a_slices), len(b_slices))
    a_slices += [[]] * (n - len(a_slices))
    b_slices += [[]] * (n - len(b_slices))
    bounds = sorted({_key(types, b) for b in bounds_at})

    m = streamed.Matcher(_side(types), bounds, limit)
    # the model of when it must give up: the rows held after each slice
    seen_a: dict[Any, int] = {}
    seen_b: dict[Any, int] = {}
    for sa, sb in zip(a_slices, b_slices, strict=True):
        seen_a.update(sa)
        seen_b.update(sb)
        both = seen_a.keys() & seen_b.keys()
        held = len(seen_a.keys() ^ seen_b.keys()) + sum(1 for k in both if seen_a[k] != seen_b[k])
        assert m.add(_pack(types, sa), _pack(types, sb)) == (held <= limit)
        if held > limit:
            return

    got = list(m.finish())
    ranges = split(KeyRange(), bounds)
    assert [r for r, _ in got] == ranges

    def inside(k: tuple[Any, ...], r: KeyRange) -> bool:
        return (r.lo is None or k >= r.lo) and (r.hi is None or k < r.hi)

    for rng, c in got:
        s_in = {k: h for k, h in src.items() if inside(k, rng)}
        t_in = {k: h for k, h in tgt.items() if inside(k, rng)}
        first = sorted(
            [
                ("differing", k, s_in[k], t_in[k])
                for k in s_in.keys() & t_in.keys()
                if s_in[k] != t_in[k]
            ]
            + [("only_in_source", k, s_in[k], None) for k in s_in.keys() - t_in.keys()],
            key=lambda d: d[1],
        )
        extra = sorted(
            [("only_in_target", k, None, t_in[k]) for k in t_in.keys() - s_in.keys()],
            key=lambda d: d[1],
        )
        assert [(d.kind, d.key, d.src_hash, d.tgt_hash) for d in c.diffs] == first + extra
        assert c.matched == sum(1 for k in s_in.keys() & t_in.keys() if s_in[k] == t_in[k])
        assert (c.source.rows, c.target.rows) == (len(s_in), len(t_in))
        xs = reduce(lambda x, y: x ^ y, s_in.values(), 0)
        xt = reduce(lambda x, y: x ^ y, t_in.values(), 0)
        assert (c.source == c.target) == ((len(s_in), xs) == (len(t_in), xt))
    for i, whole in enumerate((src, tgt)):
        sums = [c.source if i == 0 else c.target for _, c in got]
        assert sum(x.rows for x in sums) == len(whole)
        assert reduce(lambda x, y: x ^ y, (x.hash for x in sums), 0) == reduce(
            lambda x, y: x ^ y, whole.values(), 0
        )


def test_a_read_short_of_its_rows_gives_up() -> None:
    # a NULL key: string_agg leaves its bytes out, the read holds fewer rows than it counts
    types = ("int8",)
    m = streamed.Matcher(_side(types), [], 10**6)
    whole = _pack(types, [((1,), 5), ((2,), 6)])
    assert not m.add(packed.Packed(3, whole.data), whole)


def test_bounds_sort_as_the_server_sorts_keys() -> None:
    # integers by value, negative ones first, whatever their bytes; uuids by their bytes
    types = ("int4", "int8")
    m = streamed.Matcher(_side(types), [(-1, 0), (0, -(2**63)), (5, 7)], 10**6)
    keys = [(-(2**31), 9), (-1, -1), (-1, 0), (0, -(2**63)), (4, 2**63 - 1), (5, 7), (2**31 - 1, 0)]
    rows = _pack(types, [(k, 0) for k in keys])
    import numpy as np

    got = m.range_of(m.keys(np.frombuffer(rows.data, dtype=m.dtype)))
    assert got.tolist() == [0, 0, 1, 2, 2, 3, 3]


def test_counts_are_python_integers() -> None:
    # they end up in the JSON report, which writes what it does not know as a string
    types = ("uuid",)
    m = streamed.Matcher(_side(types), [], 10**6)
    assert m.add(_pack(types, [(_key(types, 1), 1), (_key(types, 2), 2)]), _pack(types, []))
    ((_, c),) = list(m.finish())
    assert all(type(x) is int for x in (c.matched, c.source.rows, c.target.rows, c.source.hash))

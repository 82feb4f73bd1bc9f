"""packed.compare of small reads, in plain Python: what the numpy path gives, exactly.

Invariant: for any two reads of a range (keys of every packable type and shape, shared,
changed and one-sided rows, in any order), the plain-Python match of a small read and
numpy's give the same sums, the same count of matching rows and the same differing keys
(kind, key and both row hashes) in the same order.
"""

from __future__ import annotations

import struct
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgferry.sync import packed

#: key column types and how to draw a value of each
TYPES: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "pg_catalog.int2": ("h", st.integers(-(2**15), 2**15 - 1)),
    "pg_catalog.int4": ("i", st.integers(-(2**31), 2**31 - 1)),
    "pg_catalog.int8": ("q", st.integers(-(2**63), 2**63 - 1)),
    "pg_catalog.uuid": ("16s", st.binary(min_size=16, max_size=16)),
}
SHAPES = [
    ("pg_catalog.int8",),
    ("pg_catalog.int4",),
    ("pg_catalog.int2",),
    ("pg_catalog.uuid",),
    ("pg_catalog.int8", "pg_catalog.int4"),
    ("pg_catalog.uuid", "pg_catalog.int2"),
]
HASHES = st.integers(-(2**63), 2**63 - 1)


def _side(types: tuple[str, ...]) -> Any:
    return SimpleNamespace(
        key=[SimpleNamespace(name=f"k{i}", type_name=t) for i, t in enumerate(types)]
    )


def _packed(types: tuple[str, ...], rows: list[tuple[tuple[Any, ...], int]]) -> packed.Packed:
    fmt = ">" + "".join(TYPES[t][0] for t in types) + "q"
    return packed.Packed(len(rows), b"".join(struct.pack(fmt, *k, h) for k, h in rows))


def _plain(c: packed.Compared | None) -> Any:
    assert c is not None
    return (
        c.source,
        c.target,
        c.matched,
        [(d.kind, d.key, d.src_hash, d.tgt_hash) for d in c.diffs],
    )


@st.composite
def reads(draw: st.DrawFn) -> tuple[tuple[str, ...], list[Any], list[Any]]:
    types = draw(st.sampled_from(SHAPES))
    key = st.tuples(*(TYPES[t][1] for t in types))
    keys = draw(st.lists(key, unique=True, max_size=80))
    a, b = [], []
    for k in keys:
        where = draw(st.sampled_from(["both", "changed", "a", "b"]))
        h = draw(HASHES)
        if where in ("both", "changed", "a"):
            a.append((k, h))
        if where == "both":
            b.append((k, h))
        elif where in ("changed", "b"):
            b.append((k, h ^ draw(st.integers(1, 2**62))))  # another hash
    a = draw(st.permutations(a))
    b = draw(st.permutations(b))
    return types, a, b


@settings(max_examples=400, deadline=None)
@given(reads())
def test_small_reads_match_as_numpy_matches_them(
    case: tuple[tuple[str, ...], list[Any], list[Any]],
) -> None:
    types, a, b = case
    s, pa, pb = _side(types), _packed(types, a), _packed(types, b)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(packed, "SMALL", -1)
        by_numpy = packed.compare(s, pa, pb)
    by_python = packed.compare(s, pa, pb)
    assert by_python is not None
    assert _plain(by_python) == _plain(by_numpy)
    # and what it says is right: the keys as psycopg reads them, every difference listed
    want = {(_key(types, k), h) for k, h in a} ^ {(_key(types, k), h) for k, h in b}
    listed = {(d.key, d.src_hash) for d in by_python.diffs if d.src_hash is not None}
    listed |= {(d.key, d.tgt_hash) for d in by_python.diffs if d.tgt_hash is not None}
    assert listed == want


def _key(types: tuple[str, ...], k: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(
        uuid.UUID(bytes=v) if t == "pg_catalog.uuid" else v for t, v in zip(types, k, strict=True)
    )


def test_a_read_that_does_not_hold_its_rows_is_refused() -> None:
    s = _side(("pg_catalog.int8",))
    a = packed.Packed(2, struct.pack(">qq", 1, 5))  # two rows counted, one sent (a NULL key)
    assert packed.compare(s, a, packed.Packed(0, b"")) is None

"""Pure pieces of the chunked comparison: key ranges, chunk sums, leaf classification.

Contract: nothing here talks to a database. A *key* is a tuple of Python
values in key-column order, as psycopg returns them. A :class:`KeyRange` is
half-open in the server's key order, ``lo <= key < hi``, with ``None`` for
an open end; :func:`split` cuts a range at sorted boundary keys into
consecutive ranges that cover it exactly. A :class:`Sums` is what one server
reports for one range: the row count and the XOR of the 64-bit row hashes.
:func:`classify` compares the ``key -> row hash`` maps of both sides of one
small range and says which keys differ, exist only in the source or only in
the target. :func:`table_checksum` folds a table's sums into the short
string reports show (``"<rows>:<16 hex digits>"``).

Sub-buckets: a :class:`Signature` is one side's finer view of one range,
the XOR of the row hashes per *sub-bucket* (rows grouped by the low
``bits`` bits of a hash of their key, so a row lands in the same sub-bucket
on both sides). :func:`sub_bits` picks ``bits`` for a range size,
:func:`differing_subs` lists the sub-buckets whose XORs differ and
:func:`sub_bitset` packs (piece, sub-bucket) pairs into the bit string the
server tests with ``get_bit``.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, Literal

Key = tuple[Any, ...]
DiffKind = Literal["differing", "only_in_source", "only_in_target"]

_MASK64 = (1 << 64) - 1

#: rows per sub-bucket aimed at (between half this and this): a changed row costs reading
#: its sub-bucket's rows again, a sub-bucket costs the server a group and 10 bytes sent
ROWS_PER_SUB = 5
#: sub-bucket numbers travel as int2
MAX_SUB_BITS = 15


@dataclass(frozen=True)
class KeyRange:
    """Keys ``lo <= key < hi`` in the server's key order; ``None`` is unbounded."""

    lo: Key | None = None
    hi: Key | None = None

    @property
    def whole(self) -> bool:
        return self.lo is None and self.hi is None


@dataclass(frozen=True)
class Sums:
    """One side's aggregate over one range: row count and XOR of the 64-bit row hashes."""

    rows: int = 0
    hash: int = 0

    def __add__(self, other: Sums) -> Sums:
        return Sums(self.rows + other.rows, self.hash ^ other.hash)


@dataclass(frozen=True)
class Signature:
    """One side's sums of one range, and the XOR of its row hashes per non-empty sub-bucket.

    ``subs`` (sub-bucket numbers, in no particular order) and ``xors`` are
    parallel arrays.
    """

    rows: int
    hash: int
    subs: array[int]
    xors: array[int]

    @property
    def sums(self) -> Sums:
        return Sums(self.rows, self.hash)


@dataclass(frozen=True)
class KeyDiff:
    """One differing key: ``kind`` says how it differs; its row hashes on each side (None:
    no row there, or not read)."""

    kind: DiffKind
    key: Key
    src_hash: int | None = field(default=None, compare=False, repr=False)
    tgt_hash: int | None = field(default=None, compare=False, repr=False)

    def to_dict(self, names: Sequence[str]) -> dict[str, Any]:
        """JSON-ready: ``{"kind": ..., "key": {column: value}}`` (non-JSON values as text)."""
        return {
            "kind": self.kind,
            "key": {n: _jsonable(v) for n, v in zip(names, self.key, strict=True)},
        }


@dataclass
class Leaf:
    """The classified keys of one small range: source order first, then target-only keys."""

    matched: int = 0
    diffs: list[KeyDiff] = field(default_factory=list)

    def count(self, kind: DiffKind) -> int:
        return sum(1 for d in self.diffs if d.kind == kind)


def split(rng: KeyRange, bounds: Sequence[Key]) -> list[KeyRange]:
    """``rng`` cut at ``bounds`` (sorted, strictly inside ``rng``): consecutive ranges."""
    edges: list[Key | None] = [rng.lo, *bounds, rng.hi]
    return [KeyRange(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def classify(source: Iterable[tuple[Key, int]], target: Mapping[Key, int]) -> Leaf:
    """Compare one range: ``source`` as ``(key, hash)`` pairs in key order, ``target`` as a map.

    Keys compare by Python equality (ints, UUIDs, strings, decimals and
    timestamps as psycopg returns them), so no ordering is assumed; the
    listing order of the source is kept for the report.
    """
    leaf = Leaf()
    seen: set[Key] = set()
    for key, h in source:
        seen.add(key)
        other = target.get(key)
        if other is None:
            leaf.diffs.append(KeyDiff("only_in_source", key, h))
        elif other != h:
            leaf.diffs.append(KeyDiff("differing", key, h, other))
        else:
            leaf.matched += 1
    leaf.diffs += [
        KeyDiff("only_in_target", k, None, h) for k, h in target.items() if k not in seen
    ]
    return leaf


def sub_bits(rows: int) -> int:
    """Sub-bucket bits for ``rows`` rows: ``ROWS_PER_SUB / 2`` to ``ROWS_PER_SUB`` rows a bucket."""
    return min(MAX_SUB_BITS, max(0, rows // ROWS_PER_SUB).bit_length())


def differing_subs(a: Signature | None, b: Signature | None) -> list[int]:
    """The sub-buckets (ascending) whose XOR differs between ``a`` and ``b`` (None: no rows).

    A sub-bucket present on one side only differs. Equal sub-bucket lists, the
    usual case, are compared without building a Python object per bucket.
    """
    empty: array[int] = array("q")
    sa, xa = (a.subs, a.xors) if a is not None else (empty, empty)
    sb, xb = (b.subs, b.xors) if b is not None else (empty, empty)
    if sa == sb:  # the same buckets in the same order (compared in C)
        return sorted(compress(sa, map(operator.ne, xa, xb)))
    db = dict(zip(sb, xb, strict=True))
    out = [s for s, x in zip(sa, xa, strict=True) if db.pop(s, None) != x]
    return sorted(out + list(db))


def sub_bitset(wanted: Mapping[int, Iterable[int]], bits: int, pieces: int) -> bytes:
    """Bit ``(piece << bits) | sub`` set for every ``sub`` of ``wanted[piece]``.

    Bit ``n`` is bit ``n % 8`` (least significant first) of byte ``n // 8``,
    as PostgreSQL's ``get_bit`` reads a ``bytea``; ``pieces`` sizes the string.
    """
    out = bytearray(((pieces << bits) + 7) // 8)
    for piece, subs in wanted.items():
        base = piece << bits
        for sub in subs:
            n = base | sub
            out[n >> 3] |= 1 << (n & 7)
    return bytes(out)


def table_checksum(sums: Sums) -> str:
    """``"<rows>:<XOR of the row hashes as 16 hex digits>"``: equal iff the sums are equal."""
    return f"{sums.rows}:{sums.hash & _MASK64:016x}"


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)

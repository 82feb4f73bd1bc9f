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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Key = tuple[Any, ...]
DiffKind = Literal["differing", "only_in_source", "only_in_target"]

_MASK64 = (1 << 64) - 1


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
class KeyDiff:
    """One differing key: ``kind`` says how it differs."""

    kind: DiffKind
    key: Key

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
            leaf.diffs.append(KeyDiff("only_in_source", key))
        elif other != h:
            leaf.diffs.append(KeyDiff("differing", key))
        else:
            leaf.matched += 1
    leaf.diffs += [KeyDiff("only_in_target", k) for k in target if k not in seen]
    return leaf


def table_checksum(sums: Sums) -> str:
    """``"<rows>:<XOR of the row hashes as 16 hex digits>"``: equal iff the sums are equal."""
    return f"{sums.rows}:{sums.hash & _MASK64:016x}"


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)

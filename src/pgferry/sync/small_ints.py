"""Bigint columns whose values all fit in 32 bits: a verify hashes them as they are.

Contract: :func:`plain_int8` takes both connections of a comparison (each inside
the read-only transaction, and so the snapshot, its scans run in) and both
agreed :class:`~pgferry.sync.sides.Side` objects, and returns them with
:attr:`~pgferry.sync.sides.Side.plain_int8` set to the ``bigint`` columns that
may be hashed by their type's own hash function. It only reads: one
``min``/``max`` query a side, answered from the leading column of a btree index
(a few index pages), never a scan of the table.

Why: ``hashint8extended``, which ``hash_record_extended`` calls for a ``bigint``,
folds the value's high 32 bits into its low 32 bits (0 and 2^32 + 1 hash alike),
so the row hash hashes every ``bigint`` by its exact bytes (``int8send``), which
costs a ``bytea`` per value: about a sixth of a verify of a table of bigints. On
the values of ``[-2^31, 2^31)``, and on those of ``[0, 2^32)``, the fold changes
nothing (the high half is all zeros, or all ones and then inverted), so two
different values in one of those ranges never fold alike. A column qualifies when
every value on *both* sides lies in one of those ranges, read in the same
snapshots the comparison reads: a value outside them on either side keeps the
exact hash for both. (A side's ``where`` filter or row security only narrows the
rows the comparison reads, all inside the range read here.)

Version 2 only: version 3 (a table whose every column it hashes by the column type's
own function, :func:`pgferry.sync.rowhash.direct_v3`) hashes a ``bigint`` exactly as
the seed of ``hashint8extended``, at no cost to spare. Only a comparison that keeps
no hash uses it (``verify``, the dry run's counts,
the check after a sync): a sync's conflicts base stores row hashes that later runs
must compute alike, whatever the values are by then.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from pgferry.sync.sides import Side

_INT8 = "pg_catalog.int8"

#: ranges on which ``hashint8extended`` folds nothing: [-2^31, 2^31) and [0, 2^32)
_RANGES = ((-(2**31), 2**31), (0, 2**32))

#: columns (of those asked for) that lead a valid, non-partial btree index of the table
_LEADING = """
SELECT DISTINCT a.attname
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE i.indrelid = %s::regclass AND i.indisvalid AND i.indpred IS NULL
  AND a.attname = ANY(%s)
"""


def _candidates(s: Side) -> list[str]:
    """``bigint`` columns (or domains over it) that ``s`` hashes by their exact bytes."""
    if s.hash_version != 2:
        return []
    seen = {c.name: c for c in (*s.key, *s.columns)}
    return [
        c.name
        for c in seen.values()
        if c.base_name == _INT8 and c.name not in s.as_text and c.name not in s.exprs
    ]


def _ranges(conn: psycopg.Connection[Any], s: Side, names: list[str]) -> dict[str, tuple[Any, Any]]:
    """``(min, max)`` of each of ``names`` that leads a btree index of ``s``'s table."""
    table = s.table.as_string(conn)
    indexed = sorted(r[0] for r in conn.execute(_LEADING, [table, names]))
    if not indexed:
        return {}
    cols = [sql.SQL("min({c}), max({c})").format(c=sql.Identifier(n)) for n in indexed]
    row = conn.execute(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(cols), s.table))
    got = row.fetchone() or ()
    return {n: (got[2 * i], got[2 * i + 1]) for i, n in enumerate(indexed)}


def _folds_nothing(*bounds: tuple[Any, Any]) -> bool:
    """Do all these ``(min, max)`` pairs (None: no value) lie in one range of :data:`_RANGES`?"""
    values = [v for pair in bounds for v in pair if v is not None]
    if not values:
        return True
    lo, hi = min(values), max(values)
    return any(a <= lo and hi < b for a, b in _RANGES)


def plain_int8(
    src: psycopg.Connection[Any], a: Side, tgt: psycopg.Connection[Any], b: Side
) -> tuple[Side, Side]:
    """``a`` and ``b`` with :attr:`Side.plain_int8` set (see the module docstring)."""
    names = sorted(set(_candidates(a)) & set(_candidates(b)))
    if not names:
        return a, b
    ra, rb = _ranges(src, a, names), _ranges(tgt, b, names)
    plain = frozenset(n for n in names if n in ra and n in rb and _folds_nothing(ra[n], rb[n]))
    return replace(a, plain_int8=plain), replace(b, plain_int8=plain)

"""Server-side row hashing and the SQL of the chunked comparison, for one side.

Contract: :func:`side` inspects one table on one connection and returns a
:class:`Side`, which composes every query the verifier runs there (all
identifiers through :class:`psycopg.sql.Identifier`, all values as
parameters). The functions below run those queries on a connection the
caller owns and never begin, commit or roll back a transaction: they run
inside whatever transaction (and snapshot) the connection is in.

The row hash is ``hashtextextended(ROW(c1, c2, ...)::text, 0)`` over the
synced columns in the given order (key columns included), computed on the
server; a column may be replaced by a select expression (the masking rule
the sync applied on the source). The text form of a row depends on a few
settings, so :func:`canonical_settings` pins them (UTC, ISO dates, shortest
exact floats, hex bytea) for the current transaction on both sides.
A range's checksum is ``count(*)`` plus ``sum(hash)`` (exact, as numeric),
which does not depend on row order, so chunk sums can be computed with one
sequential scan and ``width_bucket`` over the chunk boundaries.

Key order: keys are compared as row values ``(k1, k2) >= (...)`` in the
columns' collation when both sides use the same collations for the key
columns, else in ``COLLATE "C"`` on both sides, so that a boundary key cuts
both tables at the same place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgferry.errors import BadInput
from pgferry.sync.chunks import Key, KeyRange, Sums

_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
}

_KEY_INFO = """
SELECT a.attname, tn.nspname, t.typname, a.attcollation <> 0,
       CASE WHEN a.attcollation = 0 THEN ''
            WHEN co.collname = 'default' THEN (
                SELECT 'default:' || d.datcollate || ':' || coalesce(
                    to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale', '')
                FROM pg_database d WHERE d.datname = current_database())
            ELSE co.collname END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = t.typnamespace
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE n.nspname = %s AND c.relname = %s AND a.attname = ANY(%s)
"""


@dataclass(frozen=True)
class KeyColumn:
    name: str
    type: sql.Composable  # the type, e.g. "pg_catalog"."int8"
    collatable: bool
    collation: str  # "" when not collatable; comparable across servers


@dataclass(frozen=True)
class Side:
    """The queries of the comparison for one table on one server."""

    table: sql.Composable
    key: tuple[KeyColumn, ...]
    row: tuple[sql.Composable, ...]
    where: sql.Composable | None = None
    collate_c: bool = False

    # -- expressions -------------------------------------------------------------------------
    def _col(self, k: KeyColumn, expr: sql.Composable) -> sql.Composable:
        if self.collate_c and k.collatable:
            return sql.SQL("{} COLLATE {}").format(expr, sql.Identifier("C"))
        return expr

    def key_exprs(self) -> list[sql.Composable]:
        return [self._col(k, sql.Identifier(k.name)) for k in self.key]

    def key_tuple(self) -> sql.Composable:
        exprs = self.key_exprs()
        if len(exprs) == 1:
            return exprs[0]
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(exprs))

    def _param_tuple(self) -> sql.Composable:
        ps = [self._col(k, sql.SQL("%s::{}").format(k.type)) for k in self.key]
        return ps[0] if len(ps) == 1 else sql.SQL("ROW({})").format(sql.SQL(", ").join(ps))

    def row_hash(self) -> sql.Composable:
        return sql.SQL("hashtextextended(ROW({})::text, 0)").format(sql.SQL(", ").join(self.row))

    def predicate(self, rng: KeyRange) -> tuple[sql.Composable, list[Any]]:
        """``WHERE`` clause text for ``rng`` (and the table's ``where``) and its parameters."""
        parts: list[sql.Composable] = []
        params: list[Any] = []
        if rng.lo is not None:
            parts.append(sql.SQL("{} >= {}").format(self.key_tuple(), self._param_tuple()))
            params += list(rng.lo)
        if rng.hi is not None:
            parts.append(sql.SQL("{} < {}").format(self.key_tuple(), self._param_tuple()))
            params += list(rng.hi)
        if self.where is not None:
            parts.append(sql.SQL("({})").format(self.where))
        if not parts:
            return sql.SQL("TRUE"), params
        return sql.SQL(" AND ").join(parts), params

    def thresholds(self, bounds: Sequence[Key]) -> tuple[sql.Composable, list[Any]]:
        """An array expression of ``bounds`` (sorted keys) for ``width_bucket``."""
        cols = list(zip(*bounds, strict=True)) if bounds else [() for _ in self.key]
        params = [list(c) for c in cols]
        if len(self.key) == 1:
            k = self.key[0]
            return sql.SQL("%s::{}[]").format(k.type), params
        names = [sql.Identifier(f"a{i}") for i in range(len(self.key))]
        arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(k.type) for k in self.key)
        row = sql.SQL(", ").join(self._col(k, n) for k, n in zip(self.key, names, strict=True))
        expr = sql.SQL(
            "(SELECT array_agg(ROW({row}) ORDER BY u.o) FROM unnest({arrays}) "
            "WITH ORDINALITY AS u({names}, o))"
        ).format(row=row, arrays=arrays, names=sql.SQL(", ").join(names))
        return expr, params


def side(
    conn: psycopg.Connection[Any],
    schema: str,
    name: str,
    key: Sequence[str],
    columns: Sequence[str],
    *,
    exprs: Mapping[str, sql.Composable] | None = None,
    where: str | sql.Composable | None = None,
) -> Side:
    """The :class:`Side` of ``schema.name`` on ``conn`` (BadInput when a key column is missing)."""
    if not key:
        raise BadInput(f"{schema}.{name} has no key; it cannot be compared chunk by chunk")
    found = {r[0]: r for r in conn.execute(_KEY_INFO, [schema, name, list(key)])}
    missing = [k for k in key if k not in found]
    if missing:
        raise BadInput(f"{schema}.{name}: key column(s) {', '.join(missing)} not found")
    kcols = tuple(
        KeyColumn(k, sql.Identifier(found[k][1], found[k][2]), bool(found[k][3]), found[k][4])
        for k in key
    )
    exprs = exprs or {}
    row = tuple(exprs.get(c, sql.Identifier(c)) for c in columns)
    # ``where`` is the user's own SQL from [sync.tables]; a literal % must not read as a
    # placeholder when the query is executed with parameters
    w = sql.SQL(where.replace("%", "%%")) if isinstance(where, str) else where
    return Side(sql.Identifier(schema, name), kcols, row, w)


def agree_on_order(a: Side, b: Side) -> tuple[Side, Side]:
    """Both sides, switched to ``COLLATE "C"`` when their key collations differ."""
    if [k.collation for k in a.key] == [k.collation for k in b.key]:
        return a, b
    return _with_c(a), _with_c(b)


def _with_c(s: Side) -> Side:
    return Side(s.table, s.key, s.row, s.where, collate_c=True)


def canonical_settings(conn: psycopg.Connection[Any]) -> None:
    """Pin the settings the row text depends on, for the current transaction only."""
    names = list(_SETTINGS)
    conn.execute(
        sql.SQL("SELECT {}").format(
            sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in names)
        ),
        [v for n in names for v in (n, _SETTINGS[n])],
    )


def boundaries(conn: psycopg.Connection[Any], s: Side, rng: KeyRange, step: int) -> list[Key]:
    """Every ``step``-th key of ``rng`` in key order (the first keys of the 2nd, 3rd... chunk)."""
    pred, params = s.predicate(rng)
    names = [sql.Identifier(k.name) for k in s.key]
    q = sql.SQL(
        "SELECT {names} FROM (SELECT {names}, row_number() OVER (ORDER BY {order}) AS "
        "pgferry_rn FROM {table} WHERE {pred}) s WHERE s.pgferry_rn %% %s = 1 AND "
        "s.pgferry_rn > 1 ORDER BY s.pgferry_rn"
    ).format(
        names=sql.SQL(", ").join(names),
        order=sql.SQL(", ").join(s.key_exprs()),
        table=s.table,
        pred=pred,
    )
    return [tuple(r) for r in conn.execute(q, [*params, step])]


def bucket_sums(
    conn: psycopg.Connection[Any], s: Side, rng: KeyRange, bounds: Sequence[Key]
) -> list[Sums]:
    """The :class:`Sums` of each of the ``len(bounds) + 1`` pieces of ``rng`` cut at ``bounds``."""
    pred, params = s.predicate(rng)
    out = [Sums() for _ in range(len(bounds) + 1)]
    if bounds:
        arr, aparams = s.thresholds(bounds)
        q = sql.SQL(
            "SELECT width_bucket({key}, {arr}), count(*), sum({h}) FROM {table} "
            "WHERE {pred} GROUP BY 1"
        ).format(key=s.key_tuple(), arr=arr, h=s.row_hash(), table=s.table, pred=pred)
        rows = conn.execute(q, [*aparams, *params]).fetchall()
    else:
        q = sql.SQL("SELECT 0, count(*), sum({h}) FROM {table} WHERE {pred}").format(
            h=s.row_hash(), table=s.table, pred=pred
        )
        rows = conn.execute(q, params).fetchall()
    for b, n, total in rows:
        if n:
            out[b] = Sums(int(n), int(total or 0))
    return out


def row_hashes(conn: psycopg.Connection[Any], s: Side, rng: KeyRange) -> list[tuple[Key, int]]:
    """``(key, row hash)`` of every row in ``rng``, in key order."""
    pred, params = s.predicate(rng)
    nk = len(s.key)
    q = sql.SQL("SELECT {names}, {h} FROM {table} WHERE {pred} ORDER BY {order}").format(
        names=sql.SQL(", ").join(sql.Identifier(k.name) for k in s.key),
        h=s.row_hash(),
        table=s.table,
        pred=pred,
        order=sql.SQL(", ").join(s.key_exprs()),
    )
    return [(tuple(r[:nk]), r[nk]) for r in conn.execute(q, params)]


def first_keys(conn: psycopg.Connection[Any], s: Side, rng: KeyRange, limit: int) -> list[Key]:
    """The first ``limit`` keys of ``rng`` in key order."""
    if limit <= 0:
        return []
    pred, params = s.predicate(rng)
    q = sql.SQL("SELECT {names} FROM {table} WHERE {pred} ORDER BY {order} LIMIT %s").format(
        names=sql.SQL(", ").join(sql.Identifier(k.name) for k in s.key),
        table=s.table,
        pred=pred,
        order=sql.SQL(", ").join(s.key_exprs()),
    )
    return [tuple(r) for r in conn.execute(q, [*params, limit])]

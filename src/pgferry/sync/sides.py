"""One table on one server, as the comparison sees it: key columns, row hash, predicates.

Contract: :func:`side` inspects a table on a connection and returns a
:class:`Side`, which composes the expressions every comparison query uses
(all identifiers through :class:`psycopg.sql.Identifier`, all values as
parameters); :func:`agree` makes the two sides of a comparison hash and
order alike. Reading the catalog is all that happens on the connection.

Row hash (:meth:`Side.row_hash`, built by :mod:`pgferry.sync.rowhash`): one
``hash_record_extended`` call per row over the synced columns (key columns
included), each hashed by its type's own 64-bit hash function inside the
server, so almost no value is formatted as text and float or date output
settings cannot matter. A column is hashed as ``col::text`` on both sides
instead when its type has no hash function (json, point, composite, range),
hashes an OID (enums: the same label has another OID in another database) or
calls values equal that are not identical (citext folds case; interval counts a
month as 30 days; and arrays of those), when the two sides declare different types or hash the
type with different functions (renamed functions that give the same values
count as the same), or when a select expression replaces it (a masking
rule); for those, :data:`CANONICAL` holds the text output settings (UTC, ISO
dates, shortest exact floats, hex bytea) the comparison pins with
:func:`settings`. Names containing ``%`` are refused (psycopg would read them
as placeholders).

Hash versions (:attr:`Side.hash_version`): version 2 is the ``hash_record_extended``
hash above, which PostgreSQL 13 lacks (it is new in 14). When either side of a
comparison runs 13, :func:`agree` makes *both* sides use version 3: the per-column
hash of earlier releases (version 1, :func:`rowhash.row_hash_v1`; numeric's classes
without the infinities 13 does not have) with arrays of 64-bit types and of numeric
hashed as text, so the two sides always hash with one function. So it does for a
table whose every column version 3 hashes by one call of its type's own function
(:func:`rowhash.direct_v3`): a call per column costs less than version 2's ``ROW(...)``.

Combining row hashes (:meth:`Side.xor_agg`, :meth:`Side.hashed`): ``bit_xor``, or
on PostgreSQL 13, which lacks it, the same XOR built from 32 ``sum`` aggregates of two
bits each (one per 32-bit lane of a ``bigint``, so a lane cannot carry into the other
below 2^32 rows): the same value, so a 13 side compares with a newer one.

Key hash (:meth:`Side.key_hash`): the key columns hashed alike, text in
``COLLATE "C"``, so that a row's key hash is the same on both sides; its low
bits spread a range's rows over sub-buckets.

Key order: keys are compared as row values ``(k1, k2) >= (...)`` in the
columns' collation when both sides order the key columns alike (the same
collations by what orders them, not by name, and the same enum label order:
:attr:`pgferry.sync.columns.ColumnInfo.order`), else in ``COLLATE "C"`` on both
sides, an enum as its label's text, so that a boundary key cuts both tables at
the same place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pgferry.errors import BadInput
from pgferry.sync import rowhash
from pgferry.sync.chunks import Key, KeyRange
from pgferry.sync.columns import ColumnInfo, canon, read_columns

#: the first server version with ``hash_record_extended`` (the row hash of version 2)
HASH_RECORD_SINCE = 140000

#: the settings the text form of values depends on (for columns hashed as text)
CANONICAL = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
}

#: a ``pg_class c`` row of table ``%(t)s`` or of one of its partitions (a catalog read of a
#: table counts its partitions: a partitioned table holds no rows itself)
TABLE_OR_PARTITION = sql.SQL("""(c.oid = %(t)s::regclass
   OR c.oid IN (SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = %(t)s::regclass))""")

_ESTIMATE = sql.SQL("""
SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint, bool_and(c.reltuples >= 0)
FROM pg_class c
WHERE {}
""").format(TABLE_OR_PARTITION)


@dataclass(frozen=True)
class Side:
    """The queries of the comparison for one table on one server."""

    table: sql.Identifier
    key: tuple[ColumnInfo, ...]
    columns: tuple[ColumnInfo, ...]
    exprs: Mapping[str, sql.Composable] = field(default_factory=dict)
    where: sql.Composable | None = None
    #: compare keys in COLLATE "C", an enum as its label's text (the two sides' key
    #: collations, or enum label orders, differ)
    collate_c: bool = False
    #: columns hashed as text (see :mod:`pgferry.sync.rowhash`)
    as_text: frozenset[str] = frozenset()
    #: the same for the row hash of earlier releases (:func:`rowhash.row_hash_v1`)
    as_text_v1: frozenset[str] = frozenset()
    #: the server's version number (``server_version_num``): PostgreSQL 13 has no bit_xor
    #: and no hash_record_extended
    server_version: int = 180000
    #: the row hash this comparison uses (2; or 3 when either side runs PostgreSQL 13, or
    #: when every column is hashed by its own function in it; set by :func:`agree`)
    hash_version: int = 2
    #: both servers have ``hash_record_extended``: version 2 can be computed on both (a
    #: conflicts base made in it is read in it; set by :func:`agree`)
    record_hash: bool = True
    #: bigint columns whose values all fold to distinct 32-bit halves, hashed as they are
    #: in a comparison that keeps no hash (set by :func:`pgferry.sync.small_ints.plain_int8`)
    plain_int8: frozenset[str] = frozenset()
    #: collatable columns hashed in ``COLLATE "C"``: their collation is nondeterministic on
    #: either side (set by :func:`agree`)
    bytewise: frozenset[str] = frozenset()

    # -- expressions -------------------------------------------------------------------------
    def collate(self, k: ColumnInfo, expr: sql.Composable) -> sql.Composable:
        """``expr`` (a value of key column ``k``) in the comparison's collation."""
        if self.collate_c and k.labels:
            return sql.SQL("CAST({} AS text) COLLATE {}").format(expr, sql.Identifier("C"))
        if self.collate_c and k.collatable:
            return sql.SQL("{} COLLATE {}").format(expr, sql.Identifier("C"))
        return expr

    def key_type(self, k: ColumnInfo) -> sql.Composable:
        """The type key values of ``k`` are ordered as: an enum compared by its text is
        ``text`` (a label the other side lacks is never cast to its enum)."""
        return sql.SQL("text") if self.collate_c and k.labels else k.type

    def key_names(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(k.name) for k in self.key)

    def key_values(self, alias: str | None = None) -> sql.Composable:
        """The key columns as a select list that reads them into Python: a column psycopg
        has no binary loader for as its text (``::text``, which a parameter cast back to
        the type reads alike), under a name of its own, so that an ``ORDER BY`` of the
        bare column still orders by the column, not by the text. ``alias``: the columns
        are those of a subquery of that name."""
        out: list[sql.Composable] = []
        for i, k in enumerate(self.key):
            col: sql.Composable = sql.Identifier(alias, k.name) if alias else sql.Identifier(k.name)
            if not k.loadable:
                col = sql.SQL("({})::text AS {}").format(col, sql.Identifier(f"pgferry_key{i}"))
            out.append(col)
        return sql.SQL(", ").join(out)

    def key_exprs(self) -> list[sql.Composable]:
        return [self.collate(k, sql.Identifier(k.name)) for k in self.key]

    def key_tuple(self) -> sql.Composable:
        exprs = self.key_exprs()
        if len(exprs) == 1:
            return exprs[0]
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(exprs))

    def _param_tuple(self, key: Sequence[ColumnInfo] | None = None) -> sql.Composable:
        # CAST, not ::, which binds tighter than a minus sign: a predicate bound on the
        # client (COPY takes no parameters) would read -2147483648::int4 as -(2147483648)
        ps = [
            self.collate(k, sql.SQL("CAST(%s AS {})").format(self.key_type(k)))
            for k in (self.key if key is None else key)
        ]
        return ps[0] if len(ps) == 1 else sql.SQL("ROW({})").format(sql.SQL(", ").join(ps))

    def xor_agg(self, value: sql.Composable) -> sql.Composable:
        """The aggregate XOR of the ``bigint`` ``value`` (NULL over no rows).

        ``bit_xor``; on PostgreSQL 13 each bit's parity from ``sum`` aggregates that
        count bits ``i`` and ``i + 32`` at once in the two 32-bit lanes of a bigint
        (exact below 2^32 rows; ``sum(bigint)`` is numeric, ``div``/``mod`` exact).
        ``value`` is repeated in each sum: pass a column, not an expression (see
        :meth:`hashed`).
        """
        if self.server_version >= 140000:
            return sql.SQL("bit_xor({})").format(value)
        bits: list[sql.Composable] = []
        for i in range(32):
            lanes = sql.SQL("sum(({v} >> {i}) & 4294967297)").format(v=value, i=sql.Literal(i))
            bits.append(sql.SQL("(mod({s}, 2)::int8 << {i})").format(s=lanes, i=sql.Literal(i)))
            bits.append(
                sql.SQL("(mod(div({s}, 4294967296), 2)::int8 << {j})").format(
                    s=lanes, j=sql.Literal(i + 32)
                )
            )
        return sql.SQL("({})").format(sql.SQL(" | ").join(bits))

    def hashed(self) -> tuple[sql.Composable, sql.Composable]:
        """(what follows the table in a FROM clause, the XOR of the row hashes over a group).

        ``("", bit_xor(row_hash))``; on PostgreSQL 13 the row hash is computed once per
        row in a ``LATERAL`` subquery (``OFFSET 0`` keeps the planner from copying the
        expression into each of :meth:`xor_agg`'s sums) and combined from there.
        """
        if self.server_version >= 140000:
            return sql.SQL(""), self.xor_agg(self.row_hash())
        lateral = sql.SQL("CROSS JOIN LATERAL (SELECT {} AS pgferry_h OFFSET 0) AS pgferry_l")
        return (lateral.format(self.row_hash()), self.xor_agg(sql.SQL("pgferry_l.pgferry_h")))

    def row_hash(self, version: int | None = None) -> sql.Composable:
        """The 64-bit hash of a row's synced columns (:mod:`pgferry.sync.rowhash`).

        ``version``: 1, 2 or 3; :attr:`hash_version` (the comparison's) when None.
        """
        version = version or self.hash_version
        if version == 2:
            return rowhash.row_hash(self)
        return rowhash.row_hash_v1(self, exact=version == 3)

    def key_row_hash(self, version: int | None = None) -> sql.Composable:
        """An exact 64-bit hash of the key alone: :meth:`row_hash` over the key columns."""
        return replace(self, columns=self.key).row_hash(version)

    def key_hash(self) -> sql.Composable:
        """A 64-bit hash of a row's key, equal on both sides (:func:`rowhash.key_hash`)."""
        return rowhash.key_hash(self)

    def predicate(self, rng: KeyRange) -> tuple[sql.Composable, list[Any]]:
        """``WHERE`` clause text for ``rng`` (and the table's ``where``) and its parameters."""
        parts: list[sql.Composable] = []
        params: list[Any] = []
        # with a composite key, the bounds of its first column too: implied by the row
        # comparison, they let the planner see that a range is a small part of the table (a
        # row comparison alone is estimated at a third of it: a whole scan per range)
        for bound, whole, first in ((rng.lo, ">=", ">="), (rng.hi, "<", "<=")):
            if bound is None:
                continue
            parts.append(
                sql.SQL("{} {} {}").format(self.key_tuple(), sql.SQL(whole), self._param_tuple())
            )
            params += list(bound)
            if len(self.key) > 1:
                parts.append(
                    sql.SQL("{} {} {}").format(
                        self.key_exprs()[0], sql.SQL(first), self._param_tuple(self.key[:1])
                    )
                )
                params.append(bound[0])
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
            return sql.SQL("%s::{}[]").format(self.key_type(self.key[0])), params
        names = [sql.Identifier(f"a{i}") for i in range(len(self.key))]
        arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(self.key_type(k)) for k in self.key)
        row = sql.SQL(", ").join(self.collate(k, n) for k, n in zip(self.key, names, strict=True))
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
    """The :class:`Side` of ``schema.name`` on ``conn`` (BadInput when a column is missing)."""
    qualname = f"{schema}.{name}"
    if not key:
        raise BadInput(f"{qualname} has no key; it cannot be compared chunk by chunk")
    odd = [n for n in (schema, name, *key, *columns) if "%" in n]
    if odd:
        # psycopg reads % in the text of a query with parameters as a placeholder, quoted
        # identifiers included; refuse clearly rather than fail with a driver message
        raise BadInput(
            f"{qualname}: verify cannot compare names containing '%' "
            f"({', '.join(odd)}); rename them or leave the table out"
        )
    wanted = list(dict.fromkeys([*key, *columns]))
    found = read_columns(conn, schema, name, wanted)
    missing = [c for c in wanted if c not in found]
    if missing:
        raise BadInput(f"{qualname}: column(s) {', '.join(missing)} not found")
    # ``where`` is the user's own SQL from [sync.tables]; a literal % must not read as a
    # placeholder when the query is executed with parameters
    w = sql.SQL(where.replace("%", "%%")) if isinstance(where, str) else where
    return Side(
        sql.Identifier(schema, name),
        tuple(found[k] for k in key),
        tuple(found[c] for c in columns),
        dict(exprs or {}),
        w,
        server_version=conn.info.server_version,
    )


def agree(a: Side, b: Side) -> tuple[Side, Side]:
    """Both sides made comparable: the same key order and the same hashing per column.

    A column is hashed as text on both sides when either side cannot hash its
    type, the declared types differ, the hash functions differ (other server
    versions), or either side replaces it by an expression; keys compare in
    ``COLLATE "C"`` when the key collations (or enum label orders) differ. A column
    whose collation is nondeterministic on either side is hashed in ``COLLATE "C"``
    (:attr:`Side.bytewise`). (The row hash of earlier releases, which also needed hash
    functions SQL can call:
    :attr:`Side.as_text_v1`.) Both use version 3 of the row hash (version 1 without
    its blind spots) when either runs PostgreSQL 13, which has no
    ``hash_record_extended``, or when every column is hashed by its own function in
    version 3 (:func:`rowhash.direct_v3`).
    """
    bcols = {c.name: c for c in (*b.key, *b.columns)}

    def differ(c: ColumnInfo, v1: bool) -> bool:
        o = bcols[c.name]
        return (
            not (c.hashable and o.hashable and (not v1 or (c.callable and o.callable)))
            or c.type_name != o.type_name
            or canon(c.hash_fn) != canon(o.hash_fn)
            or c.name in a.exprs
            or c.name in b.exprs
        )

    every = (*a.key, *a.columns)
    text = frozenset(c.name for c in every if differ(c, False))
    text_v1 = frozenset(c.name for c in every if differ(c, True))
    collate_c = [k.order for k in a.key] != [k.order for k in b.key]
    record_hash = min(a.server_version, b.server_version) >= HASH_RECORD_SINCE
    # version 3 where a 13 side has no hash_record_extended, and where every column is
    # hashed by its own function in it (cheaper than version 2's ROW(...), rowhash.direct_v3)
    version = 3 if not record_hash or all(rowhash.direct_v3(c, text, text_v1) for c in every) else 2
    # a nondeterministic collation hashes by its sort key (and 'a' = 'A' under a
    # case-insensitive one): such columns are hashed byte for byte on both sides
    bytewise = frozenset(
        c.name
        for c in every
        if (c.collatable or c.name in text)
        and not (c.deterministic and bcols[c.name].deterministic)
    )

    def agreed(s: Side) -> Side:
        return replace(
            s,
            as_text=text,
            as_text_v1=text_v1,
            collate_c=collate_c,
            hash_version=version,
            record_hash=record_hash,
            bytewise=bytewise,
        )

    return agreed(a), agreed(b)


def estimate_rows(conn: psycopg.Connection[Any], s: Side) -> int | None:
    """The planner's row estimate (partitions summed); None when never analyzed."""
    row = conn.execute(_ESTIMATE, {"t": s.table.as_string(conn)}).fetchone()
    if row is None or not row[1]:
        return None
    return int(row[0])


@contextmanager
def settings(conn: psycopg.Connection[Any], **values: str) -> Iterator[None]:
    """``values`` (setting -> value) for the block, transaction-local, then restored.

    Nothing is restored when the transaction failed inside the block (the
    error propagates, and the transaction's end drops the settings anyway).
    """
    names = list(values)
    if not names:
        yield
        return
    sel = sql.SQL(", ").join(sql.SQL("current_setting(%s)") for _ in names)
    row = conn.execute(sql.SQL("SELECT {}").format(sel), names).fetchone()
    saved = dict(zip(names, row or (), strict=True))
    setter = sql.SQL("SELECT {}").format(
        sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in names)
    )
    conn.execute(setter, [v for n in names for v in (n, values[n])])
    try:
        yield
    finally:
        if conn.info.transaction_status == TransactionStatus.INTRANS:
            conn.execute(setter, [v for n in names for v in (n, saved[n])])

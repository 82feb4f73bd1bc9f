"""One table on one server, as the comparison sees it: key columns, row hash, predicates.

Contract: :func:`side` inspects a table on a connection and returns a
:class:`Side`, which composes the expressions every comparison query uses
(all identifiers through :class:`psycopg.sql.Identifier`, all values as
parameters); :func:`agree` makes the two sides of a comparison hash and
order alike. Reading the catalog is all that happens on the connection.

Row hash: each synced column (key columns included) hashed on the server
with its type's own 64-bit hash function seeded with its position (bigint,
timestamps, time and money by exact expressions of their own, as their own
functions fold to 32 bits), the XOR of those hashed once more
(:meth:`Side.row_hash`), so almost no
value is formatted as text and float or date output settings cannot matter. Hash
equality follows the type's equality (``1.5`` and ``1.50`` as numeric are
equal; numeric's sign and NaN/infinity, which its hash function leaves out,
are added). A column is hashed as ``col::text`` on both sides instead when its
type has no hash function (json, point, composite, range), hashes an OID
(enums: the same label has another OID in another database) or folds case
(citext: ``'Alice'`` and ``'alice'`` are equal but not identical), when the two
sides declare different types or hash the type with different functions (another
server version: PostgreSQL 15 hashes bytea through a function SQL cannot call;
renamed functions that give the same values count as the same), or when a
select expression replaces it (a
masking rule); for those, :data:`CANONICAL` holds the text output settings
(UTC, ISO dates, shortest exact floats, hex bytea) the comparison pins with
:func:`settings`. Names containing ``%`` are refused (psycopg would read
them as placeholders).

Combining row hashes (:meth:`Side.xor_agg`, :meth:`Side.hashed`): ``bit_xor``, or
on PostgreSQL 13, which lacks it, the same XOR built from 32 ``sum`` aggregates of two
bits each (one per 32-bit lane of a ``bigint``, so a lane cannot carry into the other
below 2^32 rows): the same value, so a 13 side compares with a newer one.

Key hash (:meth:`Side.key_hash`): the key columns hashed alike, text in
``COLLATE "C"``, so that a row's key hash is the same on both sides; its low
bits spread a range's rows over sub-buckets.

Key order: keys are compared as row values ``(k1, k2) >= (...)`` in the
columns' collation when both sides use the same collations for the key
columns, else in ``COLLATE "C"`` on both sides, so that a boundary key cuts
both tables at the same place.
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
from pgferry.sync.chunks import Key, KeyRange

#: the settings the text form of values depends on (for columns hashed as text)
CANONICAL = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
}

_COLUMNS = """
SELECT a.attname, tn.nspname, t.typname, a.attcollation <> 0,
       CASE WHEN a.attcollation = 0 THEN ''
            WHEN co.collname = 'default' THEN (
                SELECT 'default:' || d.datcollate || ':' || coalesce(
                    to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale', '')
                FROM pg_database d WHERE d.datname = current_database())
            ELSE co.collname END,
       -- hashable: the (domain's base) type, or an array's element type, is an enum or has
       -- a default hash operator class, directly or through a binary-coercible cast
       bt.typtype = 'e'
       OR (bt.typtype = 'b' AND bt.typcategory <> 'A' AND EXISTS (
           SELECT 1 FROM pg_opclass o JOIN pg_am m ON m.oid = o.opcmethod
           WHERE m.amname = 'hash' AND o.opcdefault AND (o.opcintype = bt.oid OR
                 o.opcintype IN (SELECT casttarget FROM pg_cast
                                 WHERE castsource = bt.oid AND castmethod = 'b'))))
       OR (bt.typcategory = 'A' AND EXISTS (
           SELECT 1 FROM pg_type et JOIN pg_opclass o ON o.opcintype = et.oid
           JOIN pg_am m ON m.oid = o.opcmethod
           WHERE et.oid = bt.typelem AND et.typtype = 'b' AND m.amname = 'hash'
             AND o.opcdefault)),
       -- the type's 64-bit hash function (support function 2 of its default hash opclass)
       (SELECT pn.nspname || '.' || pr.proname
        FROM pg_opclass o
        JOIN pg_am m ON m.oid = o.opcmethod AND m.amname = 'hash'
        JOIN pg_amproc p ON p.amprocfamily = o.opcfamily AND p.amprocnum = 2
             AND p.amproclefttype = o.opcintype
        JOIN pg_proc pr ON pr.oid = p.amproc
        JOIN pg_namespace pn ON pn.oid = pr.pronamespace
        WHERE o.opcdefault
          -- callable from SQL with the value: PostgreSQL 15 hashes date with
          -- hashint4extended(integer), bool with hashcharextended("char") and bytea with
          -- hashvarlenaextended(internal), which SQL cannot call with a date, a bool, a bytea
          AND (pr.proargtypes[0] = bt.oid
               OR pr.proargtypes[0] IN ('anyenum'::regtype, 'anyarray'::regtype,
                                        'anyrange'::regtype,
                                        to_regtype('anymultirange'))  -- none on 13
               OR EXISTS (SELECT 1 FROM pg_cast
                          WHERE castsource = bt.oid AND casttarget = pr.proargtypes[0]))
          AND (o.opcintype = bt.oid
              OR o.opcintype IN (SELECT casttarget FROM pg_cast
                                 WHERE castsource = bt.oid AND castmethod = 'b')
              OR (bt.typtype = 'e' AND o.opcintype = 'anyenum'::regtype)
              OR (bt.typcategory = 'A' AND o.opcintype = 'anyarray'::regtype))
        ORDER BY o.opcintype = bt.oid DESC
        LIMIT 1)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = t.typnamespace
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE n.nspname = %s AND c.relname = %s AND a.attname = ANY(%s)
"""

_ESTIMATE = """
SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint, bool_and(c.reltuples >= 0)
FROM pg_class c
WHERE c.oid = %(t)s::regclass
   OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = %(t)s::regclass)
"""


#: numeric's 64-bit hash function, which ignores the sign (see :meth:`Side.row_hash`)
_NUMERIC_HASH = ("pg_catalog", "hash_numeric_extended")
#: enum hash functions hash the label's OID, which differs between databases
_ENUM_HASH = ("pg_catalog", "hashenumextended")

#: hash functions that fold case ('Alice' and 'alice' as citext share a hash): such columns
#: are hashed as text, so that a sync makes them identical, not merely equal
_FOLDING_HASHES = {"citext_hash_extended"}

#: 64-bit types whose own hash function folds the value to 32 bits (2^32 + 4 and 5 share a
#: hash): hashed by an exact expression of their own instead, with functions every
#: supported server has (PostgreSQL 14-18 give the same values)
_WIDE = {"pg_catalog.int8", "pg_catalog.timestamptz", "pg_catalog.timestamp",
         "pg_catalog.time", "pg_catalog.money"}

#: hash functions that newer servers renamed without changing their values (PostgreSQL 16
#: gave date, bool, xid and cid functions of their own): one name per value
_SAME_HASH = {
    "hashdateextended": "hashint4extended",
    "hashboolextended": "hashcharextended",
    "hashxidextended": "hashint4extended",
    "hashcidextended": "hashint4extended",
}


def _canon(fn: tuple[str, str] | None) -> tuple[str, str] | None:
    return None if fn is None else (fn[0], _SAME_HASH.get(fn[1], fn[1]))


def _wide_hash(type_name: str, e: sql.Composable, seed: sql.Composable) -> sql.Composable:
    """An exact 64-bit hash of a value of a :data:`_WIDE` type (NULL for NULL)."""
    f8 = sql.Identifier("pg_catalog", "hashfloat8extended")
    if type_name == "pg_catalog.int8":
        # the value as the seed: hash_uint32_extended mixes all 64 bits of a seed in
        return sql.SQL("pg_catalog.hashint8extended({s}, {e})").format(e=e, s=seed)
    if type_name == "pg_catalog.time":
        return sql.SQL("{f}(pg_catalog.date_part('epoch', {e}), {s})").format(f=f8, e=e, s=seed)
    if type_name == "pg_catalog.money":
        return sql.SQL("pg_catalog.hashtextextended(({e})::numeric::text, {s})").format(
            e=e, s=seed)
    # timestamps: the epoch in seconds (exact to the microsecond until about 2242) and the
    # microseconds within the minute (always exact) together pin the value down
    return sql.SQL("({f}(pg_catalog.date_part('epoch', {e}), {s}) # "
                   "{f}(pg_catalog.date_part('microseconds', {e}), ({s}) + 1000003))").format(
        f=f8, e=e, s=seed)


@dataclass(frozen=True)
class ColumnInfo:
    """What one side says about one synced column."""

    name: str
    type: sql.Composable  # the type, e.g. "pg_catalog"."int8"
    type_name: str  # "pg_catalog.int8", comparable across servers
    collatable: bool
    collation: str  # "" when not collatable; comparable across servers
    hashable: bool
    #: the type's extended hash function, e.g. ("pg_catalog", "hashint8extended")
    hash_fn: tuple[str, str] | None = None


@dataclass(frozen=True)
class Side:
    """The queries of the comparison for one table on one server."""

    table: sql.Identifier
    key: tuple[ColumnInfo, ...]
    columns: tuple[ColumnInfo, ...]
    exprs: Mapping[str, sql.Composable] = field(default_factory=dict)
    where: sql.Composable | None = None
    #: compare keys in COLLATE "C" (the two sides' key collations differ)
    collate_c: bool = False
    #: columns hashed as text (see the module docstring)
    as_text: frozenset[str] = frozenset()
    #: the server's version number (``server_version_num``): PostgreSQL 13 has no bit_xor
    server_version: int = 180000

    # -- expressions -------------------------------------------------------------------------
    def collate(self, k: ColumnInfo, expr: sql.Composable) -> sql.Composable:
        """``expr`` (a value of key column ``k``) in the comparison's collation."""
        if self.collate_c and k.collatable:
            return sql.SQL("{} COLLATE {}").format(expr, sql.Identifier("C"))
        return expr

    def key_names(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(k.name) for k in self.key)

    def key_exprs(self) -> list[sql.Composable]:
        return [self.collate(k, sql.Identifier(k.name)) for k in self.key]

    def key_tuple(self) -> sql.Composable:
        exprs = self.key_exprs()
        if len(exprs) == 1:
            return exprs[0]
        return sql.SQL("ROW({})").format(sql.SQL(", ").join(exprs))

    def _param_tuple(self) -> sql.Composable:
        ps = [self.collate(k, sql.SQL("%s::{}").format(k.type)) for k in self.key]
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
            bits.append(sql.SQL("(mod(div({s}, 4294967296), 2)::int8 << {j})").format(
                s=lanes, j=sql.Literal(i + 32)))
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
        return (lateral.format(self.row_hash()),
                self.xor_agg(sql.SQL("pgferry_l.pgferry_h")))

    def row_hash(self) -> sql.Composable:
        """The 64-bit hash of a row's synced columns (``bigint``).

        Each column goes through its type's own 64-bit hash function seeded with
        its position (NULL counts as the position itself); the XOR of those is
        hashed once more (given as the *seed* of ``hashint8extended``, whose
        ``hash_uint32_extended`` mixes all 64 bits of a seed in), so the row hash
        is not linear in the columns (two rows trading a value change their
        chunk's XOR) nor short of bits (a double would keep 53: numeric's special
        values, whose hash is the seed itself, then differ in the low bits only). Often cheaper than
        ``hash_record_extended(ROW(...))``, which builds a row value first (a
        quarter on a wide jsonb table, even on a narrow one). A final
        ``hashint8extended`` would fold the XOR to 32 bits first: a million rows
        then share dozens of hashes (tested against). Every function used exists
        on PostgreSQL 13 to 18 and gives the same value there, so two servers of
        different versions compare.
        """
        parts: list[sql.Composable] = []
        for i, c in enumerate(self.columns, 1):
            e = self.exprs.get(c.name, sql.Identifier(c.name))
            if c.name in self.as_text or not c.hashable or c.hash_fn is None:
                fn = sql.Identifier("pg_catalog", "hashtextextended")
                e = sql.SQL("({})::text").format(e)
            else:
                fn = sql.Identifier(*c.hash_fn)
            seed: sql.Composable = sql.SQL("{}::int8").format(sql.Literal(i))
            if c.type_name in _WIDE and c.name not in self.as_text and c.hashable:
                parts.append(sql.SQL("coalesce({}, {})").format(
                    _wide_hash(c.type_name, e, seed), sql.Literal(i)))
                continue
            if c.hash_fn == _NUMERIC_HASH and c.name not in self.as_text:
                # numeric's hash leaves out the sign (3 and -3 share it) and gives NaN and
                # both infinities one hash: the class goes into the seed
                # (PostgreSQL 13 has NaN but no numeric infinity: the same classes there)
                seed = sql.SQL(
                    "{i}::int8 * 4 + CASE WHEN {e} < 0 THEN 1 WHEN {e} < 'Infinity' THEN 0 "
                    "WHEN {e} = 'Infinity' THEN 2 ELSE 3 END" if self.server_version >= 140000
                    else "{i}::int8 * 4 + CASE WHEN {e} < 0 THEN 1 WHEN {e} = 'NaN' THEN 3 "
                    "ELSE 0 END"
                ).format(i=sql.Literal(i), e=e)
            parts.append(sql.SQL("coalesce({}({}, {}), {})").format(fn, e, seed, sql.Literal(i)))
        return sql.SQL("pg_catalog.hashint8extended(0, {})").format(sql.SQL(" # ").join(parts))

    def key_row_hash(self) -> sql.Composable:
        """An exact 64-bit hash of the key alone: :meth:`row_hash` over the key columns."""
        return replace(self, columns=self.key).row_hash()

    def key_hash(self) -> sql.Composable:
        """A 64-bit hash of a row's key (``bigint``), equal on both sides for equal keys.

        Each key column through its type's 64-bit hash function seeded with its
        position (as text when the row hash takes it as text), XORed; collatable
        values in ``COLLATE "C"``, so the collation (which may differ between the
        sides) cannot change it. Only its low bits are used, as a sub-bucket.
        """
        parts: list[sql.Composable] = []
        c_collation = sql.Identifier("C")
        for i, k in enumerate(self.key, 1):
            e: sql.Composable = sql.Identifier(k.name)
            if k.name in self.as_text or not k.hashable or k.hash_fn is None:
                fn = sql.Identifier("pg_catalog", "hashtextextended")
                e = sql.SQL("({})::text COLLATE {}").format(e, c_collation)
            else:
                fn = sql.Identifier(*k.hash_fn)
                if k.collatable:
                    e = sql.SQL("{} COLLATE {}").format(e, c_collation)
            parts.append(
                sql.SQL("coalesce({}({}, {}::int8), {})").format(
                    fn, e, sql.Literal(i), sql.Literal(i)
                )
            )
        return sql.SQL("({})").format(sql.SQL(" # ").join(parts))

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
            return sql.SQL("%s::{}[]").format(self.key[0].type), params
        names = [sql.Identifier(f"a{i}") for i in range(len(self.key))]
        arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(k.type) for k in self.key)
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
    found = {r[0]: _column(r) for r in conn.execute(_COLUMNS, [schema, name, wanted])}
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


def _column(r: Sequence[Any]) -> ColumnInfo:
    """A :data:`_COLUMNS` row as a :class:`ColumnInfo` (see the module docstring on hashing)."""
    fn: tuple[str, str] | None = None
    if r[6]:
        fschema, _, fname = r[6].partition(".")
        fn = (fschema, fname)
    hashable = bool(r[5]) and fn is not None and fn != _ENUM_HASH and fn[1] not in _FOLDING_HASHES
    return ColumnInfo(r[0], sql.Identifier(r[1], r[2]), f"{r[1]}.{r[2]}", bool(r[3]), r[4],
                      hashable, fn)


def agree(a: Side, b: Side) -> tuple[Side, Side]:
    """Both sides made comparable: the same key order and the same hashing per column.

    A column is hashed as text on both sides when either side cannot hash its
    type, the declared types differ, the hash functions differ (other server
    versions), or either side replaces it by an
    expression; keys compare in ``COLLATE "C"`` when the key collations differ.
    """
    bcols = {c.name: c for c in (*b.key, *b.columns)}
    text = frozenset(
        c.name
        for c in (*a.key, *a.columns)
        if not (c.hashable and bcols[c.name].hashable)
        or c.type_name != bcols[c.name].type_name
        or _canon(c.hash_fn) != _canon(bcols[c.name].hash_fn)
        or c.name in a.exprs
        or c.name in b.exprs
    )
    collate_c = [k.collation for k in a.key] != [k.collation for k in b.key]
    return (
        replace(a, as_text=text, collate_c=collate_c),
        replace(b, as_text=text, collate_c=collate_c),
    )


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

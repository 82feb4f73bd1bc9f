"""The 64-bit hashes of rows and keys the comparison computes on each server.

Contract: every function takes a :class:`~pgferry.sync.sides.Side` (both sides
made to agree by :func:`pgferry.sync.sides.agree`) and returns a SQL expression
(``bigint``) over a row of its table; nothing here talks to a server. Equal
rows hash alike on both servers, whatever their versions (PostgreSQL 14 to
18): every function used exists on all of them and gives the same value there
(tested against a PostgreSQL 15 server). PostgreSQL 13 has no
``hash_record_extended``: a comparison with a 13 side uses version 3 on both
sides (:attr:`Side.hash_version`, set by :func:`pgferry.sync.sides.agree`).

:func:`row_hash` (version 2, the one a comparison uses unless :func:`direct_v3`
holds for every column, or a side runs PostgreSQL 13) is one C-level
call per row: ``hash_record_extended(ROW(...))`` over the synced columns, each
hashed by its type's own 64-bit hash function inside the server, then
``hashint8extended(0, <that>)`` as a final mix (its ``hash_uint32_extended``
mixes all 64 bits of a seed in), so that the per-range XOR of row hashes is not
linear in the columns. Where a type's own hash would lose information, the
row carries a value that does not:

- enums are hashed by label (``::text``): their hash function hashes the
  label's OID, which differs between databases; so are citext (its hash folds
  case) and interval ('1 mon' and '30 days' are equal), arrays of either, json,
  composite, range and other types without a default hash operator
  class, and any column a masking rule replaces, or whose type or hash function
  differs between the two sides;
- the 64-bit types whose hash folds to 32 bits (``bigint``, ``timestamp``,
  ``timestamptz``, ``time``, ``pg_lsn``, ``xid8``; 2^32 + 4 and 5 would share a
  hash) are hashed by their binary send form (``int8send(x)``), exact; arrays of
  them by ``array_send``; a verify hashes a ``bigint`` as it is when every value on
  both sides lies where the fold changes nothing (:mod:`pgferry.sync.small_ints`);
- numeric's hash leaves out the sign (3 and -3 share it) and gives NaN and both
  infinities one hash, the hash ROW(...) gives NULL: a small class number
  (negative, finite, +Infinity, NaN, NULL) rides along; arrays of numeric are
  hashed as text;
- floats' hash gives 0 and -0 the hash of NULL: ``x IS NULL`` rides along; arrays of
  floats, whose 0 hashes as a NULL element, are hashed as text;
- an array's hash covers its elements, not its shape: ``array_dims`` rides along, so
  '{{1,2}}', '{1,2}' and '[0:1]={1,2}' differ (arrays hashed by ``array_send`` or as
  text carry it already);
- a nondeterministic collation (ICU, e.g. case-insensitive) hashes a text by its sort
  key, which differs from the same bytes' hash under any other collation: a column with
  one on either side is hashed in ``COLLATE "C"`` (:attr:`Side.bytewise`; version 3
  too), so equal bytes hash alike and 'Alice' differs from 'alice', as a citext does.

Hash equality follows the type's equality (``1.5`` and ``1.50`` are equal
numerics), as the sync's ``IS DISTINCT FROM`` does, so a difference the sync
would not write is never reported.

:func:`row_hash_v1` is the hash of earlier releases (version 1, a per-column
XOR, kept verbatim): a conflicts base written with it is still read with it
once, then rebuilt in the comparison's version (:mod:`pgferry.sync.conflicts`).
Version 3 is version 1 without its blind spots (arrays of 64-bit types and of
numeric hashed as text; a NULL stands for -i, not for the seed i that float 0,
time 00:00 and numeric NaN hash to), the hash of every comparison with a PostgreSQL 13 side,
which has no ``hash_record_extended``, and of a table whose every column it hashes by
one call of the column type's own function (:func:`direct_v3`): there it costs less.
:func:`key_hash` spreads rows over sub-buckets by key, alike on both sides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg import sql

if TYPE_CHECKING:
    from pgferry.sync.columns import ColumnInfo
    from pgferry.sync.sides import Side

#: numeric's 64-bit hash function, which ignores the sign
NUMERIC_HASH = ("pg_catalog", "hash_numeric_extended")

#: 64-bit types whose hash folds to 32 bits, and the send function that gives their exact
#: bytes (the same bytes on every server version)
SEND = {
    "pg_catalog.int8": "int8send",
    "pg_catalog.timestamptz": "timestamptz_send",
    "pg_catalog.timestamp": "timestamp_send",
    "pg_catalog.time": "time_send",
    "pg_catalog.pg_lsn": "pg_lsn_send",
    "pg_catalog.xid8": "xid8send",
}

#: elements of one ROW(...) at most (a row value holds at most 1,664 columns)
_ROW_MAX = 1000

#: v1: 64-bit types hashed by an exact expression of their own
_WIDE = {
    "pg_catalog.int8",
    "pg_catalog.timestamptz",
    "pg_catalog.timestamp",
    "pg_catalog.time",
    "pg_catalog.money",
}


#: hash functions that give a non-NULL value the hash of NULL inside ROW(...) (0 for seed
#: 0): floats' for 0 and -0, numeric's for NaN and both infinities
FLOAT_HASHES = {("pg_catalog", "hashfloat4extended"), ("pg_catalog", "hashfloat8extended")}


#: v3: base types hashed by parts of their value (``date_part``) or as text, which costs more
#: per value than their place in version 2's ``ROW(...)``
_BY_PARTS = _WIDE - {"pg_catalog.int8"}


def direct_v3(c: ColumnInfo, as_text: frozenset[str], as_text_v1: frozenset[str]) -> bool:
    """Does version 3 hash column ``c`` by one call of its type's own hash function (or as
    text where version 2 takes it as text too)? A table of such columns only is hashed in
    version 3 (:func:`pgferry.sync.sides.agree`): a function call per column costs less
    than version 2's ``ROW(...)`` (1M rows of a bigint and an int, text, date, uuid, bool
    or float8: 0.07 to 0.09 s a scan against 0.18 to 0.21 s; docs/benchmarks.md).
    """
    if c.name in as_text:
        return True  # text in both versions (so is every column without a hash function)
    if c.name in as_text_v1:
        return False  # text in version 3 only (a hash function SQL cannot call)
    if c.element_name in SEND or c.element_name in _TEXT_ELEMENTS:
        return False  # an array version 3 hashes as text
    return c.base_name not in _BY_PARTS


def _numeric_class(e: sql.Composable) -> sql.Composable:
    return sql.SQL(
        "CASE WHEN {e} IS NULL THEN 4 WHEN {e} < 0 THEN 1 WHEN {e} < 'Infinity' THEN 0 "
        "WHEN {e} = 'Infinity' THEN 2 ELSE 3 END"
    ).format(e=e)


def _bytes(s: Side, c: ColumnInfo, e: sql.Composable) -> sql.Composable:
    """``e`` (a collatable value of ``c``) in ``COLLATE "C"`` when ``c`` is hashed byte for byte."""
    if c.name in s.bytewise:
        return sql.SQL("{} COLLATE {}").format(e, sql.Identifier("C"))
    return e


#: array element types hashed as text: numeric (its hash leaves out the sign), floats (0
#: hashes as a NULL element does)
_TEXT_ELEMENTS = {"pg_catalog.numeric", "pg_catalog.float4", "pg_catalog.float8"}


def _dims(e: sql.Composable) -> sql.Composable:
    """An array's dimensions ('[1:2]'), which its hash leaves out ('{{1,2}}', '{1,2}' and
    '[0:1]={1,2}' hash alike)."""
    # in COLLATE "C": the text result takes the array's collation, which may be
    # nondeterministic (and then hashes by its sort key)
    return sql.SQL("pg_catalog.array_dims({}) COLLATE {}").format(e, sql.Identifier("C"))


def _elements(s: Side, c: ColumnInfo) -> list[sql.Composable]:
    """What column ``c`` contributes to the ROW(...) that :func:`row_hash` hashes."""
    e = s.exprs.get(c.name, sql.Identifier(c.name))
    if c.name in s.as_text or not c.hashable:
        return [_bytes(s, c, sql.SQL("({})::text").format(e))]
    if c.name in s.plain_int8:  # every value in a range the fold leaves alone
        return [e]
    if c.base_name in SEND:
        return [sql.SQL("{}({})").format(sql.Identifier("pg_catalog", SEND[c.base_name]), e)]
    if c.element_name in SEND:
        return [sql.SQL("pg_catalog.array_send({})").format(e)]
    if c.element_name in _TEXT_ELEMENTS:
        return [sql.SQL("({})::text").format(e)]
    if c.hash_fn == NUMERIC_HASH:
        return [e, _numeric_class(e)]
    if c.hash_fn in FLOAT_HASHES:
        return [e, sql.SQL("({}) IS NULL").format(e)]
    if c.element_name is not None:
        return [_bytes(s, c, e), _dims(e)]
    return [_bytes(s, c, e)]


def _record(elements: list[sql.Composable]) -> sql.Composable:
    if len(elements) > _ROW_MAX:  # nested row values, each hashed by its elements
        elements = [_record(elements[i : i + _ROW_MAX]) for i in range(0, len(elements), _ROW_MAX)]
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(elements))


def row_hash(s: Side) -> sql.Composable:
    """The 64-bit hash of a row's synced columns (``bigint``; see the module docstring)."""
    elements = [e for c in s.columns for e in _elements(s, c)]
    return sql.SQL("pg_catalog.hashint8extended(0, pg_catalog.hash_record_extended({}, 0))").format(
        _record(elements)
    )


def key_hash(s: Side) -> sql.Composable:
    """A 64-bit hash of a row's key (``bigint``), equal on both sides for equal keys.

    Each key column through its type's 64-bit hash function seeded with its
    position (as text when the row hash takes it as text), XORed; collatable
    values in ``COLLATE "C"``, so the collation (which may differ between the
    sides) cannot change it. A hash function SQL cannot call with the value
    (PostgreSQL 15's ``hashvarlenaextended(internal)`` for bytea) is reached
    through ``hash_record_extended(ROW(value), seed)``, which gives the same
    value as the function itself. Only its low bits are used, as a sub-bucket.
    With row hash version 1 or 3 (a side runs PostgreSQL 13, which has no
    ``hash_record_extended``) such a column is hashed as text instead
    (:attr:`Side.as_text_v1` holds it).
    """
    parts: list[sql.Composable] = []
    c_collation = sql.Identifier("C")
    text = s.as_text if s.hash_version == 2 else s.as_text_v1
    for i, k in enumerate(s.key, 1):
        e: sql.Composable = sql.Identifier(k.name)
        if k.name in text or not k.hashable or k.hash_fn is None:
            fn: sql.Composable = sql.Identifier("pg_catalog", "hashtextextended")
            e = sql.SQL("({})::text COLLATE {}").format(e, c_collation)
        else:
            fn = sql.Identifier(*k.hash_fn)
            if k.collatable:
                e = sql.SQL("{} COLLATE {}").format(e, c_collation)
            if not k.callable:
                parts.append(
                    sql.SQL(
                        "CASE WHEN {e} IS NULL THEN {i} ELSE "
                        "pg_catalog.hash_record_extended(ROW({e}), {i}::int8) END"
                    ).format(e=e, i=sql.Literal(i))
                )
                continue
        parts.append(
            sql.SQL("coalesce({}({}, {}::int8), {})").format(fn, e, sql.Literal(i), sql.Literal(i))
        )
    return sql.SQL("({})").format(sql.SQL(" # ").join(parts))


# -- version 1 (earlier releases), for conflicts bases written with it ---------------------------


def _wide_hash(type_name: str, e: sql.Composable, seed: sql.Composable) -> sql.Composable:
    """v1: an exact 64-bit hash of a value of a :data:`_WIDE` type (NULL for NULL)."""
    f8 = sql.Identifier("pg_catalog", "hashfloat8extended")
    if type_name == "pg_catalog.int8":
        return sql.SQL("pg_catalog.hashint8extended({s}, {e})").format(e=e, s=seed)
    if type_name == "pg_catalog.time":
        return sql.SQL("{f}(pg_catalog.date_part('epoch', {e}), {s})").format(f=f8, e=e, s=seed)
    if type_name == "pg_catalog.money":
        return sql.SQL("pg_catalog.hashtextextended(({e})::numeric::text, {s})").format(e=e, s=seed)
    return sql.SQL(
        "({f}(pg_catalog.date_part('epoch', {e}), {s}) # "
        "{f}(pg_catalog.date_part('microseconds', {e}), ({s}) + 1000003))"
    ).format(f=f8, e=e, s=seed)


def row_hash_v1(s: Side, *, exact: bool = False) -> sql.Composable:
    """The row hash of earlier releases: a per-column XOR, mixed once (verbatim).

    Columns are hashed as text per :attr:`Side.as_text_v1` (v1 could call only hash
    functions that take the value from SQL). ``exact`` (version 3, the hash of a
    comparison with a PostgreSQL 13 side): arrays whose element hash loses
    information (64-bit types folded to 32 bits, numeric without its sign, floats whose
    0 hashes as a NULL element) are hashed as text, other arrays with their dimensions,
    and a domain over a 64-bit type as that type, so that no change to such a value
    goes unseen.
    """
    parts: list[sql.Composable] = []
    for i, c in enumerate(s.columns, 1):
        e = s.exprs.get(c.name, sql.Identifier(c.name))
        hashable = c.hashable and c.callable
        lossy = exact and (c.element_name in SEND or c.element_name in _TEXT_ELEMENTS)
        texty = c.name in s.as_text_v1 or not hashable or c.hash_fn is None or lossy
        if texty or c.hash_fn is None:
            fn = sql.Identifier("pg_catalog", "hashtextextended")
            e = sql.SQL("({})::text").format(e)
        else:
            fn = sql.Identifier(*c.hash_fn)
        if exact:  # version 3; version 1 stays as it was
            e = _bytes(s, c, e)
        seed: sql.Composable = sql.SQL("{}::int8").format(sql.Literal(i))
        # a NULL's stand-in: version 1 used the seed itself, which is also the hash floats'
        # and time's functions give 0 (00:00) and numeric's gives NaN (the seed): version 3
        # takes -i, which no such value hashes to
        null = sql.Literal(-i if exact else i)
        wide = c.base_name if exact else c.type_name
        if wide in _WIDE and c.name not in s.as_text_v1 and hashable:
            parts.append(sql.SQL("coalesce({}, {})").format(_wide_hash(wide, e, seed), null))
            continue
        if c.hash_fn == NUMERIC_HASH and c.name not in s.as_text_v1:
            # PostgreSQL 13 has NaN but no numeric infinity (the literal would not parse
            # there): the same classes for every value it can hold
            seed = sql.SQL(
                "{i}::int8 * 4 + CASE WHEN {e} < 0 THEN 1 WHEN {e} < 'Infinity' THEN 0 "
                "WHEN {e} = 'Infinity' THEN 2 ELSE 3 END"
                if s.server_version >= 140000
                else "{i}::int8 * 4 + CASE WHEN {e} < 0 THEN 1 WHEN {e} = 'NaN' THEN 3 ELSE 0 END"
            ).format(i=sql.Literal(i), e=e)
        parts.append(sql.SQL("coalesce({}({}, {}), {})").format(fn, e, seed, null))
        if exact and c.element_name is not None and not texty:
            dims = sql.Literal(-1_000_003 * i)  # a seed no column's part uses
            parts.append(
                sql.SQL("coalesce(pg_catalog.hashtextextended({}, {}::int8), {})").format(
                    _dims(e), dims, null
                )
            )
    return sql.SQL("pg_catalog.hashint8extended(0, {})").format(sql.SQL(" # ").join(parts))

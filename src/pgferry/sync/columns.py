"""What one server says about the columns a comparison hashes: types, collations, hashing.

Contract: :func:`read_columns` reads, in one catalog query, each wanted column's type
(a domain's base type, an array's element type), whether it is collatable and in
which collation (comparable across servers; whether that collation is deterministic),
whether its type has a default hash operator class and which 64-bit hash function
that is (and whether SQL can call it with the value), as a :class:`ColumnInfo`;
:func:`canon` names hash functions that newer servers renamed without changing their
values by one name. What the comparison makes of it: :mod:`pgferry.sync.sides`.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import Format
from psycopg.types.string import TextLoader

from pgferry.pg.catalog_types import LOOSE_EQUALITY

_COLUMNS = """
SELECT a.attname, tn.nspname, t.typname, a.attcollation <> 0,
       -- the collation as what orders its values, not its name: provider, locale, ICU
       -- rules and library version (a name says nothing: "en_US.UTF-8" on macOS sorts by
       -- bytes, and glibc 2.28 reordered it). Columns newer servers added are read through
       -- to_jsonb, so the query runs on 13 too; an ICU locale sits in collcollate before 15
       CASE WHEN a.attcollation = 0 THEN ''
            WHEN co.collname = 'default' THEN (
                SELECT concat_ws(':', coalesce(j ->> 'datlocprovider', 'c'),
                    CASE WHEN coalesce(j ->> 'datlocprovider', 'c') = 'c' THEN d.datcollate
                         ELSE coalesce(j ->> 'datlocale', j ->> 'daticulocale') END,
                    coalesce(j ->> 'daticurules', ''), coalesce(j ->> 'datcollversion', ''))
                FROM pg_database d, to_jsonb(d) j WHERE d.datname = current_database())
            ELSE (SELECT concat_ws(':', co.collprovider,
                    CASE WHEN co.collprovider = 'c' THEN co.collcollate
                         ELSE coalesce(j ->> 'colllocale', j ->> 'colliculocale',
                                       co.collcollate) END,
                    coalesce(j ->> 'collicurules', ''),
                    coalesce(pg_collation_actual_version(co.oid), ''))
                  FROM to_jsonb(co) j) END,
       -- hashable: the (domain's base) type, or an array's element type, is an enum or has
       -- a default hash operator class, directly or through an implicit binary-coercible
       -- cast, as the server looks one up (varchar's is text's; xml's cast to text is
       -- binary but only by assignment, so the server finds no hash for xml)
       bt.typtype = 'e'
       OR (bt.typtype = 'b' AND bt.typcategory <> 'A' AND EXISTS (
           SELECT 1 FROM pg_opclass o JOIN pg_am m ON m.oid = o.opcmethod
           WHERE m.amname = 'hash' AND o.opcdefault AND (o.opcintype = bt.oid OR
                 o.opcintype IN (SELECT casttarget FROM pg_cast
                                 WHERE castsource = bt.oid AND castmethod = 'b'
                                   AND castcontext = 'i'))))
       OR (bt.typcategory = 'A' AND EXISTS (
           SELECT 1 FROM pg_type et JOIN pg_opclass o ON o.opcintype = et.oid
           JOIN pg_am m ON m.oid = o.opcmethod
           WHERE et.oid = bt.typelem AND et.typtype = 'b' AND m.amname = 'hash'
             AND o.opcdefault)),
       -- the type's 64-bit hash function (support function 2 of its default hash opclass),
       -- and whether SQL can call it with the value ('t'/'f' after a colon): PostgreSQL 15
       -- hashes date with hashint4extended(integer), bool with hashcharextended("char") and
       -- bytea with hashvarlenaextended(internal), which hash_record_extended calls but SQL
       -- cannot call with a date, a bool, a bytea
       (SELECT pn.nspname || '.' || pr.proname || ':' || (
                   pr.proargtypes[0] = bt.oid
                   OR pr.proargtypes[0] IN ('anyenum'::regtype, 'anyarray'::regtype,
                                            'anyrange'::regtype,
                                            to_regtype('anymultirange'))  -- none on 13
                   OR EXISTS (SELECT 1 FROM pg_cast
                              WHERE castsource = bt.oid AND casttarget = pr.proargtypes[0])
               )::text
        FROM pg_opclass o
        JOIN pg_am m ON m.oid = o.opcmethod AND m.amname = 'hash'
        JOIN pg_amproc p ON p.amprocfamily = o.opcfamily AND p.amprocnum = 2
             AND p.amproclefttype = o.opcintype
        JOIN pg_proc pr ON pr.oid = p.amproc
        JOIN pg_namespace pn ON pn.oid = pr.pronamespace
        WHERE o.opcdefault
          AND (o.opcintype = bt.oid
              OR o.opcintype IN (SELECT casttarget FROM pg_cast
                                 WHERE castsource = bt.oid AND castmethod = 'b'
                                   AND castcontext = 'i')
              OR (bt.typtype = 'e' AND o.opcintype = 'anyenum'::regtype)
              OR (bt.typcategory = 'A' AND o.opcintype = 'anyarray'::regtype))
        ORDER BY o.opcintype = bt.oid DESC,
                 -- a function that takes the value itself first (v1 hashed with it)
                 pr.proargtypes[0] = bt.oid DESC
        LIMIT 1),
       btn.nspname || '.' || bt.typname,
       (SELECT en.nspname || '.' || et.typname FROM pg_type et
        JOIN pg_namespace en ON en.oid = et.typnamespace
        WHERE bt.typcategory = 'A' AND et.oid = bt.typelem),
       coalesce(co.collisdeterministic, true),
       bt.oid::int8,
       (SELECT ARRAY[cn.nspname::text, co.collname::text] FROM pg_namespace cn
        WHERE cn.oid = co.collnamespace),
       -- an enum's (or an array of one's) labels in their order, which is each database's
       -- own (ALTER TYPE ... ADD VALUE ... BEFORE, or values added in another order)
       (SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e
        WHERE e.enumtypid = CASE WHEN bt.typtype = 'e' THEN bt.oid
                                 WHEN bt.typcategory = 'A' THEN bt.typelem END)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = t.typnamespace
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
JOIN pg_namespace btn ON btn.oid = bt.typnamespace
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE n.nspname = %s AND c.relname = %s AND a.attname = ANY(%s)
"""

#: enum hash functions hash the label's OID, which differs between databases
_ENUM_HASH = ("pg_catalog", "hashenumextended")

#: hash functions whose equality is looser than identity: citext folds case ('Alice' and
#: 'alice' share a hash), interval counts a month as 30 days and a day as 24 hours ('1 mon'
#: = '30 days', yet a date plus either lands elsewhere): such columns, and arrays of
#: those types, are hashed as text, so that a sync makes them identical, not merely equal
_FOLDING_HASHES = {"citext_hash_extended", "interval_hash_extended"}

#: hash functions that newer servers renamed without changing their values (PostgreSQL 16
#: gave date, bool, xid and cid functions of their own; 17 gave bytea one SQL can call):
#: one name per value
_SAME_HASH = {
    "hashdateextended": "hashint4extended",
    "hashboolextended": "hashcharextended",
    "hashxidextended": "hashint4extended",
    "hashcidextended": "hashint4extended",
    "hashbyteaextended": "hashvarlenaextended",
}


#: date, timestamp, timestamptz, time, timetz and interval (built-in OIDs): psycopg reads
#: them into Python types that cannot hold all their values ('infinity', '24:00', months)
UNBOUNDED_OIDS = frozenset((1082, 1114, 1184, 1083, 1266, 1186))


def text_times(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    """A cursor of ``conn`` that reads the :data:`UNBOUNDED_OIDS` types as text (a domain's
    values come back as its base type's), for keys read back and sent again cast."""
    cur = conn.cursor()
    for oid in UNBOUNDED_OIDS:
        cur.adapters.register_loader(oid, TextLoader)
    return cur


def canon(fn: tuple[str, str] | None) -> tuple[str, str] | None:
    return None if fn is None else (fn[0], _SAME_HASH.get(fn[1], fn[1]))


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
    #: SQL can call ``hash_fn`` with a value of the column (else only hash_record_extended can)
    callable: bool = True
    #: the type, or a domain's base type ("pg_catalog.int8"), and an array's element type
    base_name: str = ""
    element_name: str | None = None
    #: its collation is deterministic (equal means the same bytes); an ICU collation such
    #: as a case-insensitive one is not, and hashes by its sort key
    deterministic: bool = True
    #: psycopg reads every value of it (the base type's, as a result row names it) in
    #: binary and back: a type it has no loader for (citext, an enum, pg_lsn) comes back
    #: as the raw bytes of its binary form, which as a parameter are a bytea, and dates,
    #: times and intervals can hold what Python's cannot ('infinity', '24:00', months):
    #: such a key is read as text (:meth:`pgferry.sync.sides.Side.key_values`)
    loadable: bool = True
    #: an enum's (or an array of one's) labels in the order the type gives them; () for
    #: other types
    labels: tuple[str, ...] = ()

    @property
    def order(self) -> tuple[str, ...]:
        """What orders the column's values that may differ between databases: its
        collation (:attr:`collation`) or its enum's labels (:attr:`labels`)."""
        return (self.collation, *self.labels)


def _column(r: Sequence[Any]) -> ColumnInfo:
    """A :data:`_COLUMNS` row as a :class:`ColumnInfo` (see the module docstring on hashing)."""
    fn: tuple[str, str] | None = None
    callable = False
    if r[6]:
        qualified, _, can_call = r[6].rpartition(":")
        fschema, _, fname = qualified.partition(".")
        fn, callable = (fschema, fname), can_call == "true"
    folding = fn is not None and fn[1] in _FOLDING_HASHES
    folding = folding or (r[8] or "").rsplit(".", 1)[-1] in LOOSE_EQUALITY
    hashable = bool(r[5]) and fn is not None and fn != _ENUM_HASH and not folding
    return ColumnInfo(
        r[0],
        sql.Identifier(r[1], r[2]),
        f"{r[1]}.{r[2]}",
        bool(r[3]),
        r[4],
        hashable,
        fn,
        callable,
        r[7],
        r[8],
        bool(r[9]),
        psycopg.adapters.get_loader(r[10], Format.BINARY) is not None
        and r[10] not in UNBOUNDED_OIDS,
        tuple(r[12] or ()),
    )


def read_columns(
    conn: psycopg.Connection[Any], schema: str, name: str, wanted: Sequence[str]
) -> dict[str, ColumnInfo]:
    """The wanted columns of ``schema.name`` that exist, by name.

    A collatable column's :attr:`ColumnInfo.collation` ends in the order its collation
    gives :data:`PROBE` (:func:`probe_orders`), so that two collations alike in every
    attribute the catalog shows but ordering otherwise (servers whose C libraries differ
    and report no version, as 13 and 14 do for a database's default) are not taken as one.
    """
    rows = conn.execute(_COLUMNS, [schema, name, list(wanted)]).fetchall()
    orders = probe_orders(conn, {tuple(r[11]) for r in rows if r[3] and r[11]})
    return {
        r[0]: replace(c, collation=f"{c.collation}:{orders[tuple(r[11])]}") if r[3] else c
        for r in rows
        for c in [_column(r)]
    }


#: strings whose order tells the common collations apart: case first or last, or by bytes
#: (C); punctuation and spaces ignored at the first level or not (glibc before and after
#: 2.28, macOS); digits; and, where the server's encoding holds them, accents and letters
#: that some languages sort elsewhere
PROBE = (
    "a", "A", "b", "B", "z", "Z", "aB", "Ab", "AB", "ab", "a b", "a-b", "a_b", "a.b", "a1",
    "a10", "a2", "1", "10", "1-1", "1 1", "11", "2", "9", "", " ", "-", "_", ".", "~",
    "co-op", "coop", "co op", "O'Brien", "OBrien", "x y", "xy", "x-y",
)  # fmt: skip
PROBE_UTF8 = (
    "e", "é", "f", "ä", "ae", "ß", "ss", "i", "I", "ı", "İ", "ch", "h", "c", "å", "ü", "y",
    "ø", "ñ", "n", "o", "ǆ", "Å",
)  # fmt: skip


#: per connection, the probe order of each collation already asked: a collation orders
#: alike for a connection's life, so a run of many tables asks once per collation
_ORDERS: weakref.WeakKeyDictionary[psycopg.Connection[Any], dict[tuple[str, ...], str]] = (
    weakref.WeakKeyDictionary()
)


def probe_orders(
    conn: psycopg.Connection[Any], collations: set[tuple[str, ...]]
) -> dict[tuple[str, ...], str]:
    """The order (positions in :data:`PROBE`) each of ``collations`` (schema, name) gives.

    One statement for those ``conn`` was not asked yet; the non-ASCII strings only where
    the server's and the connection's encodings are UTF-8 (elsewhere they might not
    convert).
    """
    known = _ORDERS.setdefault(conn, {})
    names = sorted(collations - known.keys())
    if names:
        utf8 = (
            conn.info.parameter_status("server_encoding") == "UTF8"
            and conn.info.encoding == "utf-8"
        )
        probe = [*PROBE, *PROBE_UTF8] if utf8 else list(PROBE)
        q = sql.SQL("SELECT {}").format(
            sql.SQL(", ").join(
                sql.SQL(
                    "(SELECT string_agg(n::text, ',' ORDER BY s COLLATE {}, n) "
                    "FROM unnest(%(p)s::text[]) WITH ORDINALITY AS p(s, n))"
                ).format(sql.Identifier(*c))
                for c in names
            )
        )
        row = conn.execute(q, {"p": probe}).fetchone()
        assert row is not None
        for c, o in zip(names, row, strict=True):
            known[c] = hashlib.blake2b(o.encode(), digest_size=6).hexdigest()
    return {c: known[c] for c in collations}

"""The one catalog reader: tables, columns, keys, foreign keys, sequences, triggers, sizes.

Contract:
- :func:`read` reads the catalog of one database once and returns a
  :class:`~pgferry.pg.catalog_types.Catalog` of plain data (the types live in
  :mod:`pgferry.pg.catalog_types`, free of the driver). ``schemas=None`` means every
  user schema. pgferry's own schema is never included.
- Two views of the same reader. The default is what sync plans with: ordinary and
  partitioned (parent) tables, partitions through their parent only, sizes from
  ``pg_class`` so that reading never waits behind another session's lock.
  ``for_lint=True`` is what catalog-aware lint needs on top: partitions and
  materialized views too, CHECK constraints, indexes, function volatility, enum
  labels, and measured sizes (:class:`~pgferry.pg.catalog_types.Measured`: exact sizes
  from the size functions, which take ACCESS SHARE on each table; a partitioned table
  summed over its leaves). :mod:`pgferry.lint.snapshot` derives its snapshot from it.
- :func:`tables` is the sync view's tables by ``"schema.table"``.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgferry.pg.catalog_owned import sequences, triggers
from pgferry.pg.catalog_types import LOOSE_EQUALITY
from pgferry.pg.catalog_types import Catalog as Catalog
from pgferry.pg.catalog_types import Check as Check
from pgferry.pg.catalog_types import Column as Column
from pgferry.pg.catalog_types import ForeignKey as ForeignKey
from pgferry.pg.catalog_types import Index as Index
from pgferry.pg.catalog_types import Measured as Measured
from pgferry.pg.catalog_types import Table as Table
from pgferry.pg.catalog_types import TriggerFunction as TriggerFunction

_SCHEMAS = """
SELECT nspname FROM pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'pgferry')
  AND nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
"""

_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text,
       -- rows, partitions summed: reltuples, or where it is unknown (-1: never vacuumed or
       -- analyzed, PostgreSQL 14+) the statistics' count of live rows, which every insert
       -- keeps and no lock guards (a table loaded since the last ANALYZE is not "0 rows")
       (SELECT coalesce(sum(CASE WHEN r.reltuples >= 0 THEN r.reltuples
                                 ELSE pg_stat_get_live_tuples(r.oid) END), 0)
        FROM pg_class r
        WHERE CASE WHEN c.relkind = 'p'
                   THEN r.oid IN (SELECT t.relid FROM pg_partition_tree(c.oid) t WHERE t.isleaf)
                   ELSE r.oid = c.oid END)::bigint,
       -- sizes from pg_class (table, TOAST, indexes; partitions summed): the size functions
       -- would lock each table and wait behind another session's ACCESS EXCLUSIVE
       (SELECT coalesce(sum(r.relpages::bigint + coalesce(tr.relpages, 0)
                            + coalesce((SELECT sum(ic.relpages) FROM pg_index x
                                        JOIN pg_class ic ON ic.oid = x.indexrelid
                                        WHERE x.indrelid = r.oid), 0)), 0)
        FROM pg_class r LEFT JOIN pg_class tr ON tr.oid = r.reltoastrelid
        WHERE r.oid = c.oid OR r.oid IN (SELECT i.inhrelid FROM pg_inherits i
                                         WHERE i.inhparent = c.oid))::bigint
         * current_setting('block_size')::bigint,
       pg_get_userbyid(c.relowner), row_security_active(c.oid),
       -- what the role may do beyond reading and writing rows: act as the owner (drop and
       -- build indexes, disable triggers), TRUNCATE
       pg_has_role(c.relowner, 'USAGE'), has_table_privilege(c.oid, 'TRUNCATE'),
       -- child tables by INHERITS (not partitions): a parent's reads include their rows
       ARRAY(SELECT cn.nspname || '.' || cc.relname FROM pg_inherits i
             JOIN pg_class cc ON cc.oid = i.inhrelid
             JOIN pg_namespace cn ON cn.oid = cc.relnamespace
             WHERE i.inhparent = c.oid AND NOT cc.relispartition ORDER BY 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = ANY(%(kinds)s) AND (%(partitions)s OR NOT c.relispartition)
  AND n.nspname = ANY(%(schemas)s) AND n.nspname <> 'pgferry'
ORDER BY n.nspname, c.relname
"""

# Lint only. A partitioned parent has no storage of its own: sum its leaves
# (pg_partition_tree, 12+). The size functions lock each table (ACCESS SHARE).
_MEASURED = """
SELECT c.oid,
       CASE WHEN c.relkind = 'p' THEN coalesce((
           SELECT sum(greatest(l.reltuples, 0)) FROM pg_partition_tree(c.oid) t
           JOIN pg_class l ON l.oid = t.relid WHERE t.isleaf), 0)
       ELSE c.reltuples END::bigint,
       CASE WHEN c.relkind = 'p' THEN coalesce((
           SELECT sum(pg_total_relation_size(t.relid)) FROM pg_partition_tree(c.oid) t
           WHERE t.isleaf), 0)
       ELSE pg_total_relation_size(c.oid) END::bigint,
       CASE WHEN c.relkind = 'p' THEN coalesce((
           SELECT sum(pg_relation_size(t.relid)) FROM pg_partition_tree(c.oid) t
           WHERE t.isleaf), 0)
       ELSE pg_relation_size(c.oid) END::bigint
FROM pg_class c WHERE c.oid = ANY(%s)
"""

_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef,
       a.attidentity::text, a.attgenerated::text, a.atttypid::int, t.typtype::text,
       coalesce(NOT co.collisdeterministic, false)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

#: per type (of the columns read): compared by its text when written. Walk from the type
#: through domains (each level) and an array's element type to the type x that holds the
#: values; a composite, range or multirange, a type with no default btree operator class (no
#: equality, as json, or none that is identity, as box's area), one whose equality is
#: looser than identity (citext, interval), floats or numeric inside an array (0 = -0
#: and 1.5 = 1.50 there, which the hash tells apart), or a domain over an enum (whose
#: ``=``, ``<`` and ``max`` do not resolve: the enum's are polymorphic, and a domain is
#: not taken as ``anyenum``). Once per type, not per column.
_TEXT_COMPARED = """
WITH RECURSIVE walk(root, oid, in_array) AS (
    SELECT t, t, false FROM unnest(%(types)s::oid[]) AS t
    UNION ALL
    SELECT walk.root, CASE WHEN w.typtype = 'd' THEN w.typbasetype ELSE w.typelem END,
           walk.in_array OR w.typtype <> 'd'
    FROM walk JOIN pg_type w ON w.oid = walk.oid
    WHERE w.typtype = 'd' OR (w.typcategory = 'A' AND w.typelem <> 0))
SELECT walk.root::int,
       x.typtype IN ('c', 'r', 'm') OR x.typname = ANY(%(loose)s)
       OR (walk.in_array AND x.oid = ANY('{float4,float8,numeric}'::regtype[]))
       OR enum_domain
       OR NOT (x.typtype = 'e' OR EXISTS (
           SELECT 1 FROM pg_opclass o JOIN pg_am m ON m.oid = o.opcmethod
           WHERE m.amname = 'btree' AND o.opcdefault
             AND (o.opcintype = x.oid OR o.opcintype IN (
                 SELECT casttarget FROM pg_cast
                 WHERE castsource = x.oid AND castmethod = 'b' AND castcontext = 'i')))),
       enum_domain
FROM walk JOIN pg_type x ON x.oid = walk.oid,
     -- a domain over an enum (not in an array): its "=" does not resolve
     LATERAL (SELECT x.typtype = 'e' AND NOT walk.in_array AND walk.root <> walk.oid) d(enum_domain)
WHERE NOT (x.typtype = 'd' OR (x.typcategory = 'A' AND x.typelem <> 0))
"""

_CONSTRAINTS = """
SELECT con.conrelid, con.contype::text, con.conname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o),
       fn.nspname || '.' || fc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o),
       con.condeferrable, con.convalidated, con.confdeltype::text
FROM pg_constraint con
LEFT JOIN pg_class fc ON fc.oid = con.confrelid
LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
WHERE con.conrelid = ANY(%s) AND con.contype IN ('p', 'u', 'f')
  AND con.conparentid = 0
ORDER BY con.conrelid, con.conname
"""


_CHECKS = """
SELECT conrelid, conname, pg_get_constraintdef(oid), convalidated,
       CASE WHEN array_length(conkey, 1) = 1 THEN
           (SELECT attname FROM pg_attribute WHERE attrelid = conrelid AND attnum = conkey[1])
       END
FROM pg_constraint WHERE conrelid = ANY(%s) AND contype = 'c'
"""

_INDEXES = """
SELECT i.indrelid, ic.relname, i.indisunique, i.indisvalid,
       ARRAY(SELECT coalesce(a.attname, '(expression)')
             FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
             ORDER BY k.o)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = ANY(%s)
"""

_FUNCTIONS = """
SELECT n.nspname, p.proname, p.provolatile::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY(%s) OR n.nspname = 'pg_catalog'
"""

_ENUMS = """
SELECT n.nspname || '.' || t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = ANY(%s) GROUP BY 1
"""

_RANK = {"i": 0, "s": 1, "v": 2}


def _nn_column(definition: str, column: str | None) -> str | None:
    """The column of ``CHECK (column IS NOT NULL)``, else None."""
    if column is None:
        return None
    norm = " ".join(definition.replace("(", " ").replace(")", " ").split()).lower()
    quoted = column if column.islower() and column.isidentifier() else f'"{column}"'
    return column if norm == f"check {quoted.lower()} is not null" else None


def read(
    conn: psycopg.Connection[Any], schemas: list[str] | None = None, *, for_lint: bool = False
) -> Catalog:
    """The catalog of ``schemas`` (None: every user schema) as seen through ``conn``; see
    the module docstring for what ``for_lint`` adds."""
    if schemas is None:
        schemas = [r[0] for r in conn.execute(_SCHEMAS)]
    cat = Catalog(int(conn.info.server_version))
    by_oid: dict[int, Table] = {}
    params = {
        "schemas": schemas,
        "kinds": ["r", "p", "m"] if for_lint else ["r", "p"],
        "partitions": for_lint,
    }
    for oid, schema, name, kind, rows, size, owner, rls, owned, truncate, children in conn.execute(
        _TABLES, params
    ):
        by_oid[oid] = Table(
            schema,
            name,
            kind=kind,
            row_estimate=rows,
            total_bytes=size,
            owner=owner,
            owned=bool(owned),
            may_truncate=bool(truncate),
            rls_active=bool(rls),
            inherited_by=list(children),
        )
    oids = list(by_oid)
    if oids:
        _structure(conn, by_oid, oids)
        if for_lint:
            _lint_facts(conn, by_oid, oids)
    if for_lint:
        _routines(conn, cat, schemas)
    cat.tables = {t.qualname: t for t in by_oid.values()}
    return cat


def _columns(conn: psycopg.Connection[Any], by_oid: dict[int, Table], oids: list[int]) -> None:
    """The tables' columns, with what the sync compares as text (:data:`_TEXT_COMPARED`)."""
    rows = conn.execute(_COLUMNS, [oids]).fetchall()
    types = sorted({r[7] for r in rows})
    text: dict[int, bool] = {}
    enum_domains: set[int] = set()
    for typoid, as_text, enum_domain in conn.execute(
        _TEXT_COMPARED, {"types": types, "loose": sorted(LOOSE_EQUALITY)}
    ):
        text[typoid] = as_text
        if enum_domain:
            enum_domains.add(typoid)
    for rel, name, typ, notnull, hasdef, ident, gen, typoid, typtype, loose in rows:
        by_oid[rel].columns.append(
            Column(
                name,
                typ,
                notnull,
                hasdef,
                ident,
                gen,
                typoid,
                typtype,
                loose,
                text.get(typoid, True),
                typoid in enum_domains,
            )
        )


def _structure(conn: psycopg.Connection[Any], by_oid: dict[int, Table], oids: list[int]) -> None:
    """Columns, keys, foreign keys, sequences and triggers of the tables."""
    _columns(conn, by_oid, oids)
    for rel, kind, cname, cols, ref, refcols, deferrable, validated, on_delete in conn.execute(
        _CONSTRAINTS, [oids]
    ):
        t = by_oid[rel]
        if kind in ("p", "u") and deferrable:
            t.deferrable_keys.append(tuple(cols))
        if kind == "p":
            t.primary_key = tuple(cols)
        elif kind == "u":
            t.unique_keys.append(tuple(cols))
        else:
            t.foreign_keys.append(
                ForeignKey(
                    cname, tuple(cols), ref, tuple(refcols), deferrable, validated, on_delete
                )
            )
    sequences(conn, by_oid, oids)
    triggers(conn, by_oid, oids)


def _lint_facts(conn: psycopg.Connection[Any], by_oid: dict[int, Table], oids: list[int]) -> None:
    """Measured sizes, CHECK constraints and indexes."""
    for rel, rows, total, heap in conn.execute(_MEASURED, [oids]):
        by_oid[rel].measured = Measured(rows, total, heap)
    for rel, name, definition, validated, col in conn.execute(_CHECKS, [oids]):
        by_oid[rel].checks.append(Check(name, definition, validated, _nn_column(definition, col)))
    for rel, name, unique, valid, cols in conn.execute(_INDEXES, [oids]):
        by_oid[rel].indexes.append(Index(name, list(cols), unique, valid))


def _routines(conn: psycopg.Connection[Any], cat: Catalog, schemas: list[str]) -> None:
    """Function volatility (the most volatile overload wins) and enum labels."""
    for schema, name, vol in conn.execute(_FUNCTIONS, [schemas]):
        for key in (f"{schema}.{name}", name):
            if _RANK[vol] > _RANK.get(cat.functions.get(key, "i"), 0) or key not in cat.functions:
                cat.functions[key] = vol
    for name, labels in conn.execute(_ENUMS, [schemas]):
        cat.enums[name] = list(labels)


def tables(conn: psycopg.Connection[Any], schemas: list[str]) -> dict[str, Table]:
    """Every ordinary and partitioned (parent) table of ``schemas``, by ``schema.table``."""
    return read(conn, schemas).tables


def user_schemas(conn: psycopg.Connection[Any], *, with_tables: bool = False) -> list[str]:
    """The user schemas (pgferry's own and the system's left out), sorted; ``with_tables``:
    only those that hold a table (where a database's tables are, when the configured
    schemas hold none)."""
    q = (
        "SELECT n.nspname FROM pg_namespace n WHERE n.nspname NOT LIKE 'pg\\_%' "
        "AND n.nspname NOT IN ('information_schema', 'pgferry')"
    )
    if with_tables:
        q += (
            " AND EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid"
            " AND c.relkind IN ('r', 'p') AND NOT c.relispartition)"
        )
    return [r[0] for r in conn.execute(q + " ORDER BY 1")]

"""Introspection: tables, columns, keys, foreign keys, sequences, triggers, sizes.

Contract: :func:`tables` reads the catalog of one database for the given
schemas and returns :class:`Table` objects keyed by ``"schema.table"``.
Partitioned tables appear through their parent only (leaves are skipped);
pgferry's own schema is never included. Everything is plain data, so the
sync and lint planners can work on it without a connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "character varying(20)", "timestamp with time zone"
    not_null: bool
    has_default: bool
    identity: str  # "" | "a" (ALWAYS) | "d" (BY DEFAULT)
    generated: str  # "" | "s" (stored generated) | "v" (virtual generated, PostgreSQL 18)
    type_oid: int = 0
    #: pg_type.typtype: b(ase), e(num), d(omain), c(omposite), r(ange), m(ultirange), p(seudo)
    typtype: str = "b"


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    ref_table: str  # "schema.table"
    ref_columns: tuple[str, ...]
    deferrable: bool
    validated: bool


@dataclass
class Table:
    schema: str
    name: str
    columns: list[Column] = field(default_factory=list)
    primary_key: tuple[str, ...] = ()
    unique_keys: list[tuple[str, ...]] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    sequences: dict[str, str] = field(default_factory=dict)  # column -> "schema.sequence"
    #: user triggers that fire in an ordinary session (enabled, or ENABLE ALWAYS)
    user_triggers: list[str] = field(default_factory=list)
    #: their pg_trigger.tgenabled ("O" enabled, "A" always), to re-enable them as they were
    trigger_modes: dict[str, str] = field(default_factory=dict)
    partitioned: bool = False
    row_estimate: int = 0
    total_bytes: int = 0
    owner: str = ""
    #: row-level security filters what the connected role sees in (or may write to) this table
    #: (``row_security_active``: policies enabled and the role neither owns it, unless
    #: FORCE ROW LEVEL SECURITY, nor has BYPASSRLS)
    rls_active: bool = False
    #: sequences the table's column defaults call (``DEFAULT nextval('s')``) that no column
    #: owns: column -> "schema.sequence"
    default_sequences: dict[str, str] = field(default_factory=dict)

    @property
    def qualname(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.relkind = 'p',
       greatest(c.reltuples, 0)::bigint,
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
       pg_get_userbyid(c.relowner), row_security_active(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname = ANY(%s) AND n.nspname <> 'pgferry'
ORDER BY n.nspname, c.relname
"""

_COLUMNS = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef,
       a.attidentity::text, a.attgenerated::text, a.atttypid::int, t.typtype::text
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_CONSTRAINTS = """
SELECT con.conrelid, con.contype::text, con.conname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o),
       fn.nspname || '.' || fc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o),
       con.condeferrable, con.convalidated
FROM pg_constraint con
LEFT JOIN pg_class fc ON fc.oid = con.confrelid
LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
WHERE con.conrelid = ANY(%s) AND con.contype IN ('p', 'u', 'f')
  AND con.conparentid = 0
ORDER BY con.conrelid, con.conname
"""

_SEQUENCES = """
SELECT d.refobjid, a.attname, sn.nspname || '.' || s.relname
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.refobjid = ANY(%s) AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
"""

# sequences a column default uses (nextval('s')) without owning them: pg_attrdef depends on
# the sequence with a normal dependency
_DEFAULT_SEQUENCES = """
SELECT ad.adrelid, a.attname, sn.nspname || '.' || s.relname
FROM pg_attrdef ad
JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
     AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'n'
JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
WHERE ad.adrelid = ANY(%s)
ORDER BY ad.adrelid, a.attnum
"""

_TRIGGERS = """
SELECT tgrelid, tgname, tgenabled::text FROM pg_trigger
WHERE tgrelid = ANY(%s) AND NOT tgisinternal AND tgenabled IN ('O', 'A')
ORDER BY tgrelid, tgname
"""


def tables(conn: psycopg.Connection[Any], schemas: list[str]) -> dict[str, Table]:
    """Every ordinary and partitioned (parent) table of ``schemas``, by ``schema.table``."""
    by_oid: dict[int, Table] = {}
    for oid, schema, name, partitioned, rows, size, owner, rls in conn.execute(
            _TABLES, [schemas]):
        by_oid[oid] = Table(schema, name, partitioned=partitioned, row_estimate=rows,
                            total_bytes=size, owner=owner, rls_active=bool(rls))
    oids = list(by_oid)
    if not oids:
        return {}
    for rel, name, typ, notnull, hasdef, ident, gen, typoid, typtype in conn.execute(
            _COLUMNS, [oids]):
        by_oid[rel].columns.append(Column(name, typ, notnull, hasdef, ident, gen, typoid,
                                          typtype))
    for rel, kind, cname, cols, ref, refcols, deferrable, validated in conn.execute(
        _CONSTRAINTS, [oids]
    ):
        t = by_oid[rel]
        if kind == "p":
            t.primary_key = tuple(cols)
        elif kind == "u":
            t.unique_keys.append(tuple(cols))
        else:
            t.foreign_keys.append(
                ForeignKey(cname, tuple(cols), ref, tuple(refcols), deferrable, validated)
            )
    for rel, col, seq in conn.execute(_SEQUENCES, [oids]):
        by_oid[rel].sequences[col] = seq
    for rel, col, seq in conn.execute(_DEFAULT_SEQUENCES, [oids]):
        if col not in by_oid[rel].sequences:
            by_oid[rel].default_sequences[col] = seq
    for rel, tg, mode in conn.execute(_TRIGGERS, [oids]):
        by_oid[rel].user_triggers.append(tg)
        by_oid[rel].trigger_modes[tg] = mode
    return {t.qualname: t for t in by_oid.values()}


def server_version_num(conn: psycopg.Connection[Any]) -> int:
    """``server_version_num`` as an int (e.g. 180001)."""
    return int(conn.info.server_version)

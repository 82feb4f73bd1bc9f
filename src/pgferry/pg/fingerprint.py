"""The schema's fingerprint: what the applied migrations made, to spot drift later.

Contract:

- :func:`objects` reads, in one query, every object of the database's own schemas
  (not ``pg_*``, ``information_schema`` or pgferry's ``pgferry``): tables and their
  columns (and a column's collation), views, sequences, constraints, indexes,
  triggers (and whether one is disabled), functions, policies, enums, domains,
  extensions, and the privileges and storage options of tables. It returns
  ``{"kind schema.name": md5 of its definition}`` (data changes never change it; a
  column, an index, a policy does).
- :func:`record` appends the fingerprint to ``pgferry.schema_fingerprint`` (creating
  it); :func:`after_migrate` is what ``migrate up`` calls at its end: it records when
  the run applied files, or when the database has none yet, and never fails the run.
- :func:`latest` reads the newest recorded one (None when none); :func:`compare` is
  pure: the objects changed, added and removed since.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

OBJECTS_SQL = r"""
WITH ns AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('information_schema', 'pgferry') AND nspname NOT LIKE 'pg\_%'
)
-- (what an extension brought, deptype 'e', is the extension's, not the migrations')
SELECT kind || ' ' || name, md5(coalesce(def, '')) FROM (
    SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                          WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table'
                          ELSE 'table' END AS kind,
           format('%I.%I', ns.nspname, c.relname) AS name,
           concat_ws('|', c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity,
               (SELECT string_agg(concat_ws(' ', a.attname,
                                            format_type(a.atttypid, a.atttypmod), a.attnotnull,
                                            a.attidentity, a.attgenerated,
                                            pg_get_expr(d.adbin, d.adrelid)), ', '
                                  ORDER BY a.attnum)
                FROM pg_attribute a
                LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
               CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
               (SELECT concat_ws(',', s.seqtypid::regtype, s.seqincrement, s.seqmin, s.seqmax,
                                 s.seqcycle)
                FROM pg_sequence s WHERE s.seqrelid = c.oid)) AS def
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass
                      AND e.objid = c.oid AND e.deptype = 'e')
    UNION ALL
    SELECT 'constraint', format('%I.%I.%I', ns.nspname, c.relname, co.conname),
           pg_get_constraintdef(co.oid)
    FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid
    JOIN ns ON ns.oid = c.relnamespace
    UNION ALL
    SELECT 'index', format('%I.%I', ns.nspname, i.relname), pg_get_indexdef(i.oid)
    FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN ns ON ns.oid = i.relnamespace
    WHERE NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass
                      AND e.objid = i.oid AND e.deptype = 'e')
    UNION ALL
    SELECT 'trigger', format('%I.%I.%I', ns.nspname, c.relname, t.tgname),
           pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN ns ON ns.oid = c.relnamespace
    WHERE NOT t.tgisinternal
    UNION ALL
    -- (layout 2) a trigger that does not simply fire: disabled (as an import script's
    -- DISABLE TRIGGER may leave it), or firing only in replica sessions or always
    SELECT CASE t.tgenabled WHEN 'D' THEN 'disabled trigger' WHEN 'R' THEN 'replica trigger'
                            ELSE 'always trigger' END,
           format('%I.%I.%I', ns.nspname, c.relname, t.tgname), t.tgenabled::text
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN ns ON ns.oid = c.relnamespace
    WHERE NOT t.tgisinternal AND t.tgenabled <> 'O'
    UNION ALL
    -- (layout 2) a table's column collated otherwise than its type (format_type omits it)
    SELECT 'column collation', format('%I.%I.%I', ns.nspname, c.relname, a.attname),
           format('%I.%I', cn.nspname, co.collname)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ns ON ns.oid = c.relnamespace
    JOIN pg_type ty ON ty.oid = a.atttypid
    JOIN pg_collation co ON co.oid = a.attcollation
    JOIN pg_namespace cn ON cn.oid = co.collnamespace
    WHERE c.relkind IN ('r', 'p', 'f') AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attcollation <> ty.typcollation
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass
                      AND e.objid = c.oid AND e.deptype = 'e')
    UNION ALL
    -- (layout 2) who may do what with a table, view or sequence (a REVOKE by hand breaks the
    -- application as surely as a dropped column), and a table's storage options
    -- (autovacuum_enabled = false by hand, and wraparound comes closer); only where set
    SELECT o.kind, format('%I.%I', ns.nspname, c.relname), o.def
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    CROSS JOIN LATERAL (VALUES ('privileges', c.relacl::text),
                               ('table options', c.reloptions::text)) AS o(kind, def)
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND o.def IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass
                      AND e.objid = c.oid AND e.deptype = 'e')
    UNION ALL
    SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
           format('%I.%I(%s)', ns.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
           concat_ws('|', pg_get_function_result(p.oid), l.lanname, p.provolatile, p.prosecdef,
                     p.proconfig::text, p.prosrc)
    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
    WHERE NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass
                      AND e.objid = p.oid AND e.deptype = 'e')
    UNION ALL
    SELECT 'policy', format('%I.%I.%I', ns.nspname, c.relname, pol.polname),
           concat_ws('|', pol.polcmd, pol.polpermissive, pol.polroles::text,
                     pg_get_expr(pol.polqual, pol.polrelid),
                     pg_get_expr(pol.polwithcheck, pol.polrelid))
    FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid
    JOIN ns ON ns.oid = c.relnamespace
    UNION ALL
    SELECT 'type', format('%I.%I', ns.nspname, t.typname),
           concat_ws('|', t.typtype, format_type(t.typbasetype, t.typtypmod), t.typnotnull,
                     (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                      FROM pg_enum e WHERE e.enumtypid = t.oid))
    FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
    WHERE t.typtype IN ('e', 'd')
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_type'::regclass
                      AND e.objid = t.oid AND e.deptype = 'e')
    UNION ALL
    SELECT 'schema', format('%I', nspname), '' FROM ns
    UNION ALL
    SELECT 'extension', format('%I', extname), extversion FROM pg_extension
    WHERE extname <> 'plpgsql'
) o
"""


@dataclass
class Recorded:
    at: datetime
    version: str | None
    fingerprint: str
    objects: dict[str, str]


#: the pseudo-object that says which layout a recorded fingerprint has. Layout 2 added
#: the kinds below; a fingerprint recorded without them says nothing of them, so they
#: are left out of a comparison with one (else every disabled trigger and collated
#: column of the day would show as drift once, after an upgrade)
LAYOUT = "fingerprint layout"
LAYOUT_2_KINDS = (
    "disabled trigger ",
    "replica trigger ",
    "always trigger ",
    "column collation ",
    "privileges ",
    "table options ",
)


def objects(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Every object of the database's own schemas: ``{"kind name": md5}``."""
    found = {str(k): str(v) for k, v in conn.execute(OBJECTS_SQL).fetchall()}
    return {**found, LAYOUT: "2"}


def digest(objs: dict[str, str]) -> str:
    import hashlib

    return hashlib.sha256(
        "\n".join(f"{k} {v}" for k, v in sorted(objs.items())).encode()
    ).hexdigest()


def record(conn: psycopg.Connection[Any], version: str | None) -> None:
    """Append the schema's fingerprint now (autocommit connection)."""
    from pgferry.pg import ownschema

    objs = objects(conn)
    ownschema.ensure(conn)
    conn.execute(
        "INSERT INTO pgferry.schema_fingerprint (version, fingerprint, objects)"
        " VALUES (%s, %s, %s)",
        [version, digest(objs), Jsonb(objs)],
    )


def latest(conn: psycopg.Connection[Any]) -> Recorded | None:
    """The newest recorded fingerprint, or None (none recorded, or no table yet)."""
    if conn.execute("SELECT to_regclass('pgferry.schema_fingerprint')").fetchone() == (None,):
        return None
    return (
        conn.cursor(row_factory=class_row(Recorded))
        .execute(
            "SELECT at, version, fingerprint, objects FROM pgferry.schema_fingerprint"
            " ORDER BY id DESC LIMIT 1"
        )
        .fetchone()
    )


def compare(
    recorded: dict[str, str], now: dict[str, str]
) -> tuple[list[str], list[str], list[str]]:
    """(changed, added, removed) object names, each sorted. Pure.

    Against a fingerprint recorded before layout 2, the kinds it added are left out.
    """
    if LAYOUT not in recorded:
        now = {k: v for k, v in now.items() if k != LAYOUT and not k.startswith(LAYOUT_2_KINDS)}
    changed = sorted(k for k in recorded.keys() & now.keys() if recorded[k] != now[k])
    return changed, sorted(now.keys() - recorded.keys()), sorted(recorded.keys() - now.keys())


def after_migrate(conn: psycopg.Connection[Any], applied: bool, version: str | None) -> list[str]:
    """``migrate up``'s last step: record the fingerprint; a warning instead of failing."""
    try:
        if applied or latest(conn) is None:
            record(conn, version)
        return []
    except psycopg.Error as e:
        from pgferry.redaction import redact

        return [
            f"could not record the schema fingerprint ({redact(str(e)).strip()}); "
            "`pgferry health` cannot tell schema drift until a later `migrate up` does"
        ]

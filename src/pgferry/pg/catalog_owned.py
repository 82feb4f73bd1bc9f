"""What the catalog reader reads of each table besides its columns and keys: the
sequences its columns use, and its triggers (those of a partitioned table's partitions
included), with the functions a sync reads to know whether a trigger can skip a row.

Contract: :func:`sequences` and :func:`triggers` fill the
:class:`~pgferry.pg.catalog_types.Table` objects of :func:`pgferry.pg.catalog.read`
(by oid); they are part of that one read.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgferry.pg.catalog_types import Table, TriggerFunction

_SEQUENCES = """
SELECT d.refobjid, a.attname, sn.nspname || '.' || s.relname,
       has_sequence_privilege(s.oid, 'UPDATE')
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.refobjid = ANY(%s) AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
"""

# sequences a column default uses (nextval('s')) without owning them: pg_attrdef depends on
# the sequence with a normal dependency
_DEFAULT_SEQUENCES = """
SELECT ad.adrelid, a.attname, sn.nspname || '.' || s.relname,
       has_sequence_privilege(s.oid, 'UPDATE')
FROM pg_attrdef ad
JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
     AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'n'
JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
WHERE ad.adrelid = ANY(%s)
ORDER BY ad.adrelid, a.attnum
"""

#: the triggers of each table and, of a partitioned one, those its partitions have of their
#: own (a trigger on the parent is cloned to each partition: those clones are left out)
_TRIGGERS = """
SELECT r.root, tgname, tgenabled::text, before_row,
       -- what the sync reads to know whether such a trigger's function can return NULL:
       -- its language, a PL/pgSQL function's definition, its source (a C function's
       -- symbol) and a C function's library
       l.lanname::text,
       CASE WHEN before_row AND l.lanname = 'plpgsql' THEN pg_get_functiondef(tgfoid) END,
       CASE WHEN before_row THEN p.prosrc ELSE '' END, coalesce(p.probin, ''),
       CASE WHEN tgrelid <> r.root THEN n.nspname || '.' || c.relname END
FROM unnest(%s::oid[]) AS r(root),
     -- (a table that is neither partitioned nor a partition has no partition tree)
     LATERAL (SELECT r.root UNION SELECT relid FROM pg_partition_tree(r.root)) AS pt(relid)
JOIN pg_trigger ON tgrelid = pt.relid
JOIN pg_class c ON c.oid = tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = tgfoid
JOIN pg_language l ON l.oid = p.prolang,
     -- FOR EACH ROW (1), BEFORE (2), on INSERT (4) or UPDATE (16): returning NULL skips
     -- the row without an error
     LATERAL (SELECT (tgtype & 3) = 3 AND (tgtype & 20) <> 0) b(before_row)
WHERE NOT tgisinternal AND tgenabled IN ('O', 'A') AND (tgrelid = r.root OR tgparentid = 0)
ORDER BY r.root, tgrelid <> r.root, c.relname, tgname
"""


def sequences(conn: psycopg.Connection[Any], by_oid: dict[int, Table], oids: list[int]) -> None:
    """The sequences the tables' columns own, then those their defaults call."""
    for rel, col, seq, settable in conn.execute(_SEQUENCES, [oids]):
        by_oid[rel].sequences[col] = seq
        if not settable:
            by_oid[rel].unsettable_sequences.add(seq)
    for rel, col, seq, settable in conn.execute(_DEFAULT_SEQUENCES, [oids]):
        if col not in by_oid[rel].sequences:
            by_oid[rel].default_sequences[col] = seq
            if not settable:
                by_oid[rel].unsettable_sequences.add(seq)


def triggers(conn: psycopg.Connection[Any], by_oid: dict[int, Table], oids: list[int]) -> None:
    """The user triggers that fire on the tables (see :data:`_TRIGGERS`)."""
    for rel, name, mode, before_row, language, definition, source, library, leaf in conn.execute(
        _TRIGGERS, [oids]
    ):
        tg = name if leaf is None else f"{name} ({leaf})"
        if leaf is not None:
            by_oid[rel].trigger_tables[tg] = (leaf, name)
        by_oid[rel].user_triggers.append(tg)
        by_oid[rel].trigger_modes[tg] = mode
        if before_row:
            by_oid[rel].skipping_triggers.append(tg)
            by_oid[rel].trigger_functions[tg] = TriggerFunction(
                language, definition or "", source, library
            )

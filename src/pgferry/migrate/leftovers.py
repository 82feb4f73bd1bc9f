"""INVALID indexes a failed or killed ``CREATE INDEX CONCURRENTLY`` left behind.

Contract: :func:`drop_leftovers` runs before each (re)try of a concurrent index
build and drops, with ``DROP INDEX CONCURRENTLY``, every INVALID index on the
statement's table that is that statement's leftover:

- an index of the statement's name (a named build), or
- an index with the statement's *definition* (an unnamed build names its index
  ``<table>_<columns>_idx``, then ``..._idx1`` beside a leftover, forever): same
  uniqueness, method, columns or expressions, ``INCLUDE`` list and predicate.

Definitions are compared as the server prints them (``pg_get_indexdef``): the
statement is built, inside a transaction that is rolled back, on an empty
temporary copy of the table (``CREATE TEMP TABLE ... (LIKE table)``), so casts,
parentheses and quoting come out the same on both sides. An index another
session is still building (``pg_stat_progress_create_index``) is left alone.
When the probe cannot run (no TEMP privilege, a lock timeout) only the name
counts.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from pgferry.migrate.statements import Statement

PROBE = "pgferry_index_probe"

_INVALID_SQL = """
SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid = to_regclass(%s) AND NOT i.indisvalid
  AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                  WHERE p.index_relid = i.indexrelid)
ORDER BY c.relname
"""
_DEF_RE = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON \S+ (USING .*)$", re.S)


def shape(indexdef: str) -> tuple[bool, str] | None:
    """``pg_get_indexdef`` without the index's and the table's names: (unique, the rest)."""
    m = _DEF_RE.match(indexdef.strip())
    return (bool(m.group(1)), m.group(2)) if m else None


def _probe_sql(stmt: Statement) -> str | None:
    """The statement as a plain CREATE INDEX on the probe table, or None."""
    import pglast
    from pglast import ast
    from pglast.stream import RawStream

    (raw,) = pglast.parse_sql(stmt.text)
    node = raw.stmt
    if not isinstance(node, ast.IndexStmt):
        return None
    node.concurrent, node.if_not_exists, node.idxname = False, False, f"{PROBE}_i"
    node.relation = ast.RangeVar(relname=PROBE, schemaname="pg_temp", inh=True, relpersistence="t")
    return str(RawStream()(node))


def _wanted_shape(
    conn: psycopg.Connection[Any], stmt: Statement, table: tuple[str, str]
) -> tuple[bool, str] | None:
    """The statement's definition as the server prints it (probe rolled back), or None."""
    probe = _probe_sql(stmt)
    if probe is None:
        return None
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(
                sql.SQL("CREATE TEMP TABLE {} (LIKE {})").format(
                    sql.Identifier(PROBE), sql.Identifier(*table)
                )
            )
            conn.execute(probe.encode())
            row = conn.execute(
                "SELECT pg_get_indexdef(%s::regclass)", [f"pg_temp.{PROBE}_i"]
            ).fetchone()
    except psycopg.Error:
        return None  # no TEMP privilege, a lock timeout ...: fall back to the name
    return shape(str(row[0])) if row else None


def drop_leftovers(conn: psycopg.Connection[Any], stmt: Statement) -> list[str]:
    """Drop the INVALID leftovers of ``stmt`` (see the module docstring); their names."""
    if stmt.index_table is None:
        return []
    rows = conn.execute(_INVALID_SQL, [stmt.index_table]).fetchall()
    if not rows:
        return []
    name = stmt.index_name[1] if stmt.index_name else None
    wanted: tuple[bool, str] | None = None
    if any(r[1] != name for r in rows):
        table = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
            [stmt.index_table],
        ).fetchone()
        if table is not None:
            wanted = _wanted_shape(conn, stmt, (str(table[0]), str(table[1])))
    dropped = []
    for schema, index, indexdef in rows:
        if index == name or (wanted is not None and shape(indexdef) == wanted):
            conn.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                    sql.Identifier(schema, index)
                )
            )
            dropped.append(f"{schema}.{index}")
    return dropped

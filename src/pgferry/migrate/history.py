"""The ``flyway_schema_history`` table: Flyway's exact layout, read and written.

Contract: :func:`ensure_table` creates the table exactly as Flyway does on
PostgreSQL (so Flyway can adopt a database pgferry migrated, and the other way
round); :func:`read` returns its rows as
:class:`~pgferry.migrate.history_rows.HistoryRow` ([] when the table is absent);
:func:`insert` appends a row with the next ``installed_rank``. Callers own the
transaction. Identifiers are always quoted with :mod:`psycopg.sql`.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from pgferry.migrate.history_rows import BASELINE as BASELINE
from pgferry.migrate.history_rows import BASELINE_SCRIPT as BASELINE_SCRIPT
from pgferry.migrate.history_rows import DELETE as DELETE
from pgferry.migrate.history_rows import SQL as SQL
from pgferry.migrate.history_rows import UNDO_SQL as UNDO_SQL
from pgferry.migrate.history_rows import HistoryRow as HistoryRow
from pgferry.migrate.history_rows import undo_row as undo_row


def _names(schema: str, table: str) -> dict[str, sql.Composable]:
    return {
        "schema": sql.Identifier(schema),
        "table": sql.Identifier(schema, table),
        "pk": sql.Identifier(f"{table}_pk"),
        "idx": sql.Identifier(f"{table}_s_idx"),
    }


def exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", [schema, table]
    ).fetchone()
    return row is not None


def elsewhere(conn: psycopg.Connection[Any], schema: str, table: str) -> list[str]:
    """When ``schema.table`` does not exist: tables named ``table`` with Flyway's history
    columns in other schemas (quoted ``"schema"."table"``), a history written with another
    default schema (see :func:`elsewhere_advice`)."""
    if exists(conn, schema, table):
        return []
    rows = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = %s AND n.nspname <> %s AND c.relkind IN ('r', 'p')"
        " AND (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND NOT"
        " a.attisdropped AND a.attname IN ('installed_rank', 'checksum', 'success')) = 3"
        " ORDER BY 1",
        [table, schema],
    ).fetchall()
    return [str(r[0]) for r in rows]


def elsewhere_advice(table: str, other: list[str]) -> str:
    """What to do about :func:`elsewhere`'s ``other`` histories when ``table`` is missing."""
    return (
        f"no {table}, but {', '.join(other)} exists: a migration history written with another "
        "default schema; set [migrate] schema to that schema, or, if it is another "
        "application's, start this one with `pgferry migrate baseline --version 0`"
    )


def ensure_table(conn: psycopg.Connection[Any], schema: str, table: str) -> None:
    """Create the history table (and its schema) as Flyway would, if it is missing."""
    if exists(conn, schema, table):
        return
    n = _names(schema, table)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {schema}").format(**n))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {table} (\n"
            '    "installed_rank" INT NOT NULL,\n'
            '    "version" VARCHAR(50),\n'
            '    "description" VARCHAR(200) NOT NULL,\n'
            '    "type" VARCHAR(20) NOT NULL,\n'
            '    "script" VARCHAR(1000) NOT NULL,\n'
            '    "checksum" INT,\n'
            '    "installed_by" VARCHAR(100) NOT NULL,\n'
            '    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),\n'
            '    "execution_time" INT NOT NULL,\n'
            '    "success" BOOLEAN NOT NULL\n'
            ")"
        ).format(**n)
    )
    conn.execute(
        sql.SQL('ALTER TABLE {table} ADD CONSTRAINT {pk} PRIMARY KEY ("installed_rank")').format(
            **n
        )
    )
    conn.execute(sql.SQL('CREATE INDEX {idx} ON {table} ("success")').format(**n))


def read(conn: psycopg.Connection[Any], schema: str, table: str) -> list[HistoryRow]:
    """All rows in ``installed_rank`` order; [] when the table does not exist."""
    if not exists(conn, schema, table):
        return []
    cur = conn.cursor(row_factory=class_row(HistoryRow)).execute(
        sql.SQL(
            "SELECT installed_rank, version, description, type, script, checksum, installed_by,"
            " installed_on, execution_time, success FROM {} ORDER BY installed_rank"
        ).format(sql.Identifier(schema, table))
    )
    return cur.fetchall()


def insert(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    *,
    version: str | None,
    description: str,
    type: str,
    script: str,
    checksum: int | None,
    installed_by: str,
    execution_time: int,
    success: bool,
) -> int:
    """Append one row; returns its installed_rank. Lock the table first: ranks are max+1."""
    t = sql.Identifier(schema, table)
    conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(t))
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {} (installed_rank, version, description, type, script, checksum,"
            " installed_by, execution_time, success)"
            " SELECT coalesce(max(installed_rank), 0) + 1, %s, %s, %s, %s, %s, %s, %s, %s FROM {}"
            " RETURNING installed_rank"
        ).format(t, t),
        [
            version,
            description[:200],
            type,
            script[:1000],
            checksum,
            installed_by[:100],
            execution_time,
            success,
        ],
    ).fetchone()
    assert row is not None
    return int(row[0])

"""``pgferry.migration_progress``: where a non-transactional file got to.

A file holding ``CREATE INDEX CONCURRENTLY`` and friends runs statement by
statement in autocommit mode, so a failure (or a SIGKILL) can leave it half
applied. The runner records, per file, the digests of the statements that
completed and, when one fails, which statement and why.

Layout (one row per history table and script; created with the rest of pgferry's
schema by :mod:`pgferry.pg.ownschema`)::

    CREATE TABLE pgferry.migration_progress (
        history_schema text, history_table text, script text,  -- primary key
        version text, checksum int,
        state text,              -- 'running' (or interrupted) | 'failed' | 'repaired'
        statements_total int,
        statements_done int,     -- how many leading statements completed
        done_digests text[],     -- digest of each completed statement (resume check)
        failed_statement int,    -- 1-based, NULL unless state = 'failed'
        failed_line int, error text,
        runner_pid int,          -- backend pid of the lock connection of the run
        updated_at timestamptz)

Protocol with ``migrate repair`` (and ``status``):

- A failed or interrupted file has a ``success = false`` row in the history
  table (the runner writes it; for an interrupted run, the next ``up`` writes
  it before refusing). ``up`` refuses while that row exists.
- ``repair`` deletes the failed history row and calls
  :func:`pgferry.migrate.runner.clear_progress` (``conn, cfg, scripts``), which
  marks those rows ``repaired`` and KEEPS the completed statements: the next
  ``up`` *resumes after* the ``statements_done`` completed statements (after
  checking their digests still match the file; an INVALID index left by a
  failed concurrent build is dropped first).
- To restart a file from its first statement instead, call :func:`forget`.
- :func:`read_progress` returns the rows (``[]`` when the table is absent);
  :func:`pgferry.migrate.runner.failed_statements` is the view ``status`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

TABLE = "pgferry.migration_progress"
INTERRUPTED = "interrupted: the pgferry process running it died"


@dataclass
class Progress:
    history_schema: str
    history_table: str
    script: str
    version: str | None
    checksum: int | None
    state: str
    statements_total: int
    statements_done: int
    done_digests: list[str]
    failed_statement: int | None
    failed_line: int | None
    error: str | None
    runner_pid: int | None
    updated_at: datetime

    def describe(self) -> str:
        if self.state == "failed" and self.failed_statement is None:
            return (
                f"{self.script}: all {self.statements_total} statements completed, then its "
                f"history row could not be written: {self.error}"
            )
        if self.state == "failed" and self.error == INTERRUPTED:
            return (
                f"{self.script}: interrupted at statement {self.failed_statement} of "
                f"{self.statements_total} ({self.statements_done} completed)"
            )
        if self.state == "failed":
            line = f" (line {self.failed_line})" if self.failed_line else ""
            return (
                f"{self.script}: statement {self.failed_statement} of "
                f"{self.statements_total}{line} failed: {self.error}; "
                f"{self.statements_done} completed"
            )
        return (
            f"{self.script}: interrupted after {self.statements_done} of "
            f"{self.statements_total} statements"
        )


def ensure(conn: psycopg.Connection[Any]) -> None:
    """pgferry's schema, this table included (:mod:`pgferry.pg.ownschema`); a journal
    trigger it had to re-create is journaled."""
    from pgferry import journal

    journal.ensure(conn)


def read_progress(conn: psycopg.Connection[Any], schema: str, table: str) -> list[Progress]:
    """Progress rows for this history table, by script ([] when none or no table)."""
    if conn.execute("SELECT to_regclass(%s)", [TABLE]).fetchone() == (None,):
        return []
    return (
        conn.cursor(row_factory=class_row(Progress))
        .execute(
            "SELECT history_schema, history_table, script, version, checksum, state,"
            " statements_total, statements_done, done_digests, failed_statement, failed_line,"
            " error, runner_pid, updated_at FROM pgferry.migration_progress"
            " WHERE history_schema = %s AND history_table = %s ORDER BY script",
            [schema, table],
        )
        .fetchall()
    )


def forget(
    conn: psycopg.Connection[Any], schema: str, table: str, script: str | None = None
) -> int:
    """Forget progress (all scripts, or one) so the file restarts from its first statement."""
    if conn.execute("SELECT to_regclass(%s)", [TABLE]).fetchone() == (None,):
        return 0
    cur = conn.execute(
        "DELETE FROM pgferry.migration_progress WHERE history_schema = %s"
        " AND history_table = %s AND (%s::text IS NULL OR script = %s)",
        [schema, table, script, script],
    )
    return cur.rowcount


def start(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    *,
    script: str,
    version: str | None,
    checksum: int,
    total: int,
    runner_pid: int,
) -> None:
    """Mark a file running (keeps completed statements of an earlier attempt)."""
    conn.execute(
        "INSERT INTO pgferry.migration_progress (history_schema, history_table, script, version,"
        " checksum, state, statements_total, runner_pid) VALUES (%s,%s,%s,%s,%s,'running',%s,%s)"
        " ON CONFLICT (history_schema, history_table, script) DO UPDATE SET state = 'running',"
        " checksum = excluded.checksum, statements_total = excluded.statements_total,"
        " runner_pid = excluded.runner_pid, failed_statement = NULL, failed_line = NULL,"
        " error = NULL, updated_at = clock_timestamp()",
        [schema, table, script, version, checksum, total, runner_pid],
    )


def mark_repaired(
    conn: psycopg.Connection[Any], schema: str, table: str, scripts: list[str]
) -> int:
    """The failure was cleared (``repair``): keep completed statements so ``up`` resumes."""
    if not scripts or conn.execute("SELECT to_regclass(%s)", [TABLE]).fetchone() == (None,):
        return 0
    cur = conn.execute(
        "UPDATE pgferry.migration_progress SET state = 'repaired', updated_at = clock_timestamp()"
        " WHERE history_schema = %s AND history_table = %s AND script = ANY(%s)",
        [schema, table, scripts],
    )
    return cur.rowcount


def step_done(
    conn: psycopg.Connection[Any], schema: str, table: str, script: str, digest: str
) -> None:
    conn.execute(
        "UPDATE pgferry.migration_progress SET statements_done = statements_done + 1,"
        " done_digests = done_digests || %s::text, updated_at = clock_timestamp()"
        " WHERE history_schema = %s AND history_table = %s AND script = %s",
        [digest, schema, table, script],
    )


def failed(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    script: str,
    *,
    statement: int | None,
    line: int | None,
    error: str,
) -> None:
    conn.execute(
        "UPDATE pgferry.migration_progress SET state = 'failed', failed_statement = %s,"
        " failed_line = %s, error = %s, updated_at = clock_timestamp()"
        " WHERE history_schema = %s AND history_table = %s AND script = %s",
        [statement, line, error[:2000], schema, table, script],
    )

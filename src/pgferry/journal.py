"""Append-only record of every operation, kept in the target database.

Contract: :func:`ensure` creates schema ``pgferry`` and table
``pgferry.journal`` (a trigger refuses UPDATE, DELETE and TRUNCATE, so even a
slip of the hand cannot rewrite history); :func:`append` adds one row on its
own autocommit connection, so the row survives the operation's rollback;
:func:`operation` wraps a command: it times it and appends the outcome, also
when it fails. Arguments and details are redacted before they are written.
pgferry itself never updates or deletes journal rows.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgferry.errors import PgferryError
from pgferry.pg.connect import Target, connect, os_user, redact

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS pgferry;
CREATE TABLE IF NOT EXISTS pgferry.journal (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    os_user     text        NOT NULL,
    db_role     text        NOT NULL DEFAULT current_user,
    env         text        NOT NULL,
    command     text        NOT NULL,
    arguments   jsonb       NOT NULL DEFAULT '{}',
    outcome     text        NOT NULL
                CHECK (outcome IN ('ok', 'problem', 'bad_input', 'failed', 'refused')),
    exit_code   integer     NOT NULL DEFAULT 0,
    duration_ms integer,
    details     jsonb       NOT NULL DEFAULT '{}'
);
CREATE OR REPLACE FUNCTION pgferry.journal_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'pgferry.journal is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER IF EXISTS journal_append_only ON pgferry.journal;
CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON pgferry.journal
    FOR EACH ROW EXECUTE FUNCTION pgferry.journal_append_only();
DROP TRIGGER IF EXISTS journal_no_truncate ON pgferry.journal;
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON pgferry.journal
    FOR EACH STATEMENT EXECUTE FUNCTION pgferry.journal_append_only();
"""

_SECRET_KEYS = ("password", "secret", "token", "key", "dsn", "url")
# A fixed key for the advisory lock that serializes creation of pgferry's schema.
_ENSURE_LOCK = 0x70676672


def ensure(conn: psycopg.Connection[Any]) -> None:
    """Create pgferry's schema and journal if missing (idempotent, safe under concurrency)."""
    exists = conn.execute(
        "SELECT 1 FROM pg_trigger WHERE tgname = 'journal_no_truncate'"
        " AND tgrelid = to_regclass('pgferry.journal')"
    ).fetchone()
    if exists:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_ENSURE_LOCK])
        conn.execute(SCHEMA_SQL)


def scrub(value: Any, key: str = "") -> Any:
    """``value`` with secrets removed: secret-looking keys masked, DSNs redacted."""
    if isinstance(value, Mapping):
        return {str(k): scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, key) for v in value]
    if isinstance(value, str):
        low = key.lower()
        if any(s in low for s in ("password", "secret", "token")) and value:
            return "***"
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def append(
    target: Target,
    command: str,
    *,
    outcome: str,
    arguments: Mapping[str, Any] | None = None,
    exit_code: int = 0,
    duration_ms: int | None = None,
    details: Mapping[str, Any] | None = None,
    conn: psycopg.Connection[Any] | None = None,
    create: bool = True,
) -> None:
    """Append one journal row to ``target`` (on ``conn`` if given, else a fresh one).

    ``create=False``: write only where the journal already exists (a read-only
    command such as ``verify`` never creates pgferry's schema).
    """
    own = conn is None
    c = conn or connect(target.dsn, autocommit=True, retry_for=5)
    try:
        if not create:
            if c.execute("SELECT to_regclass('pgferry.journal')").fetchone() == (None,):
                return
        else:
            ensure(c)
        c.execute(
            "INSERT INTO pgferry.journal (os_user, env, command, arguments, outcome, exit_code,"
            " duration_ms, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                os_user(),
                target.name,
                command,
                Jsonb(scrub(dict(arguments or {}))),
                outcome,
                exit_code,
                duration_ms,
                Jsonb(scrub(json.loads(json.dumps(dict(details or {}), default=str)))),
            ],
        )
    finally:
        if own:
            c.close()


@dataclass
class Operation:
    """What a journaled command fills in while it runs."""

    details: dict[str, Any] = field(default_factory=dict)
    outcome: str = "ok"
    exit_code: int = 0


@contextmanager
def operation(
    target: Target, command: str, arguments: Mapping[str, Any] | None = None, *,
    create: bool = True,
) -> Iterator[Operation]:
    """Time the block and journal its outcome in ``target``, also when it raises.

    ``create=False``: journal only where the journal already exists (see :func:`append`).
    """
    op = Operation()
    start = time.monotonic()
    try:
        yield op
    except PgferryError as e:
        op.outcome = {1: "problem", 2: "bad_input", 4: "refused"}.get(e.exit_code, "failed")
        op.exit_code = e.exit_code
        op.details.setdefault("error", e.message)
        for k, v in e.details.items():  # sqlstate, the server's detail and hint ...
            op.details.setdefault(k, v)
        raise
    except BaseException as e:
        op.outcome, op.exit_code = "failed", 3
        op.details.setdefault("error", redact(f"{type(e).__name__}: {e}"))
        raise
    finally:
        try:
            append(
                target,
                command,
                outcome=op.outcome,
                arguments=arguments,
                exit_code=op.exit_code,
                duration_ms=int((time.monotonic() - start) * 1000),
                details=op.details,
                create=create,
            )
        except (PgferryError, psycopg.Error) as e:
            print(f"warning: could not write the journal of {target.name}: "
                  f"{redact(str(e))}", file=sys.stderr)


def read(target: Target, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` journal rows of ``target``, newest first ([] when none yet)."""
    with connect(target.dsn, autocommit=True) as c:
        if c.execute("SELECT to_regclass('pgferry.journal')").fetchone() == (None,):
            return []
        cur = c.execute(
            "SELECT id, at, os_user, db_role, env, command, arguments, outcome, exit_code,"
            " duration_ms, details FROM pgferry.journal ORDER BY id DESC LIMIT %s",
            [limit],
        )
        cols = [d.name for d in cur.description or []]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

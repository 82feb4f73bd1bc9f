"""The journal's tables in the target: ``pgferry.journal_log`` and the view ``pgferry.journal``.

Contract:

- ``pgferry.journal_log`` is the evidence, append-only: one ``start`` row when a run
  begins and one ``end`` row (``run_id`` = the start row's id) when it ends, or one
  ``once`` row for something instantaneous (a refusal). Triggers refuse ``UPDATE``,
  ``DELETE`` and ``TRUNCATE``; a ``BEFORE INSERT`` trigger chains every row to the
  one before it: ``prev_hash`` is the previous row's ``row_hash``, and ``row_hash``
  is the SHA-256 of the row's fields in a fixed text form
  (:data:`pgferry.journal.chain.FIELDS`), taken under an advisory lock so
  concurrent writers chain one after the other.
- ``pgferry.journal`` is a view with one row per run (the layout the journal always
  had): a start row without its end row reads ``running`` while the run's session
  holds its advisory lock, and ``died`` once it does not (the process was killed or
  lost its connection).
- :func:`ensure` creates all of it (idempotent, serialized), re-creates a dropped or
  disabled trigger and journals that it did, and upgrades the earlier layout (a
  table ``pgferry.journal`` of finished runs) by moving its rows into the log, in
  order, as ``once`` rows.
"""

from __future__ import annotations

from typing import Any

import psycopg

#: the advisory lock (in the target) that serializes schema changes and chained inserts
CHAIN_LOCK = 1885824626  # 0x70676672, written out in SCHEMA_SQL
#: classid of the session advisory lock a running operation holds on (RUN_LOCK, start id)
RUN_LOCK = 1885825644  # 0x70676A6C, written out in VIEW_SQL
TRIGGERS = ("journal_append_only", "journal_chain", "journal_no_truncate")

# The SQL below is literal (the lock keys written out): no SQL is built from strings.
SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS pgferry;
CREATE TABLE IF NOT EXISTS pgferry.journal_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    phase       text        NOT NULL CHECK (phase IN ('start', 'end', 'once')),
    run_id      bigint,
    os_user     text        NOT NULL,
    db_role     text        NOT NULL DEFAULT session_user,
    env         text        NOT NULL,
    command     text        NOT NULL,
    arguments   jsonb       NOT NULL DEFAULT '{}',
    outcome     text        NOT NULL CHECK (outcome IN
                    ('running', 'ok', 'problem', 'bad_input', 'failed', 'refused')),
    exit_code   integer,
    duration_ms integer,
    error       text,
    details     jsonb       NOT NULL DEFAULT '{}',
    prev_hash   text        NOT NULL DEFAULT '',
    row_hash    text        NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS journal_log_run ON pgferry.journal_log (run_id)
    WHERE phase = 'end';
CREATE OR REPLACE FUNCTION pgferry.journal_field(v text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN v IS NULL THEN '-;'
                                        ELSE length(v) || ':' || v || ';' END $$;
CREATE OR REPLACE FUNCTION pgferry.journal_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'pgferry.journal_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE FUNCTION pgferry.journal_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE prev text;
BEGIN
    PERFORM pg_advisory_xact_lock(1885824626);  -- CHAIN_LOCK
    SELECT row_hash INTO prev FROM pgferry.journal_log ORDER BY id DESC LIMIT 1;
    NEW.prev_hash := coalesce(prev, '');
    -- the fields of pgferry.journal.chain.FIELDS, in that order
    NEW.row_hash := encode(sha256(convert_to(
        pgferry.journal_field(NEW.id::text)
        || pgferry.journal_field(to_char(NEW.at AT TIME ZONE 'UTC',
                                         'YYYY-MM-DD"T"HH24:MI:SS.US'))
        || pgferry.journal_field(NEW.phase)
        || pgferry.journal_field(NEW.run_id::text)
        || pgferry.journal_field(NEW.os_user)
        || pgferry.journal_field(NEW.db_role)
        || pgferry.journal_field(NEW.env)
        || pgferry.journal_field(NEW.command)
        || pgferry.journal_field(NEW.arguments::text)
        || pgferry.journal_field(NEW.outcome)
        || pgferry.journal_field(NEW.exit_code::text)
        || pgferry.journal_field(NEW.duration_ms::text)
        || pgferry.journal_field(NEW.error)
        || pgferry.journal_field(NEW.details::text)
        || pgferry.journal_field(NEW.prev_hash), 'UTF8')), 'hex');
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS journal_chain ON pgferry.journal_log;
CREATE TRIGGER journal_chain BEFORE INSERT ON pgferry.journal_log
    FOR EACH ROW EXECUTE FUNCTION pgferry.journal_chain();
DROP TRIGGER IF EXISTS journal_append_only ON pgferry.journal_log;
CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON pgferry.journal_log
    FOR EACH ROW EXECUTE FUNCTION pgferry.journal_append_only();
DROP TRIGGER IF EXISTS journal_no_truncate ON pgferry.journal_log;
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON pgferry.journal_log
    FOR EACH STATEMENT EXECUTE FUNCTION pgferry.journal_append_only();
"""

VIEW_SQL = """
CREATE OR REPLACE VIEW pgferry.journal AS
SELECT s.id, s.at, s.os_user, s.db_role, s.env, s.command, s.arguments,
       CASE WHEN s.phase = 'once' THEN s.outcome
            WHEN e.id IS NOT NULL THEN e.outcome
            WHEN r.running THEN 'running' ELSE 'died' END AS outcome,
       coalesce(e.exit_code, s.exit_code) AS exit_code,
       coalesce(e.duration_ms, s.duration_ms) AS duration_ms,
       coalesce(e.error, s.error, CASE WHEN s.phase = 'start' AND e.id IS NULL
                AND NOT r.running THEN 'the run ended without finishing: its process was '
                || 'killed or lost its connection' END) AS error,
       s.details || coalesce(e.details, '{}') AS details,
       e.at AS finished_at
FROM pgferry.journal_log s
LEFT JOIN pgferry.journal_log e ON e.phase = 'end' AND e.run_id = s.id
CROSS JOIN LATERAL (SELECT EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
      AND l.classid = 1885825644::oid  -- RUN_LOCK
      AND l.objid = (s.id % 2147483647)::oid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS running) r
WHERE s.phase IN ('start', 'once');
"""

_UPGRADE_SQL = """
ALTER TABLE pgferry.journal RENAME TO journal_before_chain;
"""
_IMPORT_SQL = """
INSERT INTO pgferry.journal_log (at, phase, os_user, db_role, env, command, arguments,
                                 outcome, exit_code, duration_ms, error, details)
SELECT at, 'once', os_user, db_role, env, command, arguments, outcome, exit_code,
       duration_ms, details->>'error', details
FROM pgferry.journal_before_chain ORDER BY id;
DROP TABLE pgferry.journal_before_chain;
"""

_STATE_SQL = """
SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('pgferry.journal')),
       to_regclass('pgferry.journal_log') IS NOT NULL,
       ARRAY(SELECT tgname::text FROM pg_trigger
             WHERE tgrelid = to_regclass('pgferry.journal_log') AND tgenabled IN ('O', 'A')
             ORDER BY 1)
"""


def state(conn: psycopg.Connection[Any]) -> tuple[str | None, bool, list[str]]:
    """(relkind of ``pgferry.journal``, whether the log exists, its enabled triggers)."""
    row = conn.execute(_STATE_SQL).fetchone()
    assert row is not None
    return row[0], bool(row[1]), list(row[2])


def exists(conn: psycopg.Connection[Any]) -> bool:
    """True when this database has a journal (any layout)."""
    kind, log, _ = state(conn)
    return kind is not None or log


def ensure(conn: psycopg.Connection[Any]) -> list[str]:
    """Create or repair the journal (autocommit ``conn``); the triggers it had to re-create."""
    kind, log, triggers = state(conn)
    if kind == "v" and log and tuple(triggers) == TRIGGERS:
        return []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK])
        kind, log, triggers = state(conn)  # again, under the lock
        if kind == "v" and log and tuple(triggers) == TRIGGERS:
            return []
        legacy = kind == "r"
        if legacy:
            conn.execute(_UPGRADE_SQL)
        conn.execute(SCHEMA_SQL)
        if legacy:
            conn.execute(_IMPORT_SQL)
        conn.execute(VIEW_SQL)
        return [t for t in TRIGGERS if t not in triggers] if log else []

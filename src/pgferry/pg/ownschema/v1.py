"""Version 1 of pgferry's schema: everything pgferry 0.1 kept in a target, in one step.

Contract: :func:`apply` creates what is missing (every statement is idempotent), so it
adopts a schema any earlier pgferry left, whatever commands had run there: the journal
(a hash-chained, append-only log and the view ``pgferry.journal``; the earlier layout, a
table ``pgferry.journal`` of finished runs, is moved into the log in order), migration
progress, sync state, dead letters, before-images and schema fingerprints. The SQL is
literal (the advisory lock keys written out): no SQL is built from strings.
"""

from __future__ import annotations

from typing import Any

import psycopg

#: the advisory lock that serializes schema changes and chained journal inserts
CHAIN_LOCK = 1885824626  # 0x70676672, written out in SCHEMA_SQL
#: classid of the session advisory lock a running operation holds on (RUN_LOCK, start id)
RUN_LOCK = 1885825644  # 0x70676A6C, written out in VIEW_SQL
#: the journal's triggers (a dropped or disabled one is re-created, and journaled)
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

PROGRESS_SQL = """
CREATE TABLE IF NOT EXISTS pgferry.migration_progress (
    history_schema   text NOT NULL,
    history_table    text NOT NULL,
    script           text NOT NULL,
    version          text,
    checksum         integer,
    state            text NOT NULL CHECK (state IN ('running', 'failed', 'repaired')),
    statements_total integer NOT NULL,
    statements_done  integer NOT NULL DEFAULT 0,
    done_digests     text[] NOT NULL DEFAULT '{}',
    failed_statement integer,
    failed_line      integer,
    error            text,
    runner_pid       integer,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (history_schema, history_table, script)
);
"""


SYNC_SQL = """
CREATE TABLE IF NOT EXISTS pgferry.sync_state (
    source        text        NOT NULL,
    table_name    text        NOT NULL,
    strategy      text        NOT NULL,
    watermark     text,
    inflight_xids bigint[]    NOT NULL DEFAULT '{}',
    checkpoint    jsonb,
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source, table_name, strategy)
);
CREATE TABLE IF NOT EXISTS pgferry.dead_letters (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id     text        NOT NULL,
    source     text        NOT NULL,
    table_name text        NOT NULL,
    key        jsonb       NOT NULL,
    row_data   jsonb       NOT NULL,
    error      text        NOT NULL,
    sqlstate   text        NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS pgferry.before_images (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id     text        NOT NULL,
    source     text        NOT NULL,
    table_name text        NOT NULL,
    action     text        NOT NULL CHECK (action IN ('insert', 'update', 'delete')),
    key        jsonb       NOT NULL,
    row_data   jsonb,
    after_hash text
);
CREATE INDEX IF NOT EXISTS before_images_run ON pgferry.before_images (run_id, table_name);
CREATE INDEX IF NOT EXISTS before_images_at ON pgferry.before_images (at);
"""

FINGERPRINT_SQL = """
CREATE TABLE IF NOT EXISTS pgferry.schema_fingerprint (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    version     text,
    fingerprint text        NOT NULL,
    objects     jsonb       NOT NULL
)
"""


def journal_kind(conn: psycopg.Connection[Any]) -> str | None:
    """relkind of ``pgferry.journal``: "v" (the view), "r" (the earlier table) or None."""
    row = conn.execute(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass('pgferry.journal')"
    ).fetchone()
    return row[0] if row else None


def apply(conn: psycopg.Connection[Any]) -> None:
    """Create or complete version 1 (in the caller's transaction, under its lock)."""
    legacy = journal_kind(conn) == "r"
    if legacy:
        conn.execute(_UPGRADE_SQL)
    conn.execute(SCHEMA_SQL)
    if legacy:
        conn.execute(_IMPORT_SQL)
    conn.execute(VIEW_SQL)
    conn.execute(PROGRESS_SQL)
    conn.execute(SYNC_SQL)
    conn.execute(FINGERPRINT_SQL)


def repair_journal(conn: psycopg.Connection[Any]) -> None:
    """Re-create the journal's functions and triggers (a dropped or disabled trigger)."""
    conn.execute(SCHEMA_SQL)

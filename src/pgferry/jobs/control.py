"""The control database: the admin service's own state, apart from every environment.

Contract: :func:`target` resolves ``[control]`` (``url``, else the database
``[control] database`` on the embedded server) to a :class:`~pgferry.pg.connect.Target`;
:class:`Control` holds a small connection pool on it and :meth:`Control.ensure`
creates, idempotently and under an advisory lock, procrastinate's schema (the job
queue, in ``public``) and pgferry's tables in schema ``pgferry_control``: tokens and
sessions, runs with their events (and the runs' version, bumped by a trigger whenever a
run row changes: :mod:`pgferry.jobs.runs_version`), saga steps and circuit breakers.
Everything runs as the control database's own (non-superuser) role. The control journal
(who was refused, tokens made and revoked) is pgferry's ordinary hash-chained journal
(:mod:`pgferry.journal`) in this database.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from pgferry.config import Config
from pgferry.errors import BadInput
from pgferry.pg.connect import Target, connect, parse_dsn, redact
from pgferry.redaction import register_dsn

#: the advisory lock under which the schema is created (two processes starting at once)
SCHEMA_LOCK = 7_140_014
#: seconds a caller waits for a pooled connection before the control database counts as
#: not answering
POOL_WAIT_S = 5.0

DDL = """
CREATE SCHEMA IF NOT EXISTS pgferry_control;
CREATE TABLE IF NOT EXISTS pgferry_control.tokens (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    role text NOT NULL CHECK (role IN ('viewer', 'operator', 'approver', 'admin')),
    hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_live_name ON pgferry_control.tokens (name)
    WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS pgferry_control.sessions (
    hash text PRIMARY KEY,
    token_id bigint NOT NULL REFERENCES pgferry_control.tokens (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS pgferry_control.runs (
    id text PRIMARY KEY,
    kind text NOT NULL,
    env text NOT NULL,
    arguments jsonb NOT NULL,
    state text NOT NULL,
    requested_by text NOT NULL,
    requested_from text,
    plan jsonb,
    plan_hash text,
    approved_by text,
    approved_at timestamptz,
    decided_reason text,
    idempotency_key text UNIQUE,
    request_hash text,
    job_id bigint,
    attempts int NOT NULL DEFAULT 0,
    schedule text,
    result jsonb,
    error text,
    exit_code int,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS runs_newest ON pgferry_control.runs (created_at DESC, id);
CREATE INDEX IF NOT EXISTS runs_state ON pgferry_control.runs (state);
CREATE TABLE IF NOT EXISTS pgferry_control.run_events (
    seq bigserial PRIMARY KEY,
    run_id text NOT NULL REFERENCES pgferry_control.runs (id) ON DELETE CASCADE,
    type text NOT NULL,
    data jsonb NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS run_events_run ON pgferry_control.run_events (run_id, seq);
CREATE TABLE IF NOT EXISTS pgferry_control.saga_steps (
    run_id text NOT NULL REFERENCES pgferry_control.runs (id) ON DELETE CASCADE,
    idx int NOT NULL,
    name text NOT NULL,
    state text NOT NULL,
    result jsonb,
    compensation jsonb,
    started_at timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (run_id, idx)
);
-- the runs' version: one row, bumped in the transaction of every statement that changes
-- runs (whichever process or session it is), so a reader that sees the same version as
-- before knows no run changed since; epoch tells a re-created table from the old one
CREATE TABLE IF NOT EXISTS pgferry_control.runs_version (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    epoch uuid NOT NULL DEFAULT gen_random_uuid(),
    v bigint NOT NULL DEFAULT 0
);
INSERT INTO pgferry_control.runs_version DEFAULT VALUES ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION pgferry_control.runs_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pgferry_control.runs_version SET v = v + 1;
    RETURN NULL;
END $$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgname = 'runs_changed'
                   AND tgrelid = 'pgferry_control.runs'::regclass) THEN
        CREATE TRIGGER runs_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
            ON pgferry_control.runs FOR EACH STATEMENT
            EXECUTE FUNCTION pgferry_control.runs_changed();
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS pgferry_control.breakers (
    env text PRIMARY KEY,
    failures int NOT NULL DEFAULT 0,
    opened_at timestamptz,
    last_error text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


def target(cfg: Config) -> Target:
    """The control database as a :class:`Target` (the embedded server starts lazily)."""
    url = cfg.control.url
    if url:
        dsn = cfg.resolve(url, "control.url")
        register_dsn(dsn)
        if not dsn.strip():
            raise BadInput("control.url is empty")
        parse_dsn(dsn)
        return Target("control", dsn, protected=False, embedded=False)
    database = cfg.control.database

    def start() -> str:
        from pgferry.pg import embedded

        return embedded.ensure_database(
            cfg.embedded_dir, database, idle_stop=0
        )  # the service keeps its server up

    return Target("control", None, protected=False, embedded=True, start=start)


def _has_procrastinate(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
    return bool(row and row[0])


def ensure_schema(dsn: str) -> None:
    """Create procrastinate's schema and pgferry's tables where missing (idempotent)."""
    from procrastinate.schema import SchemaManager

    with connect(dsn, autocommit=True, application_name="pgferry control") as c:
        with c.transaction():
            c.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK])
            if not _has_procrastinate(c):
                c.execute(SchemaManager.get_schema())
            c.execute(DDL)


class Control:
    """A pool of connections to the control database (thread-safe)."""

    def __init__(self, cfg: Config, *, max_size: int = 8) -> None:
        self.cfg = cfg
        self.target = target(cfg)
        self._pool: ConnectionPool[Any] | None = None
        self._max = max_size
        self._lock = threading.Lock()

    @property
    def dsn(self) -> str:
        return self.target.dsn

    def ensure(self) -> Control:
        ensure_schema(self.dsn)
        return self

    @property
    def pool(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.dsn,
                    min_size=1,
                    max_size=self._max,
                    # a request waits this long for a connection, then Unreachable (503);
                    # not psycopg_pool's 30 s while the control database refuses
                    timeout=POOL_WAIT_S,
                    open=True,
                    kwargs={
                        "autocommit": True,
                        "application_name": "pgferry service",
                        "row_factory": dict_row,
                    },
                )
            return self._pool

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled autocommit connection whose rows are dicts."""
        try:
            with self.pool.connection() as c:
                yield c
        except psycopg.OperationalError as e:
            from pgferry.errors import Unreachable

            self._drop_broken()
            raise Unreachable(
                f"the control database does not answer: "
                f"{redact(str(e)).splitlines()[0] if str(e) else e}"
            ) from None

    def unanswered(self, timeout_s: float = 2.0) -> str | None:
        """Why the control database does not answer now (one sentence, no password), or
        None when it does: one connection of its own, bounded by ``timeout_s``."""
        try:
            with psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=max(1, round(timeout_s)),
                application_name="pgferry control probe",
            ) as c:
                c.execute("SELECT 1")
        except psycopg.Error as e:
            text = redact(str(e)).strip()
            # libpq's first line says which socket or host; the reason is the last FATAL
            fatal = [line for line in text.splitlines() if "FATAL:" in line]
            why = (fatal[-1].split("FATAL:", 1)[1] if fatal else text.splitlines()[0]).strip()
            return why or type(e).__name__
        return None

    def _drop_broken(self) -> None:
        """After a connection failed: the pool's other idle connections are tested and the
        broken ones replaced (a control database that restarted ended them all; else each
        would fail one request before the pool noticed)."""
        with self._lock:
            pool = self._pool
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.check()

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool, waiting up to ``timeout`` seconds for its background workers."""
        with self._lock:
            if self._pool is not None:
                self._pool.close(timeout)
                self._pool = None

"""Version 2 of pgferry's schema: what a backfill remembers (``pgferry backfill run``).

Contract: :func:`apply` creates ``pgferry.backfill_state`` (one checkpoint row per backfill
and scope) and ``pgferry.backfill_images`` (each batch's rows before and after, for a
revert); every statement is idempotent, so it also adopts the tables an earlier pgferry
made before they were versioned. Their use: :mod:`pgferry.backfill.state`.
"""

from __future__ import annotations

from typing import Any

import psycopg

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS pgferry.backfill_state (
    name          text        NOT NULL,
    scope         text        NOT NULL DEFAULT '',
    checksum      text        NOT NULL,
    table_name    text        NOT NULL,
    key_column    text        NOT NULL,
    status        text        NOT NULL
                  CHECK (status IN ('running', 'stopped', 'completed', 'reverted', 'failed')),
    last_key      text,
    end_key       text,
    batches       integer     NOT NULL DEFAULT 0,
    rows          bigint      NOT NULL DEFAULT 0,
    keys          bigint      NOT NULL DEFAULT 0,
    estimate      bigint,
    batch_size    integer,
    run_id        text,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at  timestamptz,
    error         text,
    PRIMARY KEY (name, scope)
);
CREATE TABLE IF NOT EXISTS pgferry.backfill_images (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    name    text        NOT NULL,
    scope   text        NOT NULL,
    run_id  text        NOT NULL,
    batch   integer     NOT NULL,
    key     jsonb       NOT NULL,
    before  jsonb       NOT NULL,
    after   jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS backfill_images_batch
    ON pgferry.backfill_images (name, scope, batch);
CREATE INDEX IF NOT EXISTS backfill_images_at ON pgferry.backfill_images (at);
"""


def apply(conn: psycopg.Connection[Any]) -> None:
    """Create or complete version 2 (in the caller's transaction, under its lock)."""
    conn.execute(SCHEMA_SQL)

"""What a sync remembers inside the target: watermarks, checkpoints and dead letters.

Contract: :func:`ensure` creates ``pgferry.sync_state``, ``pgferry.dead_letters``,
``pgferry.before_images`` and ``pgferry.set_aside`` (:mod:`pgferry.sync.aside`)
(idempotent). State rows are keyed by the source
environment and ``schema.table``; they are written on the *same connection and
transaction* as the batch they describe, so a checkpoint or watermark is
stored if and only if its batch committed. Dead letters are rows the target
refused (constraint violation, bad value) with the error and SQLSTATE; a later
successful sync of the same key does not remove them (they are a record).
Before-images are the rows a sync changed on the target, as they were, so
``sync revert`` can put them back (:mod:`pgferry.sync.revert`);
:func:`expire_images` drops those older than ``[sync] keep_before_images_for``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgferry import journal

SCHEMA_SQL = """
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

_LOCK = 0x70677374


def ensure(conn: psycopg.Connection[Any]) -> None:
    """Create the journal, ``sync_state`` and ``dead_letters`` if missing (autocommit conn)."""
    from pgferry.sync.aside import SCHEMA_SQL as ASIDE_SQL

    journal.ensure(conn)
    if conn.execute("SELECT to_regclass('pgferry.set_aside') IS NOT NULL").fetchone() == (
        True,
    ):
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
        conn.execute(SCHEMA_SQL)
        conn.execute(ASIDE_SQL)


@dataclass
class Mark:
    """A table's stored incremental state."""

    watermark: str | None = None
    inflight_xids: list[int] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None


def read(conn: psycopg.Connection[Any], source: str, table: str, strategy: str) -> Mark:
    row = conn.execute(
        "SELECT watermark, inflight_xids, checkpoint FROM pgferry.sync_state"
        " WHERE source = %s AND table_name = %s AND strategy = %s",
        [source, table, strategy],
    ).fetchone()
    if row is None:
        return Mark()
    return Mark(row[0], list(row[1] or []), row[2])


def write(conn: psycopg.Connection[Any], source: str, table: str, strategy: str,
          mark: Mark) -> None:
    """Upsert the state row (call inside the batch's transaction)."""
    conn.execute(
        "INSERT INTO pgferry.sync_state (source, table_name, strategy, watermark, inflight_xids,"
        " checkpoint) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (source, table_name, strategy) DO UPDATE SET watermark = excluded.watermark,"
        " inflight_xids = excluded.inflight_xids, checkpoint = excluded.checkpoint,"
        " updated_at = clock_timestamp()",
        [source, table, strategy, mark.watermark, mark.inflight_xids,
         Jsonb(mark.checkpoint) if mark.checkpoint is not None else None],
    )


def expire_images(conn: psycopg.Connection[Any], older_than_s: float) -> int:
    """Delete before-images older than ``older_than_s`` seconds; how many went."""
    cur = conn.execute("DELETE FROM pgferry.before_images"
                       " WHERE at < clock_timestamp() - %s * interval '1 second'", [older_than_s])
    return max(cur.rowcount, 0)

"""What a sync remembers inside the target: watermarks, checkpoints and dead letters.

Contract: ``pgferry.sync_state``, ``pgferry.dead_letters``,
``pgferry.before_images`` and ``pgferry.set_aside`` (:mod:`pgferry.sync.aside`) are part
of pgferry's schema (:mod:`pgferry.pg.ownschema`);
:func:`ensure` brings it to its version. State rows are keyed by the source
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


def ensure(conn: psycopg.Connection[Any]) -> None:
    """Create (or upgrade) pgferry's schema, ``sync_state`` and ``dead_letters`` included
    (autocommit conn); journals a journal trigger it had to re-create."""
    journal.ensure(conn)


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


def write(
    conn: psycopg.Connection[Any], source: str, table: str, strategy: str, mark: Mark
) -> None:
    """Upsert the state row (call inside the batch's transaction)."""
    conn.execute(
        "INSERT INTO pgferry.sync_state (source, table_name, strategy, watermark, inflight_xids,"
        " checkpoint) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (source, table_name, strategy) DO UPDATE SET watermark = excluded.watermark,"
        " inflight_xids = excluded.inflight_xids, checkpoint = excluded.checkpoint,"
        " updated_at = clock_timestamp()",
        [
            source,
            table,
            strategy,
            mark.watermark,
            mark.inflight_xids,
            Jsonb(mark.checkpoint) if mark.checkpoint is not None else None,
        ],
    )


def expire_images(conn: psycopg.Connection[Any], older_than_s: float) -> int:
    """Delete before-images older than ``older_than_s`` seconds; how many went."""
    cur = conn.execute(
        "DELETE FROM pgferry.before_images WHERE at < clock_timestamp() - %s * interval '1 second'",
        [older_than_s],
    )
    return max(cur.rowcount, 0)

"""What a backfill remembers inside the target: ``pgferry.backfill_state`` and its images.

Contract:

- :func:`ensure` makes sure ``pgferry.backfill_state`` and ``pgferry.backfill_images``
  exist: they are version 2 of pgferry's own schema (:mod:`pgferry.pg.ownschema.v2`),
  created with the journal by :func:`pgferry.journal.ensure`.
- One state row per backfill and scope (the ``--where`` text; ``''`` is the whole table).
  The checkpoint (``last_key``, ``batches``, ``rows``) is written on the *same
  transaction* as the batch it describes, so after a crash the checkpoint names exactly
  the batches that committed: a resumed run loses none and repeats none.
- ``backfill_images`` holds, per batch, each changed row's key with the changed columns
  as they were (``before``) and as the batch left them (``after``), so a revert puts back
  only rows nobody changed since (:mod:`pgferry.backfill.images`).
- Keys are kept as text (``last_key``, ``end_key``) and handed back to the server as
  untyped parameters, which it reads as the key column's type.
- :func:`read` returns the state (None when the backfill never ran here, or the table does
  not exist yet: a read-only caller never creates it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from pgferry import journal


@dataclass
class BackfillState:
    name: str
    scope: str
    checksum: str
    table_name: str
    key_column: str
    status: str
    last_key: str | None
    end_key: str | None
    batches: int
    rows: int
    keys: int
    estimate: int | None
    batch_size: int | None
    run_id: str | None
    started_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        """One phrase: ``completed 2026-11-22 10:00 (12,000 rows in 3 batches)``."""
        done = f"{self.rows:,} rows in {self.batches:,} batch{'es' if self.batches != 1 else ''}"
        if self.status == "completed" and self.completed_at is not None:
            return f"completed {self.completed_at:%Y-%m-%d %H:%M} ({done})"
        of = f" of ~{self.estimate:,} keys" if self.estimate else ""
        return f"{self.status}: {self.keys:,} keys{of} done, {done}"


def exists(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('pgferry.backfill_images') IS NOT NULL").fetchone()
    return bool(row and row[0])


def ensure(conn: psycopg.Connection[Any]) -> None:
    """pgferry's schema at its newest version: the journal and the backfill tables
    (autocommit ``conn``)."""
    journal.ensure(conn)


_SELECT = (
    "SELECT name, scope, checksum, table_name, key_column, status, last_key, end_key,"
    " batches, rows, keys, estimate, batch_size, run_id, started_at, updated_at,"
    " completed_at, error FROM pgferry.backfill_state"
)


def read(conn: psycopg.Connection[Any], name: str, scope: str = "") -> BackfillState | None:
    """The state of backfill ``name`` (and scope), None when it never ran here."""
    if not exists(conn):
        return None
    row = conn.execute(_SELECT + " WHERE name = %s AND scope = %s", [name, scope]).fetchone()
    return BackfillState(*row) if row else None


def read_all(conn: psycopg.Connection[Any]) -> list[BackfillState]:
    if not exists(conn):
        return []
    return [BackfillState(*r) for r in conn.execute(_SELECT + " ORDER BY name, scope")]


def completed(conn: psycopg.Connection[Any], name: str) -> BackfillState | None:
    """The whole-table run of ``name`` when it completed here, else None."""
    st = read(conn, name, "")
    return st if st is not None and st.status == "completed" else None

"""The migration lock and lock diagnostics.

Contract:

- :class:`MigrationLock` holds a *session* advisory lock on a dedicated
  autocommit connection for a whole run. It is taken with
  ``pg_try_advisory_lock`` in a loop (so waiting never queues behind anything),
  up to ``wait`` seconds, then :class:`~pgferry.errors.LockUnavailable` names
  the holder's pid and application name. Between its own short queries the
  connection is *idle*, never idle-in-transaction, so it holds no snapshot and
  ``CREATE INDEX CONCURRENTLY`` on another connection does not wait for it.
  A dead client's session lock goes away with its backend.
- :func:`lock_key` derives the key from the history table's schema and name
  exactly as Flyway does on PostgreSQL (``pg_try_advisory_lock`` of "Flyway" +
  the Java hash of ``"schema"."table"``): a Flyway run and a pgferry run on the
  same database exclude each other, and different history tables do not.
- :class:`LockWatcher` (:mod:`pgferry.pg.lockwatch`, which the backfill runner shares;
  re-exported here) samples, from the lock connection, which lock a work
  backend is waiting for and which backends block it (``pg_blocking_pids``),
  so a lock timeout can say *what* it could not get and *who* held it. An
  autovacuum worker is named as such, also to a role that may not read other
  sessions (see ``_BLOCKER_SQL``); the runner then waits past
  ``deadlock_timeout`` on the next attempt, the point at which the server
  cancels autovacuum for a lock waiter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from tenacity import (
    Retrying,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

from pgferry.errors import LockUnavailable
from pgferry.pg.connect import connect, map_db_error
from pgferry.pg.lockwatch import AUTOVACUUM as AUTOVACUUM
from pgferry.pg.lockwatch import LockWatcher as LockWatcher
from pgferry.pg.lockwatch import Waiting as Waiting

WORK_APP_PREFIX = "pgferry-migrate-work"


#: Flyway's PostgreSQL advisory lock base: the bytes of "Flyway"
FLYWAY_LOCK_MAGIC = (0x46 << 40) + (0x6C << 32) + (0x79 << 24) + (0x77 << 16) + (0x61 << 8) + 0x79


def _java_hash(text: str) -> int:
    """Java's ``String.hashCode()`` (UTF-16 code units, signed 32-bit)."""
    h = 0
    units = text.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= (1 << 31) else h


def lock_key(schema: str, table: str) -> int:
    """The advisory lock key Flyway uses for this history table, so the two tools exclude
    each other: the magic number plus the Java hash of ``"schema"."table"``."""
    quoted = ".".join('"' + p.replace('"', '""') + '"' for p in (schema, table))
    return FLYWAY_LOCK_MAGIC + _java_hash(quoted)


def work_app_name(key: int) -> str:
    """application_name of work connections; lets a new run find an interrupted run's backends."""
    return f"{WORK_APP_PREFIX}:{key & 0xFFFFFFFF:08x}"


_HOLDER_SQL = """
SELECT l.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''),
       coalesce(a.client_addr::text, 'local'), a.backend_start
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid
"""


@dataclass
class Holder:
    pid: int
    application_name: str
    user: str
    client: str

    def __str__(self) -> str:
        app = self.application_name or "no application_name"
        return f"pid {self.pid} ({app}, user {self.user}, from {self.client})"


class MigrationLock:
    """A session advisory lock on its own connection (use as a context manager)."""

    def __init__(self, dsn: str, key: int, *, wait: float, application_name: str) -> None:
        self.dsn, self.key, self.wait, self.app = dsn, key, wait, application_name
        self.conn: psycopg.Connection[Any] | None = None
        self.waited = 0.0

    def holders(self) -> list[Holder]:
        assert self.conn is not None
        u = self.key & 0xFFFFFFFFFFFFFFFF
        rows = self.conn.execute(_HOLDER_SQL, [u >> 32, u & 0xFFFFFFFF]).fetchall()
        return [Holder(r[0], r[1], r[2], r[3]) for r in rows]

    def _try(self) -> bool:
        assert self.conn is not None
        got = self.conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key]).fetchone()
        return bool(got and got[0])

    def acquire(self) -> None:
        self.conn = connect(self.dsn, autocommit=True, application_name=self.app)
        start = time.monotonic()
        try:
            if self.conn.info.server_version >= 140000:
                # a hosted server's idle_session_timeout must not end this session (and the
                # lock) while a long statement runs on the work connection
                self.conn.execute("SELECT set_config('idle_session_timeout', '0', false)")
            # try again after 50 ms, then 1.5x longer each time (at most 1 s), for `wait` s
            tries = Retrying(
                retry=retry_if_result(lambda got: not got),
                wait=wait_exponential(multiplier=0.05, exp_base=1.5, max=1.0),
                stop=stop_after_delay(self.wait),
                retry_error_callback=lambda _state: False,
            )
            if tries(self._try):
                self.waited = time.monotonic() - start
                return
            holders = self.holders()
            who = ", ".join(str(h) for h in holders) or "a session that just ended"
            raise LockUnavailable(
                f"another migration run holds the migration lock: {who}; "
                f"waited {self.wait:g}s (raise [migrate] lock_wait to wait longer)",
                holders=[h.__dict__ for h in holders],
            )
        except psycopg.Error as e:
            self.release()
            raise map_db_error(e, "while taking the migration lock") from None
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self.conn is None:
            return
        try:
            if not self.conn.closed:
                self.conn.execute("SELECT pg_advisory_unlock(%s)", [self.key])
        except psycopg.Error:
            pass  # closing the session releases it anyway
        finally:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> MigrationLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def terminate_orphans(conn: psycopg.Connection[Any], key: int, own_pids: set[int]) -> list[int]:
    """Terminate work backends of an interrupted run (we hold the lock, so they are orphans).

    A SIGKILLed pgferry leaves its work backend running until the server notices
    the dead client; its locks (or a half-built index) would get in our way.
    Returns the pids terminated, after waiting up to 10s for them to go.
    """
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = %s AND pid <> ALL(%s)",
        [work_app_name(key), list(own_pids)],
    ).fetchall()
    pids = [r[0] for r in rows]
    for pid in pids:
        conn.execute("SELECT pg_terminate_backend(%s)", [pid])

    def left() -> int:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
        ).fetchone()
        return int(row[0]) if row else 0

    if pids:  # until the server no longer lists them (at most 10 s)
        Retrying(
            retry=retry_if_result(lambda n: n > 0),
            wait=wait_fixed(0.05),
            stop=stop_after_delay(10),
            retry_error_callback=lambda _state: 0,
        )(left)
    return pids

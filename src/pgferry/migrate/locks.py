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
- :class:`LockWatcher` samples, from the lock connection, which lock a work
  backend is waiting for and which backends block it (``pg_blocking_pids``),
  so a lock timeout can say *what* it could not get and *who* held it. An
  autovacuum worker is named as such, also to a role that may not read other
  sessions (see ``_BLOCKER_SQL``); the runner then waits past
  ``deadlock_timeout`` on the next attempt, the point at which the server
  cancels autovacuum for a lock waiter.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
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

WORK_APP_PREFIX = "pgferry-migrate-work"


#: Flyway's PostgreSQL advisory lock base: the bytes of "Flyway"
FLYWAY_LOCK_MAGIC = (0x46 << 40) + (0x6C << 32) + (0x79 << 24) + (0x77 << 16) + (0x61 << 8) + 0x79


def _java_hash(text: str) -> int:
    """Java's ``String.hashCode()`` (UTF-16 code units, signed 32-bit)."""
    h = 0
    units = text.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[i:i + 2], "big")) & 0xFFFFFFFF
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
            tries = Retrying(retry=retry_if_result(lambda got: not got),
                             wait=wait_exponential(multiplier=0.05, exp_base=1.5, max=1.0),
                             stop=stop_after_delay(self.wait),
                             retry_error_callback=lambda _state: False)
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


@dataclass
class Waiting:
    """What a work backend was seen waiting for."""

    relation: str | None
    mode: str
    locktype: str
    blockers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def autovacuum(self) -> bool:
        """True when an autovacuum worker is among the blockers (the server cancels it for a
        waiter, but only after the waiter has waited ``deadlock_timeout``)."""
        return any(b.get("backend_type") == AUTOVACUUM for b in self.blockers)

    def describe(self) -> str:
        what = f"{self.mode} on {self.relation}" if self.relation else f"a {self.locktype} lock"
        if not self.blockers:
            return what
        return f"{what}, held by " + "; ".join(_blocker(b) for b in self.blockers)


AUTOVACUUM = "autovacuum worker"


def _blocker(b: dict[str, Any]) -> str:
    """One blocking backend in words; another role's session shows only what the server shows
    us (its query is '<insufficient privilege>')."""
    if b.get("backend_type") == AUTOVACUUM:
        query = b.get("query") or ""
        on = f" ({query[:80]})" if query.startswith("autovacuum:") else ""
        return f"pid {b['pid']}, an autovacuum worker{on}"
    parts = [b.get("application_name") or "no application_name"]
    if b.get("user"):
        parts.append(f"user {b['user']}")
    if b.get("state"):
        parts.append(str(b["state"]))
    query = b.get("query") or ""
    if query and query != "<insufficient privilege>":
        parts.append(repr(query[:80]))
    return f"pid {b['pid']} ({', '.join(parts)})"


_WAIT_SQL = """
SELECT CASE WHEN l.relation IS NOT NULL THEN l.relation::regclass::text END, l.mode, l.locktype,
       pg_blocking_pids(l.pid)
FROM pg_locks l WHERE l.pid = %s AND NOT l.granted LIMIT 1
"""
# backend_type is hidden from roles without pg_read_all_stats, but an autovacuum worker still
# shows: its pid is in pg_stat_progress_vacuum/analyze, and its session user (readable by
# everyone through pg_stat_get_backend_userid) is 0, where a manual VACUUM has a role.
_BLOCKER_SQL = """
SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), coalesce(a.query, ''),
       coalesce(a.usename::text, ''),
       coalesce(a.backend_type,
                CASE WHEN (a.pid IN (SELECT pid FROM pg_stat_progress_vacuum)
                           OR a.pid IN (SELECT pid FROM pg_stat_progress_analyze))
                      AND (SELECT pg_stat_get_backend_userid(s) FROM pg_stat_get_backend_idset() s
                           WHERE pg_stat_get_backend_pid(s) = a.pid) = 0
                     THEN 'autovacuum worker' END, '')
FROM pg_stat_activity a WHERE a.pid = ANY(%s)
"""


class LockWatcher:
    """While a statement runs, sample what the work backend waits for (on ``conn``)."""

    def __init__(self, conn: psycopg.Connection[Any], pid: int, interval: float) -> None:
        self.conn, self.pid, self.interval = conn, pid, max(interval, 0.02)
        self.seen: Waiting | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        row = self.conn.execute(_WAIT_SQL, [self.pid]).fetchone()
        if row is None:
            return
        blockers = []
        if row[3]:
            for b in self.conn.execute(_BLOCKER_SQL, [list(row[3])]).fetchall():
                blockers.append({"pid": b[0], "application_name": b[1], "state": b[2],
                                 "query": b[3], "user": b[4], "backend_type": b[5]})
        self.seen = Waiting(row[0], row[1], row[2], blockers)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except psycopg.Error:
                return

    def __enter__(self) -> LockWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
                           [pids]).fetchone()
        return int(row[0]) if row else 0

    if pids:  # until the server no longer lists them (at most 10 s)
        Retrying(retry=retry_if_result(lambda n: n > 0), wait=wait_fixed(0.05),
                 stop=stop_after_delay(10), retry_error_callback=lambda _state: 0)(left)
    return pids

"""Who blocks a session: sampling ``pg_locks`` while a statement waits for a lock.

Contract: :class:`LockWatcher` samples, from a second connection, which lock a work
backend waits for and which backends hold it (``pg_blocking_pids``), every ``interval``
seconds while its ``with`` block runs; :attr:`LockWatcher.seen` is the last
:class:`Waiting` it saw (None when the backend never waited). The migration runner and the
backfill runner name the blocker with it when their lock retries run out. An autovacuum
worker is named as such even to a role that may not read other sessions.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg


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
                blockers.append(
                    {
                        "pid": b[0],
                        "application_name": b[1],
                        "state": b[2],
                        "query": b[3],
                        "user": b[4],
                        "backend_type": b[5],
                    }
                )
        self.seen = Waiting(row[0], row[1], row[2], blockers)

    def _run(self) -> None:
        # a first look soon after the start, then every interval: a statement that waits
        # from its start for a lock it times out on after a few intervals was sometimes
        # never sampled on a loaded machine, and its lock timeout could not name the holder
        # (every 50 ms during the first interval, then every interval)
        start, wait = time.monotonic(), min(self.interval, 0.02)
        while not self._stop.wait(wait):
            try:
                self._sample()
            except psycopg.Error:
                return
            early = self.seen is None and time.monotonic() - start < self.interval
            wait = min(self.interval, 0.05) if early else self.interval

    def __enter__(self) -> LockWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

"""One sync at a time into a target table: session advisory locks held for the whole run.

Contract: :func:`acquire` opens a connection to the target named after the run
(``pgferry sync <run id> pid <os pid>``) and takes, in sorted order (so two
runs cannot deadlock), a session-level advisory lock per table the run writes
(``pg_advisory_lock(0x70677379, hashtext('schema.table'))``). A second run
into any of those tables waits up to ``[sync] lock_wait``, then fails with
:class:`~pgferry.errors.LockUnavailable` (exit 3) naming the run that holds
it: its application name (run id and pid) and when its session started. The
locks go when the connection closes (:meth:`RunLock.close`, or the process's
death): nothing to clean up after a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psycopg

from pgferry.errors import LockUnavailable
from pgferry.pg.connect import Target, connect

#: the advisory lock class of sync runs ('pgsy')
NAMESPACE = 0x70677379

_HOLDER = """
SELECT a.pid, coalesce(nullif(a.application_name, ''), 'another session'),
       to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
      SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %s::bigint::oid AND l.objid = (%s::bigint & 4294967295)::oid
  AND l.objsubid = 2
LIMIT 1
"""


@dataclass
class RunLock:
    conn: psycopg.Connection[Any]

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg.Error:
            pass


def acquire(target: Target, tables: list[str], wait_s: float, run_id: str) -> RunLock:
    """Lock ``tables`` on ``target`` for this run (waiting up to ``wait_s`` seconds each)."""
    conn = connect(
        target.dsn, autocommit=True, application_name=f"pgferry sync {run_id} pid {os.getpid()}"
    )
    try:
        conn.execute(
            "SELECT set_config('lock_timeout', %s, false)", [f"{max(1, int(wait_s * 1000))}ms"]
        )
        for name in sorted(set(tables)):
            row = conn.execute("SELECT hashtext(%s)", [name]).fetchone()
            key = int(row[0]) if row else 0
            try:
                conn.execute("SELECT pg_advisory_lock(%s, %s)", [NAMESPACE, key])
            except psycopg.errors.LockNotAvailable:
                who = conn.execute(_HOLDER, [NAMESPACE, key]).fetchone()
                holder = (
                    f"{who[1]} (server pid {who[0]}, session started {who[2]})"
                    if who
                    else "another sync"
                )
                raise LockUnavailable(
                    f"another sync is writing {name} in {target.name}: {holder}; waited "
                    f"{wait_s:g}s ([sync] lock_wait); run again when it has finished",
                    table=name,
                    env=target.name,
                ) from None
    except BaseException:
        conn.close()
        raise
    return RunLock(conn)

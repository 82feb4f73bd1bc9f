"""The database's signals a backfill paces itself by, read between batches.

Contract: :func:`read` returns :class:`pgferry.backfill.throttle.Signals` from one query on
the monitor connection: this database's deadlock counter (``pg_stat_database``), the
sessions other than the backfill's own that have waited for a lock longer than
:data:`LOCK_WAIT_MIN_S` (``pg_locks.waitstart``, PostgreSQL 14+; before that, every
waiting session), and the largest standby replay lag (``pg_stat_replication``; NULL for a
role that may not see it). Everything here is readable without superuser.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgferry.backfill.throttle import Signals

#: sessions waiting for a lock longer than this count as "waiting"
LOCK_WAIT_MIN_S = 1.0

_SIGNALS_SQL = """
SELECT (SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()),
       (SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted
          AND waitstart < clock_timestamp() - make_interval(secs => %s) AND pid <> ALL(%s)),
       (SELECT extract(epoch FROM max(replay_lag)) FROM pg_stat_replication)
"""
_SIGNALS_SQL_13 = """
SELECT (SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()),
       (SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted AND pid <> ALL(%s)),
       (SELECT extract(epoch FROM max(replay_lag)) FROM pg_stat_replication)
"""


def read(conn: psycopg.Connection[Any], own_pids: list[int]) -> Signals:
    if conn.info.server_version >= 140000:  # waitstart: waiting for how long
        row = conn.execute(_SIGNALS_SQL, [LOCK_WAIT_MIN_S, own_pids]).fetchone()
    else:
        row = conn.execute(_SIGNALS_SQL_13, [own_pids]).fetchone()
    assert row is not None
    return Signals(
        int(row[0] or 0), int(row[1] or 0), float(row[2]) if row[2] is not None else None
    )

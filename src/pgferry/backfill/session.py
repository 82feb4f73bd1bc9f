"""A backfill's session on its target: the connections, the run lock, the key; revert.

Contract (the batch loop is :mod:`pgferry.backfill.runner`; the orchestration with the
journal and policy is :mod:`pgferry.commands.backfill`):

- :class:`BackfillSession` opens a *work* connection (``application_name`` ``pgferry
  backfill NAME``, ``client_connection_check_interval`` set, so a killed pgferry's
  statement is cancelled by the server) and a *monitor* connection (signals, gates, who
  holds a lock). The work session holds an advisory lock per backfill and scope for the
  whole run: a second run of the same backfill waits up to 10 s (a killed run's session
  may take that long to end), then exits 3 naming the holder.
- :meth:`~BackfillSession.resolve_key` finds the paged table's key
  (:mod:`pgferry.backfill.checkpoint`); :meth:`~BackfillSession.signals` reads the
  server's signals on the monitor connection (:mod:`pgferry.backfill.signals`).
- :meth:`~BackfillSession.revert` puts back every recorded batch, newest first
  (:mod:`pgferry.backfill.images`), and moves the checkpoint to what is left.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import psycopg
from psycopg import sql

from pgferry.backfill import checkpoint, images, signals, state, throttle
from pgferry.backfill import events as ev
from pgferry.backfill.checkpoint import key_ref, where_sql
from pgferry.backfill.files import BackfillFile
from pgferry.config import Config, pg_duration
from pgferry.errors import BadInput, LockUnavailable
from pgferry.events import Subscriber, ignore
from pgferry.gates.runtime import GateSet
from pgferry.pg.connect import Target, connect, map_db_error

#: classid of the advisory lock a backfill run holds (objid: hashtext(name || scope))
RUN_LOCK = 0x70676272  # "pgbr"


@dataclass
class BackfillOptions:
    where: str | None = None
    batch_size: int = 20_000
    target_duration: float = 0.2  # seconds; 0: fixed size
    restart: bool = False
    keep_images: bool = True


class BackfillSession:
    """One backfill (and scope) in ``target``: its two connections, its run lock, its key,
    and reverting its recorded batches (a context manager owning the connections)."""

    def __init__(
        self,
        cfg: Config,
        target: Target,
        bf: BackfillFile,
        opts: BackfillOptions,
        *,
        publish: Subscriber | None = None,
        gates: Callable[[psycopg.Connection[Any]], GateSet] | None = None,
    ) -> None:
        self.cfg, self.target, self.bf, self.opts = cfg, target, bf, opts
        self.conf = cfg.backfill
        self.publish = publish or ignore
        self.scope = opts.where or ""
        self.run_id = uuid.uuid4().hex[:12]
        self.work: psycopg.Connection[Any] | None = None
        self.mon: psycopg.Connection[Any] | None = None
        self._make_gates = gates
        self.gates: GateSet | None = None
        self.key = ""
        self.pk: list[str] = []
        self.lock_timeout = pg_duration(self.conf.lock_timeout)
        self.statement_timeout = pg_duration(self.conf.statement_timeout)

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> Self:
        app = f"pgferry backfill {self.bf.name}"[:63]
        try:
            self.mon = connect(self.target.dsn, autocommit=True, application_name=app + " monitor")
            self.work = connect(self.target.dsn, autocommit=True, application_name=app)
            if self.work.info.server_version >= 140000:
                self.work.execute(
                    "SELECT set_config('client_connection_check_interval', '1000', false)"
                )
            state.ensure(self.work)
            self._lock()
            if self._make_gates is not None:
                self.gates = self._make_gates(self.mon)
        except psycopg.Error as e:
            self.__exit__()
            raise map_db_error(
                e, f"cannot start backfill {self.bf.name} in {self.target.name}"
            ) from None
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for c in (self.work, self.mon):
            if c is not None:
                c.close()
        self.work = self.mon = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        assert self.work is not None, "use Run as a context manager"
        return self.work

    @property
    def monitor(self) -> psycopg.Connection[Any]:
        assert self.mon is not None, "use Run as a context manager"
        return self.mon

    def _lock(self) -> None:
        deadline = time.monotonic() + 10
        ident = self.bf.name + "|" + self.scope
        while True:
            row = self.conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", [RUN_LOCK, ident]
            ).fetchone()
            if row and row[0]:
                return
            if time.monotonic() > deadline:
                holder = self.monitor.execute(
                    "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a"
                    " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
                    " AND l.classid = %s::oid AND l.objid = hashtext(%s)::oid LIMIT 1",
                    [RUN_LOCK, ident],
                ).fetchone()
                who = (
                    f"pid {holder[0]} ({holder[1] or 'no application_name'})"
                    if holder
                    else "another session"
                )
                raise LockUnavailable(
                    f"backfill {self.bf.name} is running already in {self.target.name}: "
                    f"{who} holds it; wait for it, or stop that run",
                    pid=holder and holder[0],
                )
            time.sleep(0.2)

    # -- the key (:mod:`pgferry.backfill.checkpoint`) -------------------------------
    def resolve_key(self) -> None:
        self.key, self.pk = checkpoint.key_of(self.conn, self.bf, self.opts.keep_images)

    def _k(self) -> sql.Composable:
        return key_ref(self.bf, self.key)

    def _where(self) -> sql.Composable:
        return where_sql(self.opts.where)

    def signals(self) -> throttle.Signals:
        return signals.read(
            self.monitor, [self.conn.info.backend_pid, self.monitor.info.backend_pid]
        )

    def revert(self, reason: str = "") -> images.Reverted:
        """Put back every recorded batch of this backfill (newest first); state reverted."""
        if not images.supported(self.bf):
            raise BadInput(
                f"{self.bf.rel} is a DELETE backfill: it keeps no before-images, "
                "so it cannot be reverted"
            )
        if not self.key:
            self.resolve_key()
        if reason:
            self.publish(ev.Reverting(self.bf.name, reason))

        def each(batch: int, rows: int, kept: int) -> None:
            self.publish(ev.BatchReverted(self.bf.name, batch, rows, kept))

        done = images.revert(
            self.conn,
            self.bf,
            self.key,
            self.pk,
            self.bf.name,
            self.scope,
            lock_timeout=self.lock_timeout,
            retries=self.conf.lock_retries,
            on_batch=each,
        )
        if done.stopped_at is None:
            self.conn.execute(
                "UPDATE pgferry.backfill_state SET status = 'reverted', last_key = NULL,"
                " batches = 0, rows = 0, keys = 0, completed_at = NULL,"
                " updated_at = clock_timestamp() WHERE name = %s AND scope = %s",
                [self.bf.name, self.scope],
            )
        elif done.batches:  # the newest batches are back; the checkpoint moves to the rest
            self.conn.execute(
                "UPDATE pgferry.backfill_state SET status = 'stopped', last_key = %s,"
                " batches = %s, rows = greatest(rows - %s, 0), completed_at = NULL,"
                " updated_at = clock_timestamp() WHERE name = %s AND scope = %s",
                [done.last_key, done.stopped_at, done.rows, self.bf.name, self.scope],
            )
        return done

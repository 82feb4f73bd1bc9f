"""The batch loop of ``pgferry backfill run``: keyset batches, paced, resumable, gated.

Contract (the orchestration with the journal and policy is :mod:`pgferry.backfill.service`):

- :class:`Run` opens a *work* connection (``application_name`` ``pgferry backfill NAME``,
  ``client_connection_check_interval`` set, so a killed pgferry's statement is cancelled
  by the server) and a *monitor* connection (signals, gates, who holds a lock). The work
  session holds an advisory lock per backfill and scope for the whole run: a second run of
  the same backfill waits up to 10 s (a killed run's session may take that long to end),
  then exits 3 naming the holder.
- The paged table's key is ``-- pgferry:key`` or its single-column primary key; the keys
  to cover are those up to the largest one when the backfill first started (``end_key``:
  rows inserted later are the dual-write trigger's).
- Each batch is one transaction: ``SET LOCAL lock_timeout`` and ``statement_timeout``
  (``[backfill]``), the next keys after the checkpoint (``ORDER BY key LIMIT size``, so
  ``:lo``/``:hi`` are real keys), the before-images (:mod:`pgferry.backfill.images`), the
  statement, and the checkpoint in ``pgferry.backfill_state``. A crash loses the batch
  and its checkpoint together: the next run resumes after the last committed batch.
- A lock timeout, deadlock or statement timeout rolls the batch back; it is retried,
  halved, after a backoff with jitter, up to ``[backfill] lock_retries`` times, then
  :class:`~pgferry.errors.LockUnavailable` (exit 3) names the lock and its holder.
- After each batch the size moves toward ``[backfill] target_duration``
  (:func:`pgferry.backfill.throttle.next_size`); before each batch (the first too) the run
  pauses while :func:`~pgferry.backfill.throttle.pause_reason` (signals:
  :mod:`pgferry.backfill.signals`), a ``pause`` gate, or a gate that cannot be read
  (``[gates] on_unknown = "pause"``) says so; a pause longer than ``max_pause`` stops it
  (exit 3, resumable). A gate with action ``abort``
  or ``rollback`` raises :class:`GateStop`; the service reverts for ``rollback``.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgferry.backfill import checkpoint, images, signals, state, throttle
from pgferry.backfill import events as ev
from pgferry.backfill.checkpoint import key_ref, rel, show, where_sql
from pgferry.backfill.files import BackfillFile
from pgferry.config import Config, pg_duration
from pgferry.errors import BadInput, LockUnavailable, OperationFailed
from pgferry.events import Subscriber, ignore
from pgferry.gates.evaluate import Firing
from pgferry.gates.runtime import GateSet
from pgferry.pg import errors as pg_errors
from pgferry.pg.connect import Target, connect, map_db_error, redact
from pgferry.pg.lockwatch import LockWatcher

#: classid of the advisory lock a backfill run holds (objid: hashtext(name || scope))
RUN_LOCK = 0x70676272  # "pgbr"


class GateStop(Exception):
    """A gate with action abort or rollback fired between batches."""

    def __init__(self, firing: Firing) -> None:
        super().__init__(firing.describe())
        self.firing = firing


@dataclass
class BackfillOptions:
    where: str | None = None
    batch_size: int = 20_000
    target_duration: float = 0.2  # seconds; 0: fixed size
    restart: bool = False
    keep_images: bool = True


@dataclass
class BackfillResult:
    name: str
    scope: str
    table: str
    key: str
    run_id: str
    status: str = "running"
    resumed: bool = False
    batches: int = 0  # this run
    rows: int = 0
    keys: int = 0
    total_batches: int = 0  # the backfill's, all runs
    total_rows: int = 0
    estimate: int | None = None
    retries: int = 0
    pauses: list[dict[str, Any]] = field(default_factory=list)
    images: int = 0
    duration_s: float = 0.0
    last_batch_size: int = 0
    gates: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "rows_per_s": round(self.rows_per_s, 1),
            "duration_s": round(self.duration_s, 3),
        }


class Run:
    """One ``backfill run`` against ``target`` (a context manager owning two connections)."""

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
    def __enter__(self) -> Run:
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

    # -- one batch -------------------------------------------------------------------
    def _batch(
        self,
        st: state.BackfillState,
        size: int,
        capture: images.Capture,
        statement: sql.Composed | sql.SQL,
        batch_no: int,
    ) -> tuple[int, int, Any] | None:
        """Run one batch; (keys, rows, last key) or None when no key is left."""
        c = self.conn
        after = (
            sql.SQL(" AND {} > %(after)s").format(self._k())
            if st.last_key is not None
            else sql.SQL("")
        )
        with c.transaction():
            c.execute(
                "SELECT set_config('lock_timeout', %s, true),"
                " set_config('statement_timeout', %s, true)",
                [self.lock_timeout, self.statement_timeout],
            )
            bounds = c.execute(
                sql.SQL(
                    "SELECT min(k), max(k), count(*) FROM (SELECT {k} AS k FROM {t}"
                    " WHERE {k} <= %(end)s{a}{w} ORDER BY {k} LIMIT %(n)s) s"
                ).format(k=self._k(), t=rel(self.bf.table), a=after, w=self._where()),
                {"end": st.end_key, "after": st.last_key, "n": size},
            ).fetchone()
            if bounds is None or not bounds[2]:
                return None
            lo, hi, keys = bounds
            params = {
                "lo": lo,
                "hi": hi,
                "bf_name": self.bf.name,
                "bf_scope": self.scope,
                "bf_run": self.run_id,
                "bf_batch": batch_no,
            }
            if self.opts.keep_images:
                capture.before(c, params)
            cur = c.execute(statement, params)
            rows = cur.rowcount
            if self.opts.keep_images:
                capture.after(c, batch_no)
            c.execute(
                "UPDATE pgferry.backfill_state SET last_key = %s::text, batches = batches + 1,"
                " rows = rows + %s, keys = keys + %s, batch_size = %s, run_id = %s,"
                " updated_at = clock_timestamp() WHERE name = %s AND scope = %s",
                [hi, rows, keys, size, self.run_id, self.bf.name, self.scope],
            )
        return int(keys), max(int(rows), 0), hi

    def _pause(
        self,
        baseline: throttle.Signals,
        previous: throttle.Signals,
        result: BackfillResult,
        force: bool = False,
    ) -> throttle.Signals:
        """Wait while a signal or a pause gate says so; raise GateStop for abort/rollback."""
        pause = self.conf.pause.total_seconds()
        max_pause = self.conf.max_pause.total_seconds()
        since: float | None = None
        now_sig = previous
        while True:
            now_sig = self.signals()
            why = throttle.pause_reason(
                baseline, previous, now_sig, self.conf.max_replication_lag.total_seconds()
            )
            previous = now_sig
            if self.gates:
                poll = self.gates.poll(force=force)
                worst = poll.worst()
                if worst is not None:
                    self.publish(ev.GateFired(worst.gate.name, worst.action, worst.describe()))
                    if worst.action in ("abort", "rollback"):
                        raise GateStop(worst)
                    why = why or worst.describe()
                elif poll.unknown and self.cfg.gates.on_unknown == "pause":
                    name, err = next(iter(poll.unknown.items()))
                    why = why or f"gate {name!r} cannot be read: {err}"
                result.gates = {k: v.value for k, v in self.gates.last_readings.items()}
            if why is None:
                if since is not None:
                    waited = time.monotonic() - since
                    result.pauses[-1]["seconds"] = round(waited, 3)
                    self.publish(ev.Resumed(self.bf.name, waited))
                return now_sig
            if since is None:
                since = time.monotonic()
                result.pauses.append({"reason": why, "seconds": 0.0})
                self.publish(ev.Paused(self.bf.name, why, pause))
            if time.monotonic() - since > max_pause:
                raise OperationFailed(
                    f"backfill {self.bf.name} paused for more than [backfill] max_pause "
                    f"({self.conf.max_pause}): {why}; stopped after {result.total_batches} "
                    f"batch(es); run it again to resume",
                    reason=why,
                )
            time.sleep(pause)
            force = True

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> BackfillResult:
        t0 = time.monotonic()
        self.resolve_key()
        st = checkpoint.start(
            self.conn,
            self.bf,
            self.key,
            self.scope,
            self.opts.where,
            self.run_id,
            self.opts.batch_size,
            self.opts.restart,
        )
        res = BackfillResult(
            self.bf.name,
            self.scope,
            show(self.bf.table),
            self.key,
            self.run_id,
            resumed=st.batches > 0,
            total_batches=st.batches,
            total_rows=st.rows,
        )
        if st.status == "completed":
            res.status = "completed"
            res.duration_s = time.monotonic() - t0
            return res
        capture, statement = self._prepare(st, res)
        try:
            self._loop(st, res, capture, statement, t0)
        except GateStop:
            self._set_status("stopped", None)
            raise
        except psycopg.Error as e:
            self._set_status("stopped", redact(str(e)) or type(e).__name__)
            raise map_db_error(
                e,
                f"backfill {self.bf.name} stopped at batch {st.batches + 1} "
                "(the batches before it are committed: fix the cause and run it "
                "again to resume)",
            ) from None
        except BaseException as e:
            self._set_status("stopped", redact(str(e)) or type(e).__name__)
            raise
        self.conn.execute(
            "UPDATE pgferry.backfill_state SET status = 'completed',"
            " completed_at = clock_timestamp(), updated_at = clock_timestamp()"
            " WHERE name = %s AND scope = %s",
            [self.bf.name, self.scope],
        )
        res.status = "completed"
        res.duration_s = time.monotonic() - t0
        return res

    def _prepare(
        self, st: state.BackfillState, res: BackfillResult
    ) -> tuple[images.Capture, sql.Composed | sql.SQL]:
        """Old images expired, the capture and the statement to run, the estimate."""
        if self.opts.keep_images:
            images.expire(self.conn, self.conf.keep_before_images_for.total_seconds())
        capture = images.Capture(
            self.bf, self.key, self.opts.where, self.bf.name, self.scope, self.run_id
        )
        capture.prepare(self.conn)
        text = self.bf.statement(self.opts.where)
        statement = capture.statement(text, self.pk) if self.opts.keep_images else sql.SQL(text)
        res.estimate = checkpoint.estimate(self.conn, self.bf, self.key, self.opts.where, st)
        if res.estimate is not None:
            self.conn.execute(
                "UPDATE pgferry.backfill_state SET estimate = %s + keys"
                " WHERE name = %s AND scope = %s",
                [res.estimate, self.bf.name, self.scope],
            )
        self.publish(
            ev.BackfillStarted(
                self.bf.name, res.table, self.key, res.estimate, self.opts.batch_size, st.batches
            )
        )
        return capture, statement

    def _loop(
        self,
        st: state.BackfillState,
        res: BackfillResult,
        capture: images.Capture,
        statement: sql.Composed | sql.SQL,
        t0: float,
    ) -> None:
        size = max(self.conf.min_batch, min(self.opts.batch_size, self.conf.max_batch))
        baseline = previous = self.signals()
        first = True
        while True:
            # signals and gates before every batch (the first too: a gate that is bad, or
            # cannot be read, before anything changed keeps everything as it is)
            previous = self._pause(baseline, previous, res, force=first)
            first = False
            done, size, elapsed = self._retried(st, size, capture, statement, res)
            if done is None:
                return
            keys, rows, hi = done
            st.last_key = str(hi)  # what the server will read back as the key's type
            st.batches += 1
            res.batches += 1
            res.keys += keys
            res.rows += rows
            res.total_batches = st.batches
            res.total_rows += rows
            res.last_batch_size = size
            res.duration_s = time.monotonic() - t0
            size = throttle.next_size(
                size, elapsed, self.opts.target_duration, self.conf.min_batch, self.conf.max_batch
            )
            self.publish(
                ev.BatchDone(
                    self.bf.name,
                    st.batches,
                    keys,
                    rows,
                    int(elapsed * 1000),
                    size,
                    res.keys,
                    res.estimate,
                    round(res.rows_per_s, 1),
                )
            )

    def _retried(
        self,
        st: state.BackfillState,
        size: int,
        capture: images.Capture,
        statement: sql.Composed | sql.SQL,
        res: BackfillResult,
    ) -> tuple[tuple[int, int, Any] | None, int, float]:
        """One batch, retried (halved) on a lock timeout, deadlock or statement timeout:
        (its result, the size it ran with, its duration)."""
        interval = min(max(self.conf.lock_timeout.total_seconds() / 3, 0.05), 1.0)
        attempts, seen = 0, None
        while True:
            attempts += 1
            t1 = time.monotonic()
            try:
                with LockWatcher(self.monitor, self.conn.info.backend_pid, interval) as w:
                    try:
                        done = self._batch(st, size, capture, statement, st.batches + 1)
                    finally:
                        seen = w.seen or seen
                return done, size, time.monotonic() - t1
            except psycopg.Error as e:
                why = pg_errors.batch_retry(e)
                if why is None:
                    raise
                if attempts > self.conf.lock_retries:
                    raise self._gave_up(e, seen, attempts, st) from None
                res.retries += 1
                size = throttle.shrink(size, self.conf.min_batch)
                self.publish(
                    ev.BatchRetry(
                        self.bf.name,
                        why,
                        attempts,
                        self.conf.lock_retries + 1,
                        size,
                        seen.describe() if seen else None,
                    )
                )
                base = max(self.conf.lock_timeout.total_seconds(), 0.05)
                time.sleep(random.uniform(0, min(10.0, base * 2**attempts)))

    def _set_status(self, status: str, error: str | None) -> None:
        try:
            if self.work is not None and not self.work.closed and not self.work.broken:
                self.work.execute(
                    "UPDATE pgferry.backfill_state SET status = %s, error = %s,"
                    " updated_at = clock_timestamp() WHERE name = %s AND scope = %s",
                    [status, error, self.bf.name, self.scope],
                )
        except psycopg.Error:
            pass  # the checkpoint is what matters, and it is committed with each batch

    def _gave_up(
        self, e: psycopg.Error, seen: Any, attempts: int, st: state.BackfillState
    ) -> OperationFailed:
        where = f"after {st.batches} batch(es) (checkpoint kept: run it again to resume)"
        if pg_errors.statement_timeout(e):
            return OperationFailed(
                f"backfill {self.bf.name}: a batch of {self.conf.min_batch} keys still ran past "
                f"statement_timeout {self.conf.statement_timeout} after {attempts} attempts; "
                f"stopped {where}. Raise [backfill] statement_timeout or add an index for the "
                "statement",
                sqlstate=e.sqlstate,
            )
        what = seen.describe() if seen else "a lock (its holder had gone when sampled)"
        return LockUnavailable(
            f"backfill {self.bf.name}: could not get {what} within lock_timeout "
            f"{self.conf.lock_timeout} after {attempts} attempts; stopped {where}. Retry when the "
            "blocking session is done, or raise [backfill] lock_retries",
            lock=seen.__dict__ if seen else None,
            sqlstate=e.sqlstate,
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

"""The batch loop of ``pgferry backfill run``: keyset batches, paced, resumable, gated.

Contract (:class:`Run` is a :class:`~pgferry.backfill.session.BackfillSession`: the
connections, the run lock, the key and revert; the orchestration with the journal and
policy is :mod:`pgferry.commands.backfill`):

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
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgferry.backfill import checkpoint, images, state, throttle
from pgferry.backfill import events as ev
from pgferry.backfill.checkpoint import rel, show
from pgferry.backfill.session import BackfillSession
from pgferry.errors import LockUnavailable, OperationFailed
from pgferry.gates.evaluate import Firing
from pgferry.pg import errors as pg_errors
from pgferry.pg.connect import map_db_error, redact
from pgferry.pg.lockwatch import LockWatcher


class GateStop(Exception):
    """A gate with action abort or rollback fired between batches."""

    def __init__(self, firing: Firing) -> None:
        super().__init__(firing.describe())
        self.firing = firing


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


class Run(BackfillSession):
    """One ``backfill run`` against ``target`` (a context manager owning two connections)."""

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

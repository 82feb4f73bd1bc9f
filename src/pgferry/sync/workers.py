"""The execution of a sync run: workers, phases, retries, per-table strategies.

Contract: :func:`execute` runs a planned :class:`RunContext` (made by
:func:`pgferry.sync.engine.run`) on ``jobs`` workers, each with a
:class:`~pgferry.sync.tables.Link` (a source connection in the shared snapshot
and a target connection). Two phases:

1. *delete* — in reverse FK order (a unit waits for the units that reference
   it): full-strategy tables delete the rows the source lacks; checksum tables
   compare chunk checksums, delete what the source lacks and keep what to copy;
   watermark tables with ``deletes`` compare their keys alone.
2. *load* — in FK order (a unit waits for its parents): full loads, watermark
   batches, the checksum strategy's differing keys and source-only ranges.

A unit is a table or an FK cycle (one transaction, constraints deferred). A
transient error (connection loss, 40001, 40P01, 57P01, ...) reconnects and
retries the unit with exponential backoff and jitter for ``[sync] retry``;
when that does not help the run stops (exit 3) and a re-run continues where it
stopped. A unit whose parent failed is skipped. After the data, sequences owned
by synced columns move forward (:mod:`pgferry.sync.sequences`).
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

import psycopg
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from pgferry.errors import LockUnavailable, PgferryError, Unreachable
from pgferry.pg.connect import connect, is_transient, map_db_error, redact
from pgferry.sync import compare, events, sequences, watermark, write
from pgferry.sync.context import RunContext
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import TableResult
from pgferry.sync.tables import (
    Link,
    flush_later,
    full_deletes,
    full_load,
    is_empty,
)

if TYPE_CHECKING:
    pass


def _retryable(e: BaseException) -> bool:
    # 55P03: a lock the writer waited WRITER_LOCK_TIMEOUT for (it does not queue behind a
    # long transaction and stall the application's writes); tried again like a lost link
    return (isinstance(e, Unreachable | LockUnavailable) or is_transient(e)
            or (isinstance(e, psycopg.Error) and e.sqlstate == "55P03"))


#: lock_timeout of the writer sessions (DISABLE TRIGGER, TRUNCATE of an empty table, rows)
WRITER_LOCK_TIMEOUT = "5s"


def _writer(ctx: RunContext) -> psycopg.Connection[Any]:
    # synchronous_commit=off: a batch's commit does not wait for its WAL flush. Safe here:
    # a batch and its checkpoint commit together, so a server crash loses both (the re-run
    # redoes them), and the run's journal entry, committed synchronously after the last
    # batch, flushes the WAL of every batch before it.
    return connect(ctx.target.dsn, retry_for=min(ctx.retry_for, 5.0),
                   application_name="pgferry sync writer",
                   options=f"-c lock_timeout={WRITER_LOCK_TIMEOUT} -c synchronous_commit=off")


def _new_link(ctx: RunContext, hold: bool = False) -> Link:
    tgt = _writer(ctx)
    return Link(ctx.snapshot.worker(), tgt, write.Context(ctx.run_id, ctx.source.name),
                ctx.batch_size, hold, helpers=lambda: _new_link(ctx), parts=ctx.jobs)


def _heal(ctx: RunContext, link: Link) -> None:
    """Make ``link`` usable again after an error: roll back, reconnect what broke."""
    for name in ("src", "tgt"):
        conn: psycopg.Connection[Any] = getattr(link, name)
        st = conn.info.transaction_status
        inerror = st == psycopg.pq.TransactionStatus.INERROR
        if conn.broken or conn.closed or (name == "src" and inerror):
            try:
                conn.close()
            except psycopg.Error:
                pass
            if name == "src":
                link.src = ctx.snapshot.worker()
            else:
                link.tgt = _writer(ctx)
        elif name == "tgt":
            conn.rollback()


def _retrying(ctx: RunContext, results: list[TableResult]) -> Retrying:
    def note(rs: RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        code = getattr(exc, "sqlstate", None) or type(exc).__name__
        for r in results:
            r.warnings.append(f"transient error ({code}) on attempt {rs.attempt_number}; "
                              "retried")

    # --atomic: a reconnect would lose the earlier tables' work, so no retry there
    stop = stop_after_attempt(1) if ctx.opts.atomic else stop_after_delay(ctx.retry_for)
    return Retrying(retry=retry_if_exception(_retryable),
                    wait=wait_random_exponential(multiplier=0.1, max=2),
                    stop=stop, reraise=True, before_sleep=note)


def _unit(ctx: RunContext, unit: list[TablePlan], link: Link, phase: str) -> None:
    """Run one unit (a table, or an FK cycle) with retries; record failures on its results."""
    results = [ctx.result.table(t.qualname) for t in unit]
    saved = [dict(vars(r)) for r in results]
    start = time.monotonic()
    link.hold = len(unit) > 1 or ctx.opts.atomic
    try:
        first = True
        for attempt in _retrying(ctx, results):
            with attempt:
                if not first:
                    _heal(ctx, link)
                    if ctx.opts.mode == "full":
                        for r, s in zip(results, saved, strict=True):
                            vars(r).update({k: v for k, v in s.items()
                                            if k in ("inserted", "updated", "deleted",
                                                     "unchanged", "dead_lettered")})
                    ctx.event(events.Warning("transient error; retrying "
                                             + ", ".join(t.qualname for t in unit)))
                first = False
                for t in unit:
                    _table(ctx, t, link, phase)
                if len(unit) > 1 and not ctx.opts.atomic:
                    link.tgt.commit()
                if phase == "load" and ctx.opts.verify_after and not ctx.opts.atomic:
                    for t in unit:
                        if t.key:  # the proof: compare again, what is now committed
                            compare.diff(ctx, t, link, lambda n: None).fill(
                                ctx.result.table(t.qualname))
        for r in results:
            if r.status in ("pending", "ok"):
                r.status = ("dead_letters" if r.dead_lettered else "differs"
                            if r.differing or r.only_in_source or r.only_in_target else "ok")
    except (PgferryError, psycopg.Error) as e:
        err = e if isinstance(e, PgferryError) else map_db_error(
            e, f"{', '.join(t.qualname for t in unit)}")
        for r in results:
            r.status, r.error = "failed", redact(err.message)
        if isinstance(err, Unreachable) or (isinstance(e, psycopg.Error) and is_transient(e)):
            side = ctx.source if ctx.source.display in err.message else ctx.target
            ctx.abort = (f"{side.name} stopped answering and retries for {ctx.retry_for:g}s did "
                         f"not help ({err.message}); run the same command again to continue "
                         "where it stopped")
        try:
            _heal(ctx, link)
        except PgferryError as e2:
            ctx.abort = ctx.abort or e2.message
    finally:
        for r in results:
            r.duration_s += time.monotonic() - start
            if phase == "load":
                ctx.event(events.TableFinished(
                    r.table, r.status, r.inserted, r.updated, r.deleted, r.unchanged,
                    r.dead_lettered, r.duration_s, r.error))


def _table(ctx: RunContext, t: TablePlan, link: Link, phase: str) -> None:
    r = ctx.result.table(t.qualname)
    masks = ctx.masks.get(t.qualname, {})

    def progress(n: int) -> None:
        ctx.event(events.BatchWritten(t.qualname, n))

    if phase == "load":
        ctx.event(events.TableStarted(t.qualname, t.strategy, t.row_estimate))
    if phase == "delete":
        if t.strategy == "full":
            full_deletes(link, t, r)
            link.commit()
        elif t.strategy == "checksum":
            ctx.pending[t.qualname] = compare.checksum_deletes(ctx, t, link, r, progress)
        elif t.strategy == "watermark" and t.deletes:
            # timestamps cannot show a deleted row: compare the keys alone, chunk by chunk
            compare.checksum_deletes(ctx, t, link, r, progress, keys_only=True)
    elif ctx.opts.mode == "verify":
        compare.verify_table(ctx, t, link, r, progress)
    elif t.strategy == "full":
        full_load(link, t, masks, r, progress)
        link.commit()
    elif t.strategy == "watermark":
        if not watermark.has_mark(link, t) and not is_empty(link, t):
            # first run into a table that already holds rows: compare instead of copying
            # everything, then remember the snapshot's watermark
            work = compare.checksum_deletes(ctx, t, link, r, progress)
            compare.checksum_upserts(link, t, masks, r, work, progress)
            flush_later(link, t, r, commit=True)
            watermark.store_initial(link, t, ctx.snapshot.xip)
            return
        watermark.watermark_sync(link, t, masks, r, progress, overlap_s=ctx.overlap_s,
                                 snapshot_xip=ctx.snapshot.xip)
        flush_later(link, t, r, commit=True)
    elif not t.where and is_empty(link, t):
        # nothing to compare against: the fast path of a full load (binary COPY)
        full_load(link, t, masks, r, progress)
        link.commit()
    else:
        work = ctx.pending.pop(t.qualname, None)
        if work is None:
            work = compare.checksum_deletes(ctx, t, link, r, progress)
        compare.checksum_upserts(link, t, masks, r, work, progress)
        flush_later(link, t, r, commit=True)


def _schedule(ctx: RunContext, units: list[list[TablePlan]], jobs: int, phase: str,
              deps: dict[int, set[int]]) -> None:
    """Run ``units`` on ``jobs`` workers; a unit waits for the units in ``deps[i]``."""
    links: list[Link] = []
    free: list[Link] = []
    pending = list(range(len(units)))
    done: set[int] = set()
    running: dict[Future[None], tuple[int, Link]] = {}
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            while pending or running:
                ready = [i for i in pending if deps.get(i, set()) <= done]
                while ready and len(running) < jobs and ctx.abort is None:
                    i = ready.pop(0)
                    pending.remove(i)
                    bad = [p for d in deps.get(i, set()) for p in units[d]
                           if ctx.result.table(p.qualname).status == "failed"
                           and phase == "load"]
                    if bad:
                        for t in units[i]:
                            r = ctx.result.table(t.qualname)
                            r.status = "failed"
                            r.error = (f"skipped: it references {bad[0].qualname}, which "
                                       "failed; fix that table and run again")
                        done.add(i)
                        ready = [j for j in pending if deps.get(j, set()) <= done]
                        continue
                    if not free:
                        links.append(_new_link(ctx))
                        free.append(links[-1])
                    link = free.pop()
                    with ctx.lock:
                        ctx.waiting, ctx.running = len(pending), len(running) + 1
                    running[pool.submit(_unit, ctx, units[i], link, phase)] = (i, link)
                if ctx.abort is not None and not running:
                    break
                if not running:
                    break
                try:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    # no new unit starts; running statements are cancelled, so their
                    # transactions roll back now instead of at the end of the table
                    ctx.abort = "interrupted"
                    for _, lk in running.values():
                        for conn in (lk.tgt, lk.src):
                            with contextlib.suppress(Exception):
                                conn.cancel_safe(timeout=2)
                    raise
                for f in finished:
                    i, link = running.pop(f)
                    with ctx.lock:
                        ctx.running = len(running)
                    f.result()
                    done.add(i)
                    free.append(link)
    finally:
        for link in links:
            for c in (link.src, link.tgt):
                try:
                    c.close()
                except psycopg.Error:
                    pass
    for i in pending:
        for t in units[i]:
            r = ctx.result.table(t.qualname)
            if r.status == "pending":
                r.status, r.error = "failed", f"not started: {ctx.abort or 'run aborted'}"


def _deletes(unit: list[TablePlan]) -> bool:
    """True when the unit has a delete phase (full and checksum strategies, keyed tables)."""
    return all(t.key and (t.strategy in ("full", "checksum")
                          or (t.strategy == "watermark" and t.deletes)) for t in unit)


def execute(ctx: RunContext, jobs: int) -> None:
    runnable = [t for t in ctx.plan.runnable if ctx.result.table(t.qualname).status == "pending"]
    units: list[list[TablePlan]] = []
    where: dict[str, int] = {}
    for t in runnable:
        if t.cycle and t.cycle[0] in where:
            units[where[t.cycle[0]]].append(t)
            where[t.qualname] = where[t.cycle[0]]
            continue
        where[t.qualname] = len(units)
        units.append([t])
    deps = {i: {where[p] for t in u for p in t.parents if p in where and where[p] != i}
            for i, u in enumerate(units)}
    if ctx.opts.atomic:
        link = _new_link(ctx, hold=True)
        try:
            for u in reversed(units):
                if _deletes(u):
                    _unit(ctx, u, link, "delete")
            for u in units:
                _unit(ctx, u, link, "load")
            if any(ctx.result.table(t.qualname).status == "failed" for t in runnable):
                link.tgt.rollback()
                for t in runnable:
                    r = ctx.result.table(t.qualname)
                    if r.status != "failed":
                        r.status, r.error = "failed", "rolled back (--atomic): another table failed"
            else:
                link.tgt.commit()
        finally:
            link.src.close()
            link.tgt.close()
    else:
        # deletes go children first: a unit waits for the units that reference it (a cycle
        # deletes in one transaction with its constraints deferred)
        dels = [i for i, u in enumerate(units) if _deletes(u)]
        renum = {old: new for new, old in enumerate(dels)}
        _schedule(ctx, [units[i] for i in dels], jobs, "delete",
                  {renum[i]: {renum[j] for j in dels if i in deps[j]} for i in dels})
        for t in (t for i in dels for t in units[i]):
            r = ctx.result.table(t.qualname)
            if r.status == "ok":
                r.status = "pending"
        if ctx.abort is None:
            ok = [i for i, u in enumerate(units)
                  if all(ctx.result.table(t.qualname).status != "failed" for t in u)]
            renum = {old: new for new, old in enumerate(ok)}
            _schedule(ctx, [units[i] for i in ok], jobs, "load",
                      {renum[i]: {renum[d] for d in deps[i] if d in renum} for i in ok})
    if ctx.abort is not None:
        ctx.result.error = ctx.abort
    if ctx.opts.mode != "verify" and ctx.abort is None:
        try:
            sequences.advance(ctx.snapshot.coordinator, ctx.target.dsn,
                              [t for t in runnable
                               if ctx.result.table(t.qualname).status != "failed"])
        except (psycopg.Error, PgferryError) as e:
            err = map_db_error(e, "") if isinstance(e, psycopg.Error) else e
            ctx.result.error = (f"the data is synced, but moving the sequences forward failed: "
                                f"{err.message}; run the same command again")

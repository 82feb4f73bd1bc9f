"""One unit of a sync, written in one target transaction and retried whole.

Contract: :func:`write_unit` syncs a *unit* on a worker's link: a set of tables that
must change together (:func:`pgferry.sync.workers.units`). A unit is **one target
transaction** (``REPEATABLE READ``, deferrable constraints deferred): first each table's
comparison and deletes, children first; then each table's loads, parents first
(:mod:`pgferry.sync.strategies`); then one commit. So every table ends the run either
synced or exactly as it was — a bad value is a dead letter, any other error (or a kill,
or a lost connection) rolls the whole unit back, and its tables are reported unchanged.

A transient error (connection loss, 40001, 40P01, 57P01, a lock timeout, ...)
reconnects and runs the unit again from the start, with exponential backoff
and jitter, for ``[sync] retry``; then the run stops (exit 3) and a re-run
redoes the units that did not commit. After the commit, what the loads set aside is
rebuilt and, with ``verify_after``, each table is compared again.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psycopg
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from pgferry.errors import LockUnavailable, PgferryError, Unreachable
from pgferry.pg import errors as pgerrors
from pgferry.pg.connect import Target, begin_repeatable_read, is_transient, map_db_error, redact
from pgferry.sync import compare, deletes, events, multiset, personal, rebuild, write
from pgferry.sync.context import RunContext
from pgferry.sync.links import heal
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import TableResult
from pgferry.sync.strategies import load, prepare, settle
from pgferry.sync.tables import Link

_COUNTERS = (
    "inserted",
    "updated",
    "deleted",
    "unchanged",
    "dead_lettered",
    "source_rows",
    "conflicts",
    "target_only",
    "kept",
)


def _retryable(e: BaseException) -> bool:
    # 55P03: a lock the writer waited WRITER_LOCK_TIMEOUT for (it does not queue behind a
    # long transaction and stall the application's writes); tried again like a lost link
    return (
        isinstance(e, Unreachable | LockUnavailable) or is_transient(e) or pgerrors.lock_timeout(e)
    )


def _retrying(ctx: RunContext, results: list[TableResult]) -> Retrying:
    def note(rs: RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        code = getattr(exc, "sqlstate", None) or type(exc).__name__
        for r in results:
            r.warnings.append(f"transient error ({code}) on attempt {rs.attempt_number}; retried")

    return Retrying(
        retry=retry_if_exception(_retryable),
        wait=wait_random_exponential(multiplier=0.1, max=2),
        stop=stop_after_delay(ctx.retry_for),
        reraise=True,
        before_sleep=note,
    )


def _reset(results: list[TableResult]) -> None:
    for r in results:
        for k in _COUNTERS:
            setattr(r, k, 0)
        r.dead_letters.clear()
        r.conflict_rows.clear()
        if r.status == "conflicts":
            r.status, r.error = "pending", None
        r.warnings[:] = [w for w in r.warnings if not w.startswith("a row failed the fast")]


def write_unit(ctx: RunContext, unit: list[TablePlan], link: Link) -> None:
    """Sync one unit in one target transaction, with retries; record what happened."""
    results = [ctx.result.table(t.qualname) for t in unit]
    start = time.monotonic()
    current: list[TablePlan] = []
    for t in unit:
        ctx.event(events.TableStarted(t.qualname, t.strategy, t.row_estimate))
    try:
        first = True
        for attempt in _retrying(ctx, results):
            with attempt:
                if not first:
                    heal(ctx, link)
                    _reset(results)
                    ctx.event(
                        events.Warning(
                            "transient error; retrying " + ", ".join(t.qualname for t in unit)
                        )
                    )
                first = False
                _run_unit(ctx, unit, link, current)
        for t, r in zip(unit, results, strict=True):
            settle(t, r)
        _rebuild(ctx, link, results)
    except (PgferryError, psycopg.Error) as e:
        err = (
            e
            if isinstance(e, PgferryError)
            else map_db_error(
                e, current[-1].qualname if current else ", ".join(t.qualname for t in unit)
            )
        )
        err = personal.unquoted(err, unit)
        culprit = current[-1].qualname if current else None
        _reset(results)
        for t, r in zip(unit, results, strict=True):
            r.status = "failed"
            if culprit is None or t.qualname == culprit:
                r.error = redact(
                    f"{err.message}; nothing was changed in this table "
                    "(its transaction rolled back)"
                )
            else:
                r.error = (
                    f"rolled back with {culprit}, which failed (tables tied by foreign "
                    "keys commit together); nothing was changed in this table"
                )
        if isinstance(err, Unreachable) or (isinstance(e, psycopg.Error) and is_transient(e)):
            side = _failed_side(ctx, link, err)
            ctx.abort = (
                f"{side.name} stopped answering and retries for {ctx.retry_for:g}s did "
                f"not help ({err.message}); run the same command again to continue "
                "with the tables that did not commit"
            )
        try:
            heal(ctx, link)
        except PgferryError as e2:
            ctx.abort = ctx.abort or e2.message
    finally:
        for r in results:
            r.duration_s += time.monotonic() - start
    if ctx.opts.verify_after:
        _verify_after(ctx, unit, link)
    for r in results:
        ctx.event(
            events.TableFinished(
                r.table,
                r.status,
                r.inserted,
                r.updated,
                r.deleted,
                r.unchanged,
                r.dead_lettered,
                r.duration_s,
                r.error,
            )
        )


def _failed_side(ctx: RunContext, link: Link, err: PgferryError) -> Target:
    """The environment that stopped answering, by which connection failed: the one a
    failed connection attempt was for, else the side whose connection of ``link`` broke
    (the target when neither did: its writes are what a lost statement was doing)."""
    if err.env is not None:
        return ctx.source if err.env == ctx.source.name else ctx.target
    src = link.src
    return ctx.source if (src.broken or src.closed) and not link.tgt.broken else ctx.target


def _run_unit(ctx: RunContext, unit: list[TablePlan], link: Link, current: list[TablePlan]) -> None:
    """One attempt: compare, then delete children first, load parents first, commit.

    Every table is compared (and its conflicts classified) before any write. A
    table's deletes run in a savepoint. When a foreign
    key refuses them (23503: a child row still points at a row to delete, and the
    child's update comes in the load), they are rolled back to the savepoint and run
    again after every load of the unit, children first.
    """
    tgt = link.tgt
    begin_repeatable_read(tgt)
    # deferrable FKs (cycles, self-references) are checked at commit
    tgt.execute("SET CONSTRAINTS ALL DEFERRED")
    for t in unit:
        write.triggers(tgt, t, enable=False)
    work: dict[str, Any] = {}
    deletes: list[tuple[TablePlan, list[compare.DeleteOp]]] = []
    for t in reversed(unit):
        current.append(t)
        work[t.qualname], ops = prepare(ctx, t, link)
        deletes.append((t, ops))
    if any(t.before_images for t in unit):
        # a conflict the source wins keeps the overwritten rows; the unit's other tables'
        # writes are kept too, so that `sync revert` can undo the unit as a whole
        for t in unit:
            t.before_images = True
            ctx.result.table(t.qualname).before_images = True
    later: list[tuple[TablePlan, list[compare.DeleteOp]]] = []
    for t, ops in deletes:
        current.append(t)
        if ops and not _deletes(link, ctx.result.table(t.qualname), ops):
            later.append((t, ops))
    for t in unit:
        current.append(t)
        load(ctx, t, link, work.get(t.qualname))
    for t, ops in later:
        current.append(t)
        r = ctx.result.table(t.qualname)
        for op in ops:
            op(r)
    for t in unit:
        write.triggers(tgt, t, enable=True)
    if link.aside:
        # queued before the commit: from the commit on, other writers wait for the rebuild
        link.guard = rebuild.RebuildGuard(
            ctx.target.dsn,
            [s.table for s in link.aside],
            [i for s in link.aside for i in s.items],
            ctx.jobs,
            memory=ctx.cfg.sync.rebuild_memory,
        )
    current.clear()
    ctx.event(events.Committing([t.qualname for t in unit]))
    tgt.commit()
    link.dirty = False
    link.aside.clear()
    link.recorded.clear()
    link.had_rows.clear()


def _rebuild(ctx: RunContext, link: Link, results: list[TableResult]) -> None:
    """After the unit committed: build what its loads set aside (--jobs at a time).

    A failure here leaves the rows synced and the definitions recorded in
    ``pgferry.set_aside``: the table is reported failed, and the next sync of it
    rebuilds them before anything else.
    """
    guard, link.guard = link.guard, None
    if guard is None:
        return
    by = {r.table: r for r in results}
    # the costliest build's parallel workers: the run's idle workers, once no unit waits
    workers = ctx.spare(ctx.jobs - 1)
    try:
        built = guard.rebuild(workers)
        for name in built:
            for table in guard.tables:
                schema = table.split(".", 1)[0]
                if any(i.name == f"{schema}.{name}" and i.table == table for i in guard.items):
                    by[table].rebuilt_indexes.append(name)
    except (PgferryError, psycopg.Error) as e:
        err = e if isinstance(e, PgferryError) else map_db_error(e, ", ".join(guard.tables))
        for table in guard.tables:
            r = by[table]
            r.status = "failed"
            r.error = redact(
                f"the rows are synced, but rebuilding the indexes set aside for "
                f"the load failed: {err.message}; their definitions are kept in "
                "pgferry.set_aside and the next sync of this table rebuilds them"
            )
    finally:
        ctx.give_back(workers)
        guard.close()


def _deletes(link: Link, r: TableResult, ops: list[compare.DeleteOp]) -> bool:
    """Run a table's deletes in a savepoint; False (rolled back) when an FK refused them,
    or would have acted on rows still referencing them (tried again after the loads)."""
    before = r.deleted
    try:
        with link.tgt.transaction():
            for op in ops:
                op(r)
        return True
    except deletes.ActsOnRowsKept:
        r.deleted = before
        return False
    except psycopg.Error as e:
        if not pgerrors.foreign_key(e) or link.tgt.broken:
            raise
        r.deleted = before
        return False


def _verify_after(ctx: RunContext, unit: list[TablePlan], link: Link) -> None:
    """The proof: compare each committed table again, on what is now committed."""
    for t in unit:
        r = ctx.result.table(t.qualname)
        if r.status in ("failed", "conflicts"):
            continue
        try:
            if t.key:
                compare.diff(ctx, t, link, lambda n: None).fill(r)
            else:
                multiset.compare(ctx, t, link).fill(r)
        except (PgferryError, psycopg.Error) as e:
            err = e if isinstance(e, PgferryError) else map_db_error(e, t.qualname)
            err = personal.unquoted(err, [t])
            r.warnings.append(f"the check after the sync failed: {err.message}")
            r.checked_after = False
            with contextlib.suppress(psycopg.Error):
                link.tgt.rollback()
            continue
        r.checked_after = True
        if r.checksums_match is False:
            if r.note:
                r.note += "; the check after the sync found a difference the triggers explain"
            r.status = "differs"

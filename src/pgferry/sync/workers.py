"""The execution of a sync run: units, one target transaction each, retries, strategies.

Contract: :func:`execute` runs a planned :class:`RunContext` (made by
:func:`pgferry.sync.engine.run`) on ``jobs`` workers, each with a
:class:`~pgferry.sync.tables.Link` (a source connection in the shared snapshot
and a target connection).

A *unit* is a set of tables that must change together: the tables foreign keys
tie together (a connected group of the selection; with ``--atomic``, every
table). A unit is **one target transaction** (``REPEATABLE READ``, deferrable
constraints deferred): first each table's comparison and deletes, children
first; then each table's loads, parents first; then one commit. So every
table ends the run either synced or exactly as it was — a bad value is a dead
letter, any other error (or a kill, or a lost connection) rolls the whole unit
back, and its tables are reported unchanged. Units share nothing and run in
parallel.

A transient error (connection loss, 40001, 40P01, 57P01, a lock timeout, ...)
reconnects and runs the unit again from the start, with exponential backoff
and jitter, for ``[sync] retry``; then the run stops (exit 3) and a re-run
redoes the units that did not commit. ``verify`` compares table by table, read
only. After the data, the sequences the synced columns use move forward
(:mod:`pgferry.sync.sequences`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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
from pgferry.pg.connect import Target, connect, is_transient, map_db_error, redact
from pgferry.sync import aside, compare, events, multiset, sequences, session, watermark, write
from pgferry.sync.context import RunContext
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import TableResult
from pgferry.sync.tables import Link, flush_later, full_deletes, full_load, is_empty

#: lock_timeout of the writer sessions (DISABLE TRIGGER, TRUNCATE of an empty table, rows)
WRITER_LOCK_TIMEOUT = "5s"

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


def _writer(ctx: RunContext) -> psycopg.Connection[Any]:
    c = connect(
        ctx.target.dsn, retry_for=min(ctx.retry_for, 5.0), application_name="pgferry sync writer"
    )
    try:
        session.pin(c, lock_timeout=WRITER_LOCK_TIMEOUT)
    except BaseException:
        c.close()
        raise
    return c


def _new_link(ctx: RunContext) -> Link:
    tgt = _writer(ctx)
    return Link(
        ctx.snapshot.worker(),
        tgt,
        write.WriteContext(ctx.run_id, ctx.source.name),
        ctx.batch_size,
        helpers=lambda: _new_link(ctx),
        parts=ctx.jobs,
        target_dsn=ctx.target.dsn,
    )


def _heal(ctx: RunContext, link: Link) -> None:
    """Make ``link`` usable again after an error: roll back, reconnect what broke.

    What the unit set aside came back with the rollback: its records are dropped.
    """
    link.dirty = False
    _drop_guard(link)
    if link.recorded:
        with contextlib.suppress(PgferryError, psycopg.Error):
            aside.forget(ctx.target.dsn, link.recorded)
    link.aside.clear()
    link.recorded.clear()
    link.had_rows.clear()
    for name in ("src", "tgt"):
        conn: psycopg.Connection[Any] = getattr(link, name)
        st = conn.info.transaction_status
        inerror = st == psycopg.pq.TransactionStatus.INERROR
        if conn.broken or conn.closed or (name == "src" and inerror):
            with contextlib.suppress(psycopg.Error):
                conn.close()
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
            r.warnings.append(f"transient error ({code}) on attempt {rs.attempt_number}; retried")

    return Retrying(
        retry=retry_if_exception(_retryable),
        wait=wait_random_exponential(multiplier=0.1, max=2),
        stop=stop_after_delay(ctx.retry_for),
        reraise=True,
        before_sleep=note,
    )


def _progress(ctx: RunContext, t: TablePlan) -> Callable[[int], None]:
    def progress(n: int) -> None:
        ctx.event(events.BatchWritten(t.qualname, n))

    return progress


def _reset(results: list[TableResult]) -> None:
    for r in results:
        for k in _COUNTERS:
            setattr(r, k, 0)
        r.dead_letters.clear()
        r.conflict_rows.clear()
        if r.status == "conflicts":
            r.status, r.error = "pending", None
        r.warnings[:] = [w for w in r.warnings if not w.startswith("a row failed the fast")]


def _write_unit(ctx: RunContext, unit: list[TablePlan], link: Link) -> None:
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
                    _heal(ctx, link)
                    _reset(results)
                    ctx.event(
                        events.Warning(
                            "transient error; retrying " + ", ".join(t.qualname for t in unit)
                        )
                    )
                first = False
                _run_unit(ctx, unit, link, current)
        for t, r in zip(unit, results, strict=True):
            _settle(t, r)
        _rebuild(ctx, link, results)
    except (PgferryError, psycopg.Error) as e:
        err = (
            e
            if isinstance(e, PgferryError)
            else map_db_error(
                e, current[-1].qualname if current else ", ".join(t.qualname for t in unit)
            )
        )
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
            _heal(ctx, link)
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
    tgt.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    # deferrable FKs (cycles, self-references) are checked at commit
    tgt.execute("SET CONSTRAINTS ALL DEFERRED")
    for t in unit:
        write.triggers(tgt, t, enable=False)
    work: dict[str, Any] = {}
    deletes: list[tuple[TablePlan, list[compare.DeleteOp]]] = []
    for t in reversed(unit):
        current.append(t)
        work[t.qualname], ops = _prepare(ctx, t, link)
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
        _load(ctx, t, link, work.get(t.qualname))
    for t, ops in later:
        current.append(t)
        r = ctx.result.table(t.qualname)
        for op in ops:
            op(r)
    for t in unit:
        write.triggers(tgt, t, enable=True)
    if link.aside:
        # queued before the commit: from the commit on, other writers wait for the rebuild
        link.guard = aside.RebuildGuard(
            ctx.target.dsn,
            [s.table for s in link.aside],
            [i for s in link.aside for i in s.items],
            ctx.jobs,
        )
    current.clear()
    ctx.event(events.Committing([t.qualname for t in unit]))
    tgt.commit()
    link.dirty = False
    link.aside.clear()
    link.recorded.clear()
    link.had_rows.clear()


def _drop_guard(link: Link) -> None:
    if link.guard is not None:
        link.guard.close()
        link.guard = None


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
    try:
        built = guard.rebuild()
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
        guard.close()


def _deletes(link: Link, r: TableResult, ops: list[compare.DeleteOp]) -> bool:
    """Run a table's deletes in a savepoint; False (rolled back) when an FK refused them."""
    before = r.deleted
    try:
        with link.tgt.transaction():
            for op in ops:
                op(r)
        return True
    except psycopg.Error as e:
        if not pgerrors.foreign_key(e) or link.tgt.broken:
            raise
        r.deleted = before
        return False


def _prepare(ctx: RunContext, t: TablePlan, link: Link) -> tuple[Any, list[compare.DeleteOp]]:
    """A table's first step (children first): compare; what to copy, and the deletes."""
    r = ctx.result.table(t.qualname)
    progress = _progress(ctx, t)
    if t.strategy == "full":
        return None, [lambda res: full_deletes(link, t, res)]
    if t.strategy == "checksum":
        work = compare.checksum_compare(ctx, t, link, progress)
        _note_conflicts(ctx, t, link, r, work)
        return work, work.deletes if work is not None else []
    if t.strategy == "watermark":
        mark = watermark.read_mark(link, t)
        if (mark.watermark is None and not is_empty(link, t)) or not watermark.fence_usable(
            mark, ctx.snapshot
        ):
            # first run into a table that already holds rows, or the fence is too old to
            # trust: compare instead of copying everything, then remember the snapshot's mark
            if mark.watermark is not None:
                r.warnings.append(
                    "more than 2^31 transactions since the last run: the table "
                    "was compared instead of read by watermark"
                )
            work = compare.checksum_compare(ctx, t, link, progress)
            return ("compare", work), work.deletes if work is not None else []
        if t.deletes:
            # timestamps cannot show a deleted row: compare the keys alone, chunk by chunk
            keys = compare.checksum_compare(ctx, t, link, progress, keys_only=True)
            return None, keys.deletes if keys is not None else []
    return None, []


def _load(ctx: RunContext, t: TablePlan, link: Link, work: Any) -> None:
    """A table's second step (parents first): copy what differs."""
    r = ctx.result.table(t.qualname)
    masks = ctx.masks.get(t.qualname, {})
    progress = _progress(ctx, t)
    if t.strategy == "full":
        full_load(link, t, masks, r, progress)
    elif t.strategy == "watermark" and isinstance(work, tuple):
        compare.checksum_upserts(link, t, masks, r, work[1], progress)
        flush_later(link, t, r)
        watermark.store_initial(link, t, ctx.snapshot)
    elif t.strategy == "watermark":
        watermark.watermark_sync(
            link, t, masks, r, progress, overlap_s=ctx.overlap_s, snap=ctx.snapshot
        )
    elif work is not None and work.stopped:
        return  # conflicts under on_conflict = "stop": this table is left as it was
    else:
        compare.checksum_upserts(link, t, masks, r, work, progress)
    flush_later(link, t, r)
    r.unchanged = max(0, r.source_rows - r.inserted - r.updated - r.dead_lettered)
    if t.track and t.strategy == "checksum":
        _base(ctx, t, link, work, r)


def _base(ctx: RunContext, t: TablePlan, link: Link, work: Any, r: TableResult) -> None:
    """After a tracked table's writes: move its base, or make one (the first sync)."""
    from pgferry.sync import conflicts

    if ctx.opts.rebase:  # the target as it is now is the common state of every row
        conflicts.rebuild(link, t, compare.sides(ctx, t, link)[1])
    elif (
        work is not None
        and work.classified is not None
        and work.classified.known
        and (work.classified.version == work.found.target_side.hash_version or work.classified.kept)
    ):
        # a base of an earlier release's row hash stays in it while it holds kept rows
        fired = t.triggers == "enable" and bool(t.user_triggers)
        conflicts.update_base(
            link,
            t,
            work.found.target_side,
            work.classified.version,
            written_as_staged=not (r.dead_lettered or fired),
        )
    else:
        conflicts.rebuild(link, t, compare.sides(ctx, t, link)[1])


def _note_conflicts(ctx: RunContext, t: TablePlan, link: Link, r: TableResult, work: Any) -> None:
    """What the conflicts step found, on the table's result."""
    from pgferry.sync import conflicts

    if not t.track:
        return
    if work is None:  # an empty target: no conflict there, if a base says what was synced
        tgt = compare.sides(ctx, t, link)[1]
        r.conflicts_known = conflicts.usable(link.tgt, link.ctx.source, t, tgt)
        return
    cl = work.classified
    if cl is None or not cl.known:
        r.conflicts_known = False
        return
    r.conflicts_known = True
    r.conflicts, r.conflict_rows = cl.conflicts, list(cl.first)
    r.before_images = r.before_images or t.before_images
    r.target_only, r.kept = cl.target_only, cl.kept
    if work.stopped:
        r.status = "conflicts"
        r.error = f"stopped at {cl.conflicts} conflict(s); the table is as it was"


def _settle(t: TablePlan, r: TableResult) -> None:
    """The status of a committed table."""
    if r.status not in ("pending", "ok"):
        return
    if r.kept:
        r.note = (
            f"kept {r.kept} target row(s) as they are ("
            + ", ".join(
                w
                for w, n in (
                    (f'on_conflict = "{t.on_conflict}"', r.conflicts),
                    ("keep_target_changes", r.target_only if t.keep_target_changes else 0),
                )
                if n
            )
            + ")"
        )
    r.status = "dead_letters" if r.dead_lettered else "ok"
    if t.triggers == "enable" and t.user_triggers and r.written:
        r.note = (
            f"user triggers fired ({', '.join(t.user_triggers)}): the target may differ "
            "from the source"
        )


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


def _verify_unit(ctx: RunContext, unit: list[TablePlan], link: Link) -> None:
    """``verify`` (and the dry run's counts) for one table, read-only."""
    (t,) = unit
    r = ctx.result.table(t.qualname)
    start = time.monotonic()
    ctx.event(events.TableStarted(t.qualname, "verify", t.row_estimate))
    try:
        if (
            ctx.opts.dry_run
            and t.track
            and t.strategy == "checksum"
            and _dry_conflicts(ctx, t, link, r)
        ):
            pass
        elif t.key:
            found = compare.diff(ctx, t, link, _progress(ctx, t))
            found.fill(r)
            r.source_rows = found.source_rows
            if ctx.opts.dry_run:
                r.would_insert = found.only_in_source
                r.would_update = found.differing
                r.would_delete = found.only_in_target if t.deletes else 0
        else:
            m = multiset.compare(ctx, t, link)
            m.fill(r)
            if ctx.opts.dry_run and not m.identical:
                r.would_insert, r.would_delete = m.source_rows, m.target_rows
        if not ctx.opts.dry_run:
            r.status = (
                "ok"
                if r.checksums_match is not False
                and not (r.differing or r.only_in_source or r.only_in_target)
                else "differs"
            )
    except (PgferryError, psycopg.Error) as e:
        err = e if isinstance(e, PgferryError) else map_db_error(e, t.qualname)
        r.status, r.error = "failed", redact(err.message)
        try:
            _heal(ctx, link)
        except PgferryError as e2:
            ctx.abort = ctx.abort or e2.message
    finally:
        r.duration_s += time.monotonic() - start
        ctx.event(events.TableFinished(r.table, r.status, 0, 0, 0, 0, 0, r.duration_s, r.error))


def _dry_conflicts(ctx: RunContext, t: TablePlan, link: Link, r: TableResult) -> bool:
    """The dry run of a tracked table: the sync's own comparison and conflicts step, in a
    transaction rolled back (it writes temp tables only). False when the target is empty
    and has no base (the plain comparison then counts)."""
    link.tgt.rollback()
    link.tgt.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        work = compare.checksum_compare(ctx, t, link, _progress(ctx, t))
        if work is None:
            _note_conflicts(ctx, t, link, r, None)
            return False
        found = work.found
        found.fill(r)
        r.source_rows = found.source_rows
        r.would_insert, r.would_update = found.only_in_source, found.differing
        r.would_delete = found.only_in_target if t.deletes else 0
        _note_conflicts(ctx, t, link, r, work)
        if work.stopped:
            r.status, r.error = "planned", None
            r.note = (
                f'{r.conflicts} conflict(s): on_conflict = "stop" would leave this table as it is'
            )
        return True
    finally:
        link.tgt.rollback()


def _schedule(
    ctx: RunContext,
    units: list[list[TablePlan]],
    jobs: int,
    run: Callable[[RunContext, list[TablePlan], Link], None],
) -> None:
    """Run ``units`` on ``jobs`` workers (units are independent of each other)."""
    links: list[Link] = []
    free: list[Link] = []
    pending = list(range(len(units)))
    running: dict[Future[None], Link] = {}
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            while pending or running:
                while pending and len(running) < jobs and ctx.abort is None:
                    i = pending.pop(0)
                    if not free:
                        links.append(_new_link(ctx))
                        free.append(links[-1])
                    link = free.pop()
                    with ctx.lock:
                        ctx.waiting, ctx.running = len(pending), len(running) + 1
                    running[pool.submit(run, ctx, units[i], link)] = link
                if not running:
                    break
                try:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    # no new unit starts; running statements are cancelled, so their
                    # transactions roll back now instead of at the end of the unit
                    ctx.abort = "interrupted"
                    for lk in running.values():
                        for conn in (lk.tgt, lk.src):
                            with contextlib.suppress(Exception):
                                conn.cancel_safe(timeout=2)
                    raise
                for f in finished:
                    link = running.pop(f)
                    with ctx.lock:
                        ctx.running = len(running)
                    f.result()
                    free.append(link)
    finally:
        for link in links:
            for c in (link.src, link.tgt):
                with contextlib.suppress(psycopg.Error):
                    c.close()
    for i in pending:
        for t in units[i]:
            r = ctx.result.table(t.qualname)
            if r.status == "pending":
                r.status, r.error = "failed", f"not started: {ctx.abort or 'run aborted'}"


def units(tables: list[TablePlan]) -> list[list[TablePlan]]:
    """The tables foreign keys tie together (connected groups), each in FK order.

    Biggest first (by estimated rows), so the long ones start while others run.
    """
    parent = {t.qualname: t.qualname for t in tables}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for t in tables:
        for p in [*t.parents, *t.cycle]:
            if p in parent:
                parent[find(t.qualname)] = find(p)
    groups: dict[str, list[TablePlan]] = {}
    for t in tables:  # tables come in FK order, so each group does too
        groups.setdefault(find(t.qualname), []).append(t)
    return sorted(groups.values(), key=lambda g: -sum(t.row_estimate for t in g))


def execute(ctx: RunContext, jobs: int) -> None:
    runnable = [
        t
        for t in ctx.plan.runnable
        if ctx.result.table(t.qualname).status in ("pending", "planned")
    ]
    if ctx.opts.mode == "verify" or ctx.opts.dry_run:
        _schedule(ctx, [[t] for t in runnable], jobs, _verify_unit)
    elif ctx.opts.atomic:
        _atomic(ctx, runnable)
    else:
        _schedule(ctx, units(runnable), jobs, _write_unit)
    if ctx.abort is not None:
        ctx.result.error = ctx.abort
    if ctx.opts.mode != "verify" and not ctx.opts.dry_run and ctx.abort is None:
        try:
            sequences.advance(
                ctx.snapshot.coordinator,
                ctx.target.dsn,
                [t for t in runnable if ctx.result.table(t.qualname).status != "failed"],
            )
        except (psycopg.Error, PgferryError) as e:
            err = map_db_error(e, "") if isinstance(e, psycopg.Error) else e
            ctx.result.error = (
                f"the data is synced, but moving the sequences forward failed: "
                f"{err.message}; run the same command again"
            )


def _atomic(ctx: RunContext, runnable: list[TablePlan]) -> None:
    """``--atomic``: every table in one unit, so in one transaction (then the check)."""
    link = _new_link(ctx)
    try:
        _write_unit(ctx, runnable, link)
    finally:
        for c in (link.src, link.tgt):
            with contextlib.suppress(psycopg.Error):
                c.close()

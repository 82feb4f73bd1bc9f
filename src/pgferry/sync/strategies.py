"""How each strategy (full, checksum, watermark) syncs one table of a unit, in two steps.

Contract: :func:`prepare` is a table's first step (children first): it compares, and
returns what to copy and the deletes to run; :func:`load` is its second (parents first):
it copies what differs and, for a tracked table, moves its base. :func:`note_conflicts`
puts what the conflicts step found on the table's result; :func:`settle` gives a
committed table its status; :func:`batch_progress` reports each written batch as an
event. None of them commits: the unit's transaction is :mod:`pgferry.sync.unit_write`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pgferry.sync import compare, events, watermark
from pgferry.sync.context import RunContext
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import TableResult
from pgferry.sync.tables import Link, flush_later, full_deletes, full_load, is_empty


def batch_progress(ctx: RunContext, t: TablePlan) -> Callable[[int], None]:
    def progress(n: int) -> None:
        ctx.event(events.BatchWritten(t.qualname, n))

    return progress


def prepare(ctx: RunContext, t: TablePlan, link: Link) -> tuple[Any, list[compare.DeleteOp]]:
    """A table's first step (children first): compare; what to copy, and the deletes."""
    r = ctx.result.table(t.qualname)
    progress = batch_progress(ctx, t)
    if t.strategy == "full":
        return None, [lambda res: full_deletes(link, t, res)]
    if t.strategy == "checksum":
        work = compare.checksum_compare(ctx, t, link, progress)
        note_conflicts(ctx, t, link, r, work)
        return work, work.deletes if work is not None else []
    if t.strategy == "watermark":
        mark = watermark.read_mark(link, t)
        local = watermark.local_time(link, t, ctx.overlap_s)
        if local:
            r.warnings.append(local)
        stale = not watermark.fence_usable(mark, ctx.snapshot)
        ahead = watermark.ahead(link, t, mark)
        if (mark.watermark is None and not is_empty(link, t)) or stale or ahead:
            # first run into a table that already holds rows, the fence is too old to trust,
            # or the mark is in the future: compare instead of copying everything (or
            # reading from the mark), then remember the snapshot's mark
            if stale:
                r.warnings.append(
                    "more than 2^31 transactions since the last run: the table "
                    "was compared instead of read by watermark"
                )
            if ahead:
                r.warnings.append(
                    f"the stored watermark ({mark.watermark}) is later than the source's "
                    "clock (a row stamped in the future had moved it there), so rows "
                    "changed since could have been skipped: the table was compared instead"
                )
            work = compare.checksum_compare(ctx, t, link, progress)
            return ("compare", work), work.deletes if work is not None else []
        if t.deletes:
            # timestamps cannot show a deleted row: compare the keys alone, chunk by chunk
            keys = compare.checksum_compare(ctx, t, link, progress, keys_only=True)
            return None, keys.deletes if keys is not None else []
    return None, []


def load(ctx: RunContext, t: TablePlan, link: Link, work: Any) -> None:
    """A table's second step (parents first): copy what differs."""
    r = ctx.result.table(t.qualname)
    masks = ctx.masks.get(t.qualname, {})
    progress = batch_progress(ctx, t)
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
    from pgferry.sync import conflict_base

    if ctx.opts.rebase:  # the target as it is now is the common state of every row
        conflict_base.rebuild(link, t, compare.sides(ctx, t, link)[1])
    elif (
        work is not None
        and work.classified is not None
        and work.classified.known
        and (work.classified.version == work.found.target_side.hash_version or work.classified.kept)
    ):
        if work.classified.nothing:  # no row differed: every base is still the row's
            return
        # a base of an earlier release's row hash stays in it while it holds kept rows
        fired = t.triggers == "enable" and bool(t.user_triggers)
        conflict_base.update_base(
            link,
            t,
            work.found.target_side,
            work.classified.version,
            written_as_staged=not (r.dead_lettered or fired),
        )
    else:
        conflict_base.rebuild(link, t, compare.sides(ctx, t, link)[1])


def note_conflicts(ctx: RunContext, t: TablePlan, link: Link, r: TableResult, work: Any) -> None:
    """What the conflicts step found, on the table's result."""
    from pgferry.sync import conflict_base

    if not t.track:
        return
    if work is None:  # an empty target: no conflict there, if a base says what was synced
        tgt = compare.sides(ctx, t, link)[1]
        r.conflicts_known = conflict_base.usable(link.tgt, link.ctx.source, t, tgt)
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


def settle(t: TablePlan, r: TableResult) -> None:
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

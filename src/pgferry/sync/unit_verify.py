"""``verify`` and the dry run of a sync: one table per unit, read only.

Contract: :func:`verify_unit` compares one table and fills its result: the differences
(``verify``), or with ``--dry-run`` what a sync would insert, update and delete; for a
tracked table the dry run takes the sync's own comparison and conflicts step, in a
transaction rolled back. An error fails the table and heals the link, not the run.
"""

from __future__ import annotations

import time

import psycopg

from pgferry.errors import PgferryError
from pgferry.pg.connect import begin_repeatable_read, map_db_error, redact
from pgferry.sync import compare, events, multiset, personal
from pgferry.sync.context import RunContext
from pgferry.sync.links import heal
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import TableResult
from pgferry.sync.strategies import batch_progress, note_conflicts
from pgferry.sync.tables import Link


def verify_unit(ctx: RunContext, unit: list[TablePlan], link: Link) -> None:
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
            found = compare.diff(ctx, t, link, batch_progress(ctx, t))
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
        r.status, r.error = "failed", redact(personal.unquoted(err, [t]).message)
        try:
            heal(ctx, link)
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
    begin_repeatable_read(link.tgt)
    try:
        work = compare.checksum_compare(ctx, t, link, batch_progress(ctx, t))
        if work is None:
            note_conflicts(ctx, t, link, r, None)
            return False
        found = work.found
        found.fill(r)
        r.source_rows = found.source_rows
        r.would_insert, r.would_update = found.only_in_source, found.differing
        r.would_delete = found.only_in_target if t.deletes else 0
        note_conflicts(ctx, t, link, r, work)
        if work.stopped:
            r.status, r.error = "planned", None
            r.note = (
                f'{r.conflicts} conflict(s): on_conflict = "stop" would leave this table as it is'
            )
        return True
    finally:
        link.tgt.rollback()

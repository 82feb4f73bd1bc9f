"""The checksum comparison inside a sync: verify a table, or find and apply what differs.

Contract: :func:`diff` runs :func:`pgferry.sync.verify.diff_table` on a
worker's connections (the source inside the run's snapshot; the target inside
the unit's open write transaction for a sync, or in a read-only transaction of
its own for verify). A table of at least ``PARALLEL_MIN_ROWS`` estimated rows
that starts when no other table waits for a worker is compared as key ranges on
the idle workers' share of connection pairs as well (:meth:`RunContext.spare`:
more sources in the run's snapshot, more targets importing the first target's
snapshot), closed when the comparison ends. :func:`checksum_compare` is the
checksum strategy's first step: it compares and returns the :class:`Upserts`:
what to delete (run by the workers, children first) and what the second step
copies with :func:`checksum_upserts`. Ranges where many rows differ are handled as ranges,
so memory is bounded by the number of ranges rather than the number of
differing rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from psycopg import sql

from pgferry.pg.connect import begin_repeatable_read
from pgferry.sync import write
from pgferry.sync.copy import cols
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import TableResult
from pgferry.sync.tables import (
    Link,
    apply_keys,
    copy_range,
    delete_missing_range,
    delete_range,
    full_load,
    is_empty,
)

if TYPE_CHECKING:
    from pgferry.sync.context import RunContext


#: tables of at least this many estimated rows may borrow idle workers for their comparison
PARALLEL_MIN_ROWS = 200_000

#: a compared range with more differing keys than this (or 30% of its rows) is copied whole
DENSE_KEYS = 256


#: one delete statement (or a few) of a table, counting into its result
DeleteOp = Callable[[TableResult], None]


@dataclass
class Upserts:
    """What the checksum comparison left for the load phase: keys and whole source ranges."""

    keys: list[Any] = field(default_factory=list)
    ranges: list[tuple[sql.Composable, list[Any]]] = field(default_factory=list)
    #: rows the source holds (within ``where``), as the comparison counted them
    source_rows: int = 0
    #: the deletes the comparison found, to run (and, if a foreign key refuses them while
    #: a child row still points at them, to run again after the loads)
    deletes: list[DeleteOp] = field(default_factory=list)
    #: the comparison's counts (a TableDiff) and its two sides (row hashes, predicates)
    found: Any = None
    #: what the conflicts step found (None: conflicts not tracked for this table)
    classified: Any = None
    #: conflicts under on_conflict = "stop": this table is left as it was
    stopped: bool = False


def diff(
    ctx: RunContext,
    t: TablePlan,
    link: Link,
    progress: Callable[[int], None],
    on_range: Callable[[Any], None] | None = None,
    *,
    in_unit: bool = False,
    expect_changes: bool = False,
) -> Any:
    """The :class:`~pgferry.sync.verify.TableDiff` of ``t`` (progress in rows compared).

    ``in_unit``: compare inside the unit's open write transaction (a sync); else in
    a ``REPEATABLE READ READ ONLY`` transaction of its own (verify, the dry run,
    the check after a sync). ``expect_changes``: start with every chunk's
    signature (a sync) instead of the whole table's sums (see
    :func:`pgferry.sync.verify.diff_table`). Without it, a big table that starts
    while workers are idle reads its whole-table sums on helper connection pairs
    too — within a unit only while it has written nothing yet (the helpers import
    the transaction's snapshot, which does not see its own writes).
    """
    from pgferry.sync import verify

    last = [0]

    def on_progress(done: int, total: int) -> None:
        if done > last[0]:
            progress(done - last[0])
            last[0] = done

    def run(workers: list[tuple[Any, Any]]) -> Any:
        return verify.diff_table(
            link.src,
            link.tgt,
            t,
            chunk_rows=ctx.opts.chunk_rows,
            key_limit=ctx.opts.key_limit,
            source_exprs={c: e for c, e in ctx.masks.get(t.qualname, {}).items() if c in t.columns}
            or None,
            on_progress=on_progress,
            on_range=on_range,
            workers=workers,
            expect_changes=expect_changes,
        )

    if in_unit and link.dirty:
        return run([])
    if not in_unit:
        link.tgt.rollback()
        begin_repeatable_read(link.tgt, read_only=True)
    helpers: list[Link] = []
    spare = 0
    if (
        link.helpers is not None
        and t.key
        and t.row_estimate >= PARALLEL_MIN_ROWS
        and not expect_changes
    ):
        spare = ctx.spare(link.parts - 1)
    try:
        if spare:
            # a big table while workers are idle: its key ranges are compared on more
            # connection pairs at once, the sources in the run's snapshot, the targets in
            # this transaction's
            row = link.tgt.execute("SELECT pg_export_snapshot()").fetchone()
            assert row is not None
            assert link.helpers is not None
            for _ in range(spare):
                helpers.append(link.helpers())
                begin_repeatable_read(helpers[-1].tgt, read_only=True)
                helpers[-1].tgt.execute(
                    sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(row[0]))
                )
        return run([(h.src, h.tgt) for h in helpers])
    finally:
        if not in_unit:
            link.tgt.rollback()
        for h in helpers:
            for conn in (h.src, h.tgt):
                conn.close()
        ctx.give_back(spare)


def verify_table(
    ctx: RunContext, t: TablePlan, link: Link, r: TableResult, progress: Callable[[int], None]
) -> None:
    """``--mode verify`` for one table: fill the verify counts and the checksums."""
    found = diff(ctx, t, link, progress)
    found.fill(r)
    if not found.identical:
        r.status = "differs"


def checksum_compare(
    ctx: RunContext,
    t: TablePlan,
    link: Link,
    progress: Callable[[int], None],
    keys_only: bool = False,
) -> Upserts | None:
    """Compare chunk checksums: what to delete (as :attr:`Upserts.deletes`) and to copy.

    Runs in the unit's transaction before any write of the table; writes nothing
    but temp tables. None when the target table is empty and no conflicts can
    arise there (the load then takes the COPY fast path). ``keys_only``: compare
    the keys alone (a watermark table's deletes). A tracked table's differences
    go through :func:`pgferry.sync.conflicts.classify` before any delete is planned.
    """
    from pgferry.sync import conflicts

    track = t.track and not keys_only
    if not t.where and is_empty(link, t) and not (track and _base_rows(ctx, t, link)):
        return None
    # Ranges are kept compact while the comparison runs: a range where many rows differ
    # is remembered as a range (copied and pruned as a whole), so memory stays bounded by
    # the number of ranges, not by the number of differing rows.
    ranges: list[tuple[Any, bool]] = []  # (DiffRange without keys if dense, dense?)
    work = Upserts()
    delete: list[Any] = []
    # the comparison's row hashes of the listed keys (the conflicts step needs no other read)
    known: dict[Any, tuple[int | None, int | None]] | None = {} if track else None

    def collect(rg: Any) -> None:
        rows = max(rg.source_rows, rg.target_rows)
        if rg.diffs is None or len(rg.diffs) > max(DENSE_KEYS, rows * 0.3):
            ranges.append((replace(rg, diffs=None), rg.diffs is not None))
            return
        for d in rg.diffs:
            if d.kind == "only_in_target":
                if t.deletes:
                    delete.append(d.key)
                else:
                    continue
            elif not keys_only:
                work.keys.append(d.key)
            else:
                continue
            if known is not None:
                known[d.key] = (d.src_hash, d.tgt_hash)

    spec = replace(t, columns=list(t.key)) if keys_only else t
    # the bar counts each row once: as it is compared here (the load phase that follows
    # writes some of these same rows and does not count them again)
    found = diff(
        ctx,
        spec,
        link,
        progress if not keys_only else (lambda n: None),
        on_range=collect,
        in_unit=True,
        expect_changes=True,
    )
    work.found = found
    if not keys_only:
        work.source_rows = found.source_rows
    src_side, tgt_side = found.source_side, found.target_side
    if track and src_side is not None and tgt_side is not None:
        work.classified = cl = conflicts.classify(
            link,
            t,
            ctx.masks.get(t.qualname, {}),
            src_side,
            tgt_side,
            keys=work.keys,
            deletes=delete,
            src_ranges=[src_side.predicate(rg.range) for rg, _ in ranges if rg.source_rows],
            tgt_ranges=[
                tgt_side.predicate(rg.range) for rg, _ in ranges if rg.target_rows and t.deletes
            ],
            known=known,
        )
        if cl.stop:
            work.stopped = True
            return work
        if cl.conflicts and t.on_conflict == "source":
            t.before_images = True  # the overwritten target rows can be brought back
    for rg, dense in ranges:
        if rg.source_rows and not keys_only and src_side is not None:
            work.ranges.append(src_side.predicate(rg.range))
        if not (rg.target_rows and t.deletes and tgt_side is not None):
            continue
        where, params = tgt_side.predicate(rg.range)
        if dense and rg.source_rows and src_side is not None:
            swhere, sparams = src_side.predicate(rg.range)
            work.deletes.append(partial(_missing, link, t, (swhere, sparams), (where, params)))
        elif not rg.source_rows:
            work.deletes.append(partial(_range, link, t, where, params))
    if delete:
        spared = work.keys if t.loose_keys else []
        work.deletes.append(partial(_delete_keys, link, t, delete, spared))
    return work


def _delete_keys(
    link: Link, t: TablePlan, delete: list[Any], spared: list[Any], r: TableResult
) -> None:
    """Delete the target rows of ``delete`` keys, but none whose key equals one of the
    ``spared`` keys the load writes: with a key whose equality is looser than identity
    ('ann@x' = 'Ann@x'), the load rewrites that row in place, where a delete and an
    insert would take the rows that reference it (ON DELETE CASCADE) with it."""
    keep = None
    if spared:
        keys = write.key_staging(link.tgt, t)
        copy = sql.SQL("COPY {} ({}) FROM STDIN").format(keys, cols(t.key))
        with link.tgt.cursor().copy(copy) as cp:
            for k in spared:
                cp.write_row(k)
        keep = sql.SQL("EXISTS (SELECT 1 FROM {k} k WHERE ({kc}) = ({tc}))").format(
            k=keys, kc=cols(t.key, "k"), tc=cols(t.key, "t")
        )
    apply_keys(link, t, {}, r, [], delete, _uncounted, keep=keep)


def _uncounted(n: int) -> None:
    """Progress of rows the comparison has already counted."""


def _base_rows(ctx: RunContext, t: TablePlan, link: Link) -> bool:
    """A usable base with rows exists: an empty target then means rows were deleted there."""
    from pgferry.sync import conflict_base

    src, tgt = sides(ctx, t, link)
    if not conflict_base.usable(link.tgt, link.ctx.source, t, tgt):
        return False
    row = link.tgt.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(
            conflict_base.base_ident(link.ctx.source, t)
        )
    ).fetchone()
    return bool(row and row[0])


def sides(ctx: RunContext, t: TablePlan, link: Link) -> tuple[Any, Any]:
    """The comparison's two :class:`~pgferry.sync.sides.Side` of ``t`` (agreed hashing)."""
    from pgferry.sync import checksum as ck

    masks = {c: e for c, e in ctx.masks.get(t.qualname, {}).items() if c in t.columns}
    return ck.agree(
        ck.side(link.src, t.schema, t.name, t.key, t.columns, exprs=masks or None, where=t.where),
        ck.side(link.tgt, t.schema, t.name, t.key, t.columns, where=t.where),
    )


def _missing(
    link: Link,
    t: TablePlan,
    source: tuple[sql.Composable, list[Any]],
    target: tuple[sql.Composable, list[Any]],
    r: TableResult,
) -> None:
    delete_missing_range(link, t, r, source, target)


def _range(
    link: Link, t: TablePlan, where: sql.Composable, params: list[Any], r: TableResult
) -> None:
    delete_range(link, t, r, where, params)


def checksum_upserts(
    link: Link,
    t: TablePlan,
    masks: dict[str, sql.Composable],
    r: TableResult,
    work: Upserts | None,
    progress: Callable[[int], None],
) -> None:
    """Copy the differing keys and the source-only ranges found by the comparison.

    Afterwards the counts add up: inserted + updated + unchanged + dead-lettered
    is the number of source rows compared (a row of a dense range copied whole
    and found equal is unchanged, counted once).
    """
    if work is None:  # the table was empty before this unit wrote anything into it
        full_load(link, t, masks, r, progress)
        return
    for where, params in work.ranges:  # rows the comparison counted already
        copy_range(link, t, masks, r, where, params, _uncounted)
    apply_keys(link, t, masks, r, work.keys, [], _uncounted)
    r.source_rows = work.source_rows

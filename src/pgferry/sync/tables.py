"""Loading and deleting one table's rows on a worker's link (all strategies use them).

Contract: each function gets a :class:`Link` (a source connection inside the
run's snapshot and a target connection inside the unit's open transaction),
the table's plan, its masking expressions and its
:class:`~pgferry.sync.result.TableResult`, and fills the counters. None of
them commits: a unit (a table, or the tables foreign keys tie together) is one
target transaction, committed by :mod:`pgferry.sync.unit_write` once every table
of it is done, so a table either ends up synced or exactly as it was.

- :func:`full_load` writes the whole table. Into an empty table it streams one
  ``COPY`` (binary when the types match and nothing is masked; after a
  ``TRUNCATE`` in the same subtransaction and with ``FREEZE`` only when
  ``block_readers`` allows the ACCESS EXCLUSIVE lock that takes). If a row
  fails, it falls back to batches through a staging table, which isolate bad
  rows as dead letters.
- :func:`full_deletes` removes target rows whose key the source lacks
  (called children first, before any load).
- :func:`apply_keys`, :func:`copy_range`, :func:`delete_range` and
  :func:`delete_missing_range` write the checksum strategy's differences.

Every delete goes through :func:`pgferry.sync.deletes.delete_rows`, so on a
table with ``before_images`` the deleted rows are saved in the same statement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq, sql

from pgferry.pg.connect import is_transient
from pgferry.sync import deletes, flush, prefetch, skipped, upserts, write
from pgferry.sync.copy import (
    Key,
    cols,
    copy_in,
    copy_out,
    key_match,
    key_range,
    next_bound,
    pipe,
    select_sql,
    table_ident,
)
from pgferry.sync.copy import where_clause as src_where
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import TableResult

Progress = Callable[[int], None]


@dataclass
class Link:
    """The connections one worker uses: ``src`` reads the snapshot, ``tgt`` writes."""

    src: psycopg.Connection[Any]
    tgt: psycopg.Connection[Any]
    ctx: write.WriteContext
    batch_size: int = 5000
    #: more links for a big table's comparison (``--jobs``), and how many parts at most
    helpers: Callable[[], Link] | None = None
    parts: int = 1
    #: the unit's transaction has written something (a comparison may then no longer be
    #: spread over helper connections, whose snapshot would not see those writes)
    dirty: bool = False
    #: the target's DSN (for the set-aside records, committed on a connection of their own)
    target_dsn: str = ""
    #: what this unit's loads set aside (:mod:`pgferry.sync.aside`), rebuilt after its commit,
    #: and the tables whose set-aside definitions were recorded (forgotten on a rollback)
    aside: list[Any] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    #: tables that held rows when this unit began (emptied by its deletes, they still never
    #: have their indexes set aside: another session may be reading them)
    had_rows: set[str] = field(default_factory=set)
    #: the rebuild of what the committed unit set aside (an :class:`rebuild.RebuildGuard`)
    guard: Any = None


def _binary(t: TablePlan, masks: dict[str, sql.Composable]) -> bool:
    """COPY into a staging table in binary: nothing masked (text columns are cast to text)."""
    return not masks and t.binary_copy


def add_counts(res: TableResult, c: write.Counts) -> None:
    res.inserted += c.inserted
    res.updated += c.updated
    res.source_rows += c.staged
    res.dead_lettered += len(c.dead)
    res.dead_letters.extend(c.dead[: max(0, 20 - len(res.dead_letters))])


def _apply(link: Link, t: TablePlan, stage: sql.Identifier, res: TableResult) -> write.Counts:
    link.dirty = True
    c = upserts.apply(link.tgt, t, link.ctx, stage)
    add_counts(res, c)
    return c


def full_deletes(link: Link, t: TablePlan, res: TableResult) -> None:
    """Delete target rows (within ``where``) whose key the source does not have."""
    if not t.key or is_empty(link, t):
        return
    link.had_rows.add(t.qualname)
    keys = write.key_staging(link.tgt, t)
    kq = sql.SQL("SELECT {} FROM {} WHERE {}").format(cols(t.key), table_ident(t), src_where(t))
    pipe(link.src, link.tgt, kq, [], keys, t.key, binary=t.same_types and t.binary_copy)
    rng = (
        sql.SQL("({})").format(sql.SQL(t.where.replace("%", "%%"))) if t.where else sql.SQL("true")
    )
    link.dirty = True
    res.deleted += deletes.delete_missing(link.tgt, t, link.ctx, keys, rng, [])


def is_empty(link: Link, t: TablePlan) -> bool:
    """True when the target table has no row (read in the link's transaction)."""
    row = link.tgt.execute(
        sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table_ident(t))
    ).fetchone()
    return bool(row and row[0])


def _fast_binary(t: TablePlan, masks: dict[str, sql.Composable]) -> bool:
    """COPY straight into the table in binary: same types, nothing to parse on the target.

    Enum columns are no exception: their binary form is the label, which the target
    looks up as its text input would (a label it lacks fails the row either way).
    """
    return (
        t.same_types
        and t.binary_copy
        and not masks
        and all(c in t.enum_columns for c in t.text_columns)
    )


def full_load(
    link: Link, t: TablePlan, masks: dict[str, sql.Composable], res: TableResult, progress: Progress
) -> None:
    """Make the target table hold the source's rows (deletes already done for keyed tables)."""
    if not t.key and not is_empty(link, t):
        link.had_rows.add(t.qualname)
        link.dirty = True
        res.deleted += deletes.delete_all(link.tgt, t, link.ctx)
    if is_empty(link, t) and not t.where and not t.skip:
        # TRUNCATE of an empty table nothing references, in this subtransaction, is what
        # lets COPY FREEZE write frozen rows (no later vacuum pass); it takes ACCESS
        # EXCLUSIVE until the table commits, so only where readers may wait
        freeze = t.block_readers and not t.referenced and not t.partitioned
        aside = _set_aside(link, t)
        try:
            with link.tgt.transaction():
                if freeze:
                    link.tgt.execute(sql.SQL("TRUNCATE {}").format(table_ident(t)))
                if aside is not None:
                    # in this subtransaction: a row that fails the fast path rolls the drops
                    # back with it, and the batches load with every index in place
                    from pgferry.sync import aside as aside_mod

                    aside_mod.drop(link.tgt, aside)
                est = _Estimate(t, progress)
                sent: list[int] = []
                n = pipe(
                    link.src,
                    link.tgt,
                    select_sql(t, masks, src_where(t)),
                    [],
                    table_ident(t),
                    t.columns,
                    binary=_fast_binary(t, masks),
                    freeze=freeze,
                    on_chunk=est,
                    sent=sent,
                )
                if sent and sent[0] >= 0 and sent != [n]:
                    if skipped.watched(t):
                        raise _Skipped  # the upserts below name each row a trigger skipped
                    raise skipped.unnamed(t, sent[0], n)
                if t.before_images and n:
                    upserts.images_of_inserts(link.tgt, t, link.ctx)
                est.settle(n)
            if aside is not None:
                link.aside.append(aside)
            link.dirty = True
            res.inserted += n
            res.source_rows += n
            return
        except (psycopg.Error, _Skipped) as e:
            if isinstance(e, psycopg.Error) and (
                is_transient(e)
                or link.tgt.broken
                or link.src.broken
                or not write.row_error(e)
                # the source's read failed (a masking rule on one of its values), not a row
                # on the target: the batches could not read it either
                or link.src.info.transaction_status == pq.TransactionStatus.INERROR
            ):
                raise
            res.warnings.append(
                "a trigger on the target skipped rows of the fast COPY path; loading in "
                "batches to name them"
                if isinstance(e, _Skipped)
                else "a row failed the fast COPY path; loading in batches to isolate bad rows"
            )
            if aside is not None:  # the rollback to the savepoint put the indexes back
                from pgferry.sync import aside as aside_mod

                aside_mod.forget(link.target_dsn, [t.qualname])
                link.recorded.remove(t.qualname)
    if not t.key:
        with contextlib.closing(staged(link, t, masks, iter([(sql.SQL("true"), [])]))) as stages:
            for stage in stages:
                progress(_apply(link, t, stage, res).staged)
    else:
        _batches(link, t, masks, res, progress)


class _Skipped(Exception):
    """The fast COPY path wrote fewer rows than the source sent: a trigger skipped some."""


def _set_aside(link: Link, t: TablePlan) -> Any:
    """What an empty ``t`` loads without, recorded (and committed) before it is dropped."""
    if not (t.defer_indexes and link.target_dsn) or t.qualname in link.had_rows:
        return None
    from pgferry.sync import aside

    s = aside.plan(link.tgt, link.src, t)
    if s is not None:
        aside.record(link.target_dsn, link.ctx.run_id, s)
        link.recorded.append(t.qualname)
    return s


def flush_later(link: Link, t: TablePlan, res: TableResult) -> None:
    """Write the rows put aside: of a self-referencing table, those whose parent came in a
    later batch; then those whose unique values another row held (a swap, a chain)."""
    flushed = [flush.flush_later(link.tgt, t, link.ctx)] if t.self_referencing else []
    flushed.append(flush.flush_clashes(link.tgt, t, link.ctx))
    for c in flushed:
        res.inserted += c.inserted
        res.updated += c.updated
        res.dead_lettered += len(c.dead)
        res.dead_letters.extend(c.dead[: max(0, 20 - len(res.dead_letters))])


class _Estimate:
    """Progress from COPY bytes: rows estimated from the table's average row size."""

    def __init__(self, t: TablePlan, progress: Progress) -> None:
        self.per_row = t.total_bytes / t.row_estimate if t.row_estimate > 0 else 0.0
        self.cap = t.row_estimate
        self.sent = 0
        self.progress = progress

    def __call__(self, nbytes: int) -> None:
        if self.per_row > 0:
            rows = min(int(nbytes / self.per_row), max(0, self.cap - self.sent))
            if rows:
                self.sent += rows
                self.progress(rows)

    def settle(self, total: int) -> None:
        """Report what the estimate has not yet covered of the real ``total``."""
        if total > self.sent:
            self.progress(total - self.sent)


def _batches(
    link: Link,
    t: TablePlan,
    masks: dict[str, sql.Composable],
    res: TableResult,
    progress: Progress,
    extra: tuple[sql.Composable, list[Any]] | None = None,
) -> None:
    """Copy the source rows (within ``extra``) in key-range batches of ``batch_size``."""

    def ranges() -> Iterator[tuple[sql.Composable, list[Any]]]:  # (run by the reading thread)
        lo: Key | None = None
        while (hi := next_bound(link.src, t, lo, link.batch_size, extra=extra)) is not None:
            rng, params = key_range(t, lo, hi)
            if extra is not None:
                rng = sql.SQL("({}) AND {}").format(extra[0], rng)
                params = [*extra[1], *params]
            yield rng, params
            lo = hi

    with contextlib.closing(staged(link, t, masks, ranges())) as stages:
        for stage in stages:
            c = _apply(link, t, stage, res)
            progress(c.staged)


def staged(
    link: Link,
    t: TablePlan,
    masks: dict[str, sql.Composable],
    ranges: Iterator[tuple[sql.Composable, list[Any]]],
) -> Generator[sql.Identifier, None, None]:
    """Each range's source rows in a fresh staging table, in turn; the source reads the next
    range's rows while the caller upserts a staged one (:mod:`pgferry.sync.prefetch`).
    ``ranges`` is iterated in the reading thread, on ``link.src``. Use
    :func:`contextlib.closing`: closed early, it waits for the source's read under way."""
    binary = _binary(t, masks)
    queries = (
        copy_out(link.src, select_sql(t, masks, src_where(t, rng), staged=True), p, binary=binary)
        for rng, p in ranges
    )
    with contextlib.closing(prefetch.copies(link.src, queries)) as ahead:
        for data in ahead:
            stage = write.staging(link.tgt, t)
            with link.tgt.cursor().copy(copy_in(stage, t.columns, binary=binary)) as cp:
                for block in data:
                    cp.write(block)
            yield stage


def copy_range(
    link: Link,
    t: TablePlan,
    masks: dict[str, sql.Composable],
    res: TableResult,
    where: sql.Composable,
    params: list[Any],
    progress: Progress,
) -> None:
    """Copy every source row matching ``where`` (a range the target lacks), batch by batch."""
    _batches(link, t, masks, res, progress, extra=(where, params))


def delete_missing_range(
    link: Link,
    t: TablePlan,
    res: TableResult,
    source: tuple[sql.Composable, list[Any]],
    target: tuple[sql.Composable, list[Any]],
) -> None:
    """Delete target rows in a range whose key the source's same range does not hold."""
    keys = write.key_staging(link.tgt, t)
    kq = sql.SQL("SELECT {} FROM {} WHERE {}").format(cols(t.key), table_ident(t), source[0])
    pipe(link.src, link.tgt, kq, source[1], keys, t.key, binary=t.same_types and t.binary_copy)
    link.dirty = True
    res.deleted += deletes.delete_missing(link.tgt, t, link.ctx, keys, target[0], target[1])


def delete_range(
    link: Link, t: TablePlan, res: TableResult, where: sql.Composable, params: list[Any]
) -> None:
    """Delete the target rows matching ``where`` (a range the source no longer has)."""
    link.dirty = True
    res.deleted += deletes.delete_rows(link.tgt, t, link.ctx, where, params)


def apply_keys(
    link: Link,
    t: TablePlan,
    masks: dict[str, sql.Composable],
    res: TableResult,
    upsert: Sequence[Key],
    delete: Sequence[Key],
    progress: Progress,
    keep: sql.Composable | None = None,
) -> None:
    """Copy the rows of ``upsert`` keys from the source and delete ``delete`` keys, in batches
    (but no row that matches ``keep``, a condition on the target's row ``t``)."""
    # a statement takes at most 65535 parameters
    n = max(1, min(link.batch_size, 60000 // max(1, len(t.key))))
    for i in range(0, len(delete), n):
        chunk = list(delete[i : i + n])
        rng, params = key_match(t, chunk)
        if keep is not None:
            rng = sql.SQL("{} AND NOT {}").format(rng, keep)
        delete_range(link, t, res, rng, params)
        progress(len(chunk))
    batches = [upsert[i : i + n] for i in range(0, len(upsert), n)]
    matched = (key_match(t, list(b)) for b in batches)
    with contextlib.closing(staged(link, t, masks, matched)) as stages:
        for batch, stage in zip(batches, stages, strict=True):
            _apply(link, t, stage, res)
            progress(len(batch))

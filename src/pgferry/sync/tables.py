"""One table's writes: full loads, key batches and ranges, deletes (all strategies use them).

Contract: each function gets a :class:`Link` (a source connection inside the
run's snapshot and a target connection), the table's plan, its masking
expressions and its :class:`~pgferry.sync.result.TableResult`, and fills the
counters. Transactions on the target:

- :func:`full_load` writes the whole table in the link's current transaction
  and does not commit (the engine commits per table, or once with
  ``--atomic``). Into an empty table it streams one binary ``COPY`` (with
  ``FREEZE`` after a ``TRUNCATE`` in the same subtransaction, when nothing
  references the table); a big table (``PARALLEL_MIN_ROWS``) with ``--jobs``
  loads as key ranges on several connections under the same snapshot, committed
  together. If a row fails, it falls back to batches, which isolate bad rows.
- :func:`full_deletes` removes target rows whose key the source lacks
  (called children first, before any load).
- :func:`apply_keys`, :func:`copy_range` and :func:`delete_range` commit after
  every batch (so does the watermark strategy, :mod:`pgferry.sync.watermark`,
  with its checkpoint in the same transaction).

Triggers with ``triggers = "disable"`` are disabled and re-enabled inside
each transaction, so a crash can never leave them disabled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgferry.pg.connect import is_transient
from pgferry.sync import write
from pgferry.sync.copy import Key, cols, key_range, next_bound, pipe, select_sql, table_ident
from pgferry.sync.copy import where_clause as src_where
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import TableResult

Progress = Callable[[int], None]


@dataclass
class Link:
    """The connections one worker uses: ``src`` reads the snapshot, ``tgt`` writes."""

    src: psycopg.Connection[Any]
    tgt: psycopg.Connection[Any]
    ctx: write.Context
    batch_size: int = 5000
    #: hold the target transaction open across tables (--atomic, FK cycles)
    hold: bool = False
    #: more links for a big table's key ranges (``--jobs``), and how many parts at most
    helpers: Callable[[], Link] | None = None
    parts: int = 1

    def commit(self) -> None:
        if not self.hold:
            self.tgt.commit()

    def begin(self, t: TablePlan) -> None:
        # Deferrable FKs (cycles, self-references) are checked at commit.
        self.tgt.execute("SET CONSTRAINTS ALL DEFERRED")
        write.triggers(self.tgt, t, enable=False)

    def end(self, t: TablePlan) -> None:
        write.triggers(self.tgt, t, enable=True)


def _binary(t: TablePlan, masks: dict[str, sql.Composable]) -> bool:
    return t.same_types and not masks


def add_counts(res: TableResult, c: write.Counts) -> None:
    res.inserted += c.inserted
    res.updated += c.updated
    res.unchanged += c.unchanged
    res.dead_lettered += len(c.dead)
    res.dead_letters.extend(c.dead[: max(0, 20 - len(res.dead_letters))])


def stage_range(link: Link, t: TablePlan, masks: dict[str, sql.Composable],
                 rng: sql.Composable, params: list[Any]) -> sql.Identifier:
    stage = write.staging(link.tgt, t)
    pipe(link.src, link.tgt, select_sql(t, masks, src_where(t, rng)), params, stage, t.columns,
         binary=_binary(t, masks))
    return stage


def full_deletes(link: Link, t: TablePlan, res: TableResult) -> None:
    """Delete target rows (within ``where``) whose key the source does not have."""
    if not t.key or is_empty(link, t):
        return
    link.begin(t)
    keys = write.key_staging(link.tgt, t)
    kq = sql.SQL("SELECT {} FROM {} WHERE {}").format(cols(t.key), table_ident(t), src_where(t))
    pipe(link.src, link.tgt, kq, [], keys, t.key, binary=t.same_types)
    rng = sql.SQL("({})").format(sql.SQL(t.where.replace("%", "%%"))) if t.where \
        else sql.SQL("true")
    res.deleted += write.delete_missing(link.tgt, t, keys, rng, [])
    link.end(t)


def is_empty(link: Link, t: TablePlan) -> bool:
    """True when the target table has no row (read in the link's transaction)."""
    row = link.tgt.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(
        table_ident(t))).fetchone()
    return bool(row and row[0])


def full_load(link: Link, t: TablePlan, masks: dict[str, sql.Composable], res: TableResult,
              progress: Progress) -> None:
    """Make the target table hold the source's rows (deletes already done for keyed tables)."""
    link.begin(t)
    if not t.key and not is_empty(link, t):
        res.deleted += write.delete_all(link.tgt, t)
    if is_empty(link, t) and not t.where:
        freeze = not t.referenced and not t.partitioned
        try:
            n = _parallel_copy(link, t, masks, progress) if _parallel(link, t) else None
            if n is None:
                with link.tgt.transaction():
                    if freeze:
                        # TRUNCATE of an empty table nothing references, in this
                        # subtransaction, is what lets COPY FREEZE write frozen rows (no
                        # later vacuum pass); it cannot cascade, nothing references it.
                        link.tgt.execute(sql.SQL("TRUNCATE {}").format(table_ident(t)))
                    est = _Estimate(t, progress)
                    n = pipe(link.src, link.tgt, select_sql(t, masks, src_where(t)), [],
                             table_ident(t), t.columns, binary=_binary(t, masks),
                             freeze=freeze, on_chunk=est)
                    est.settle(n)
            res.inserted += n
            link.end(t)
            return
        except psycopg.Error as e:
            if is_transient(e) or link.tgt.broken or link.src.broken or not write.row_error(e):
                raise
            res.warnings.append("a row failed the fast COPY path; loading in batches to "
                                "isolate bad rows")
    if not t.key:
        stage = stage_range(link, t, masks, sql.SQL("true"), [])
        c = write.apply(link.tgt, t, link.ctx, stage)
        add_counts(res, c)
        progress(c.staged)
    else:
        _batches(link, t, masks, res, progress, commit=False)
    flush_later(link, t, res, commit=False)
    link.end(t)


def flush_later(link: Link, t: TablePlan, res: TableResult, *, commit: bool) -> None:
    """Write the rows of a self-referencing table whose parent came in a later batch."""
    if not t.self_referencing:
        return
    if commit:
        link.begin(t)
    add_counts(res, write.flush_later(link.tgt, t, link.ctx))
    if commit:
        link.end(t)
        link.commit()


PARALLEL_MIN_ROWS = 200_000


def _parallel(link: Link, t: TablePlan) -> bool:
    # DISABLE TRIGGER takes a lock that concurrent loaders of the same table would queue on
    return (link.parts > 1 and link.helpers is not None and bool(t.key) and not link.hold
            and t.row_estimate >= PARALLEL_MIN_ROWS
            and not (t.triggers == "disable" and t.user_triggers))


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


def _split_points(src: psycopg.Connection[Any], t: TablePlan, parts: int) -> list[Key]:
    step = max(1, t.row_estimate // parts)
    q = sql.SQL("SELECT {k} FROM {t} ORDER BY {k} OFFSET %s LIMIT 1").format(
        k=cols(t.key), t=table_ident(t))
    points: list[Key] = []
    for i in range(1, parts):
        row = src.execute(q, [step * i]).fetchone()
        if row is None:
            break
        if not points or tuple(row) != points[-1]:
            points.append(tuple(row))
    return points


def _parallel_copy(link: Link, t: TablePlan, masks: dict[str, sql.Composable],
                   progress: Progress) -> int | None:
    """Copy an empty big table as key ranges on ``link.parts`` connections at once.

    Every range loads in its own transaction; they commit only when all of them
    loaded (a failure rolls them all back), so the table still appears at once.
    None when the table does not split or a row failed (the caller falls back).
    """
    assert link.helpers is not None
    points = _split_points(link.src, t, link.parts)
    if not points:
        return None
    edges: list[Key | None] = [None, *points, None]
    ranges = list(zip(edges[:-1], edges[1:], strict=True))
    helpers = [link.helpers() for _ in ranges[1:]]
    links = [link, *helpers]
    lock = threading.Lock()

    def safe_progress(n: int) -> None:
        with lock:
            progress(n)

    def work(lk: Link, rng: tuple[Key | None, Key | None]) -> int:
        where, params = key_range(t, *rng)
        lk.tgt.execute("SET CONSTRAINTS ALL DEFERRED")
        with lk.tgt.transaction():
            return pipe(lk.src, lk.tgt, select_sql(t, masks, src_where(t, where)), params,
                        table_ident(t), t.columns, binary=_binary(t, masks))

    try:
        with ThreadPoolExecutor(len(links)) as pool:
            counts = list(pool.map(work, links, ranges))
        for h in helpers:
            h.tgt.commit()
    except psycopg.Error as e:
        for h in helpers:
            if not h.tgt.broken:
                h.tgt.rollback()
        if (is_transient(e) or not write.row_error(e)
                or any(lk.tgt.broken or lk.src.broken for lk in links)):
            raise
        return None
    finally:
        for h in helpers:
            h.src.close()
            h.tgt.close()
    total = sum(counts)
    safe_progress(total)
    return total


def _batches(link: Link, t: TablePlan, masks: dict[str, sql.Composable], res: TableResult,
             progress: Progress, *, commit: bool,
             extra: tuple[sql.Composable, list[Any]] | None = None) -> None:
    """Copy the source rows (within ``extra``) in key-range batches of ``batch_size``."""
    lo: Key | None = None
    while (hi := next_bound(link.src, t, lo, link.batch_size, extra=extra)) is not None:
        rng, params = key_range(t, lo, hi)
        if extra is not None:
            rng = sql.SQL("({}) AND {}").format(extra[0], rng)
            params = [*extra[1], *params]
        if commit:
            link.begin(t)
        stage = stage_range(link, t, masks, rng, params)
        c = write.apply(link.tgt, t, link.ctx, stage)
        add_counts(res, c)
        if commit:
            link.end(t)
            link.commit()
        progress(c.staged)
        lo = hi


def copy_range(link: Link, t: TablePlan, masks: dict[str, sql.Composable], res: TableResult,
               where: sql.Composable, params: list[Any], progress: Progress) -> None:
    """Copy every source row matching ``where`` (a range the target lacks), batch by batch."""
    _batches(link, t, masks, res, progress, commit=True, extra=(where, params))


def delete_missing_range(link: Link, t: TablePlan, res: TableResult,
                         source: tuple[sql.Composable, list[Any]],
                         target: tuple[sql.Composable, list[Any]]) -> None:
    """Delete target rows in a range whose key the source's same range does not hold."""
    link.begin(t)
    keys = write.key_staging(link.tgt, t)
    kq = sql.SQL("SELECT {} FROM {} WHERE {}").format(cols(t.key), table_ident(t), source[0])
    pipe(link.src, link.tgt, kq, source[1], keys, t.key, binary=t.same_types)
    res.deleted += write.delete_missing(link.tgt, t, keys, target[0], target[1])
    link.end(t)
    link.commit()


def delete_range(link: Link, t: TablePlan, res: TableResult, where: sql.Composable,
                 params: list[Any]) -> None:
    """Delete the target rows matching ``where`` (a range the source no longer has)."""
    link.begin(t)
    doomed = sql.SQL("SELECT * FROM {} WHERE {}").format(table_ident(t), where)
    write.check_unselected(link.tgt, t, doomed, params)
    cur = link.tgt.execute(sql.SQL("DELETE FROM {} WHERE {}").format(table_ident(t), where),
                           params)
    res.deleted += max(cur.rowcount, 0)
    link.end(t)
    link.commit()


def key_match(t: TablePlan, keys: Sequence[Key]) -> tuple[sql.Composable, list[Any]]:
    """``(k1, k2) IN (...)`` matching ``keys``, and its parameters.

    With the key types known and equal on both sides, the keys go as one array per
    key column through ``unnest``: several times faster to plan and run than a
    ``VALUES`` list of thousands of parameters. The type text is PostgreSQL's own
    ``format_type`` output (identifiers already quoted), not user input.
    """
    types = [t.column_types.get(k, "") for k in t.key]
    if t.same_types and all(types) and not any(typ.endswith("]") for typ in types):
        arrays = sql.SQL(", ").join(
            sql.SQL("{}::{}[]").format(sql.Placeholder(), sql.SQL(typ)) for typ in types)
        match = sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(cols(t.key), arrays)
        return match, [list(column) for column in zip(*keys, strict=True)]
    row = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() for _ in t.key))
    values = sql.SQL("VALUES {}").format(sql.SQL(", ").join(row for _ in keys))
    return sql.SQL("({}) IN ({})").format(cols(t.key), values), [v for k in keys for v in k]


def apply_keys(link: Link, t: TablePlan, masks: dict[str, sql.Composable], res: TableResult,
               upsert: Sequence[Key], delete: Sequence[Key], progress: Progress) -> None:
    """Copy the rows of ``upsert`` keys from the source and delete ``delete`` keys, in batches."""
    # a statement takes at most 65535 parameters
    n = max(1, min(link.batch_size, 60000 // max(1, len(t.key))))
    for i in range(0, len(delete), n):
        chunk = list(delete[i:i + n])
        rng, params = key_match(t, chunk)
        delete_range(link, t, res, rng, params)
        progress(len(chunk))
    for i in range(0, len(upsert), n):
        chunk = list(upsert[i:i + n])
        rng, params = key_match(t, chunk)
        link.begin(t)
        stage = stage_range(link, t, masks, rng, params)
        c = write.apply(link.tgt, t, link.ctx, stage)
        add_counts(res, c)
        link.end(t)
        link.commit()
        progress(len(chunk))

"""The execution of a sync run: its units, on ``jobs`` workers.

Contract: :func:`execute` runs a planned :class:`RunContext` (made by
:func:`pgferry.sync.engine.run`) on ``jobs`` workers, each with a
:class:`~pgferry.sync.tables.Link` (a source connection in the shared snapshot
and a target connection; :mod:`pgferry.sync.links`).

A *unit* is a set of tables that must change together: the tables foreign keys
tie together (:func:`units`: a connected group of the selection; with ``--atomic``,
every table). A sync writes each unit in one target transaction
(:mod:`pgferry.sync.unit_write`); ``verify`` compares table by table, read only
(:mod:`pgferry.sync.unit_verify`). Units share nothing and run in parallel. After the
data, the sequences the synced columns use move forward (:mod:`pgferry.sync.sequences`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import psycopg

from pgferry.errors import PgferryError
from pgferry.pg.connect import map_db_error
from pgferry.sync import sequences
from pgferry.sync.context import RunContext
from pgferry.sync.links import new_link
from pgferry.sync.plan import TablePlan
from pgferry.sync.tables import Link
from pgferry.sync.unit_verify import verify_unit
from pgferry.sync.unit_write import write_unit


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
                        links.append(new_link(ctx))
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
                    _cancel_until_done(running)
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


def _cancel_until_done(running: dict[Future[None], Link], patience: float = 60.0) -> None:
    """Cancel the running units' statements until their units have ended.

    A cancel request that reaches a backend between two statements cancels nothing, and
    the unit goes on to its next statement: so it is sent again every second, until every
    unit has ended (they roll back) or ``patience`` runs out.
    """
    deadline = time.monotonic() + patience
    while running:
        for lk in running.values():
            for conn in (lk.tgt, lk.src):
                with contextlib.suppress(Exception):
                    conn.cancel_safe(timeout=2)
        _, left = wait(running, timeout=1.0)
        if not left or time.monotonic() > deadline:
            return


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
        _schedule(ctx, [[t] for t in runnable], jobs, verify_unit)
    elif ctx.opts.atomic:
        _atomic(ctx, runnable)
    else:
        _schedule(ctx, units(runnable), jobs, write_unit)
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
    link = new_link(ctx)
    try:
        write_unit(ctx, runnable, link)
    finally:
        for c in (link.src, link.tgt):
            with contextlib.suppress(psycopg.Error):
                c.close()

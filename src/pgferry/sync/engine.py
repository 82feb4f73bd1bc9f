"""Run a sync or verify: plan, snapshot, workers, retries, sequences, journal.

Contract: :func:`run` is the one service the CLI (and later the admin server)
calls. It validates everything that can be validated before any write (mask
rules and expressions, table names, keys, the personal-data gate) — those
raise :class:`~pgferry.errors.BadInput` / :class:`~pgferry.errors.Refused`
with nothing written — then opens the shared source snapshot
(:class:`~pgferry.sync.copy.Snapshot`), journals the run in the target and
executes the plan:

- ``full``: deletes children first (each table its own transaction), then
  loads parents first; each table is one transaction (all of them one
  transaction with ``atomic``). A transient error retries the table.
- ``incremental``: per table its strategy (``checksum`` via
  :func:`pgferry.sync.verify.diff_table`, then the differing keys are copied;
  ``watermark``; ``full`` when configured); batches commit one by one with their
  checkpoints, so a re-run after a crash continues where it stopped. A
  transient error retries the table (committed batches are not redone).
- ``verify``: the chunked comparison only, read-only on both sides.

The execution itself (workers, retries, phases) lives in
:mod:`pgferry.sync.workers`. The result is a
:class:`~pgferry.sync.result.SyncResult`; the caller maps it to an exit code.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from pgferry import journal
from pgferry.config import Config, parse_duration
from pgferry.pg import catalog
from pgferry.pg.connect import Target, connect
from pgferry.sync import events, masking, state, workers
from pgferry.sync.context import RunContext
from pgferry.sync.copy import Snapshot
from pgferry.sync.plan import Mode, SyncPlan, build_plan
from pgferry.sync.result import SyncResult

_USER_SCHEMAS = """SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%'
AND nspname NOT IN ('information_schema', 'pgferry')"""


@dataclass
class Options:
    """What the command line asked for (config supplies the defaults)."""

    mode: Mode = "incremental"
    tables: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    batch_size: int | None = None
    jobs: int | None = None
    dry_run: bool = False
    atomic: bool = False
    no_mask_reason: str | None = None
    #: seconds a unit of work keeps retrying transient errors before the run fails (exit 3)
    retry_for: float | None = None
    chunk_rows: int = 10_000
    key_limit: int = 20
    #: compare each table again after its load (fills the checksums after; exit 1 on a diff)
    verify_after: bool = False


def _masks(cfg: Config, plan: SyncPlan, src: dict[str, catalog.Table],
           tgt: dict[str, catalog.Table], conn: psycopg.Connection[Any],
           ) -> tuple[dict[str, dict[str, sql.Composable]], masking.MaskRules]:
    rules = masking.compile_rules(cfg.sync.mask)
    out: dict[str, dict[str, sql.Composable]] = {}
    if not rules:
        return out, rules
    key = masking.mask_key(cfg.dotenv()) if rules.needs_key else None
    for t in plan.tables:
        s = src[t.qualname]
        columns = [c for c in s.columns if c.name in t.columns]
        m = masking.mask_expressions(rules, t.qualname, columns, key,
                                     target_columns=tgt[t.qualname].columns, key_columns=t.key)
        if m:
            masking.probe(conn, t.qualname, columns, m, rules)
            out[t.qualname] = m
    return out, rules


def _catalogs(cfg: Config, snap: Snapshot, target: Target
              ) -> tuple[dict[str, catalog.Table], dict[str, catalog.Table],
                         dict[str, catalog.Table]]:
    src = catalog.tables(snap.coordinator, cfg.sync.schemas)
    with connect(target.dsn, autocommit=True) as c:
        schemas = [r[0] for r in c.execute(_USER_SCHEMAS)]
        everything = catalog.tables(c, schemas)
    tgt = {k: v for k, v in everything.items() if v.schema in cfg.sync.schemas}
    return src, tgt, everything


def prepare(cfg: Config, source: Target, target: Target, opts: Options
            ) -> tuple[Snapshot, SyncPlan, dict[str, dict[str, sql.Composable]],
                       dict[str, catalog.Table], list[str]]:
    """Open the snapshot, read both catalogs, plan, check masks. Nothing is written."""
    retry = opts.retry_for if opts.retry_for is not None else parse_duration(
        cfg.sync.retry).total_seconds()
    masking.compile_rules(cfg.sync.mask)  # a bad rule is exit 2 before any connection
    snap = Snapshot(source.dsn, retry_for=retry)
    try:
        src, tgt, everything = _catalogs(cfg, snap, target)
        plan = build_plan(src, tgt, cfg.sync, mode=opts.mode, tables=opts.tables or None,
                          exclude=opts.exclude or None, referencing=everything,
                          history=f"{cfg.migrate.schema_}.{cfg.migrate.history_table}")
        masks, rules = _masks(cfg, plan, src, tgt, snap.coordinator)
        unmasked = masking.refuse_unmasked(
            rules, {t.qualname: src[t.qualname] for t in plan.tables}, source=source,
            target=target, no_mask_reason=opts.no_mask_reason) if opts.mode != "verify" else []
        for t in plan.tables:
            for c, s in src[t.qualname].sequences.items():
                if c in t.sequences:
                    t.sequences[c] = f"{t.sequences[c]}|{s}"  # target|source
        return snap, plan, masks, src, unmasked
    except BaseException:
        snap.close()
        raise


def run(cfg: Config, source: Target, target: Target, opts: Options,
        channel: events.Channel | None = None) -> SyncResult:
    """Plan and execute a sync (or verify) of ``source`` into ``target``."""
    result = SyncResult(source.name, target.name, source.display, target.display,
                        mode=opts.mode, dry_run=opts.dry_run,
                        started_at=datetime.now(UTC), no_mask_reason=opts.no_mask_reason)
    batch = opts.batch_size or cfg.sync.batch_size
    jobs = 1 if opts.atomic else (opts.jobs or cfg.sync.jobs)
    result.options = {"batch_size": batch, "jobs": jobs, "tables": opts.tables,
                      "exclude": opts.exclude, "atomic": opts.atomic}
    snap, plan, masks, src_cat, unmasked = prepare(cfg, source, target, opts)
    rules = masking.compile_rules(cfg.sync.mask)
    try:
        result.warnings.extend(plan.warnings)
        if unmasked:
            result.warnings.append(f"copied unmasked ({opts.no_mask_reason}): "
                                   + ", ".join(unmasked))
        for t in plan.tables:
            r = result.table(t.qualname)
            r.mode, r.strategy = t.mode, t.strategy
            r.estimated_rows, r.estimated_bytes = t.row_estimate, t.total_bytes
            r.warnings.extend(t.warnings)
            for c in masks.get(t.qualname, {}):
                rule = rules.rule_for(t.qualname, c)
                r.masked[c] = rule.spec if rule else ""
            if t.error and opts.mode == "verify" and not t.key:
                # nothing to compare by: say so, but it is not a failed comparison
                r.status = "skipped"
                r.warnings.append("not compared: no primary key and no [sync.tables] key")
            elif t.error:
                r.status, r.error = "failed", t.error
            elif opts.dry_run:
                r.status = "planned"
        if opts.dry_run:
            result.options["plan"] = plan.to_dict()
            result.finished_at = datetime.now(UTC)
            return result
        retry = opts.retry_for if opts.retry_for is not None else parse_duration(
            cfg.sync.retry).total_seconds()
        ctx = RunContext(cfg, source, target, opts, plan, masks, snap, result,
                   uuid.uuid4().hex[:12], channel or events.Channel(), batch,
                   retry, parse_duration(cfg.sync.overlap).total_seconds(), jobs=jobs)
        args = {"source": source.name, "target": target.name, "mode": opts.mode,
                "tables": opts.tables, "exclude": opts.exclude, "batch_size": batch,
                "jobs": jobs, "atomic": opts.atomic, "no_mask_reason": opts.no_mask_reason}
        command = "verify" if opts.mode == "verify" else "sync"
        with journal.operation(target, command, args) as op:
            if opts.mode != "verify":
                with connect(target.dsn, autocommit=True, retry_for=retry) as tc:
                    state.ensure(tc)
            ctx.event(events.RunStarted(source.name, target.name, opts.mode,
                                        [t.qualname for t in plan.tables]))
            for w in result.warnings:
                ctx.event(events.Warning(w))
            try:
                workers.execute(ctx, jobs)
            finally:
                result.finished_at = datetime.now(UTC)
                op.details.update(result.to_dict())
                outcome = result.derive_outcome()
                op.outcome, op.exit_code = outcome, result.exit_code
                ctx.event(events.RunFinished(outcome, result.exit_code, result.duration_s))
        return result
    finally:
        snap.close()


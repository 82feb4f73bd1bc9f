"""Run a sync, a verify or a dry run: plan, snapshot, locks, workers, journal.

Contract: :func:`run` is the one service the CLI (and later the admin server)
calls. It validates everything that can be validated before any write (mask
rules and their direction, table names, keys, the personal-data gate) — those
raise :class:`~pgferry.errors.BadInput` / :class:`~pgferry.errors.Refused`
with nothing written — then opens the shared source snapshot
(:class:`~pgferry.sync.copy.Snapshot`) and executes the plan:

- a sync journals the run in the target, takes the run's table locks
  (:mod:`pgferry.sync.locks`: one sync at a time per target table) and runs
  the tables in units, each one target transaction (:mod:`pgferry.sync.workers`):
  every table ends up synced or exactly as it was;
- ``verify`` and ``--dry-run`` only compare, read-only on both sides (verify
  journals where a journal already exists; a dry run writes nothing at all)
  and count what differs: what a sync would insert, update and delete.

The result is a :class:`~pgferry.sync.result.SyncResult`; the caller maps it to
an exit code.
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
from pgferry.pg.connect import Target, connect, map_db_error
from pgferry.sync import aside, events, locks, masking, state, workers
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
    #: --on-conflict: what a conflict does in every table (wins over the config)
    on_conflict: str | None = None
    #: --rebase: after the writes, the target as it is is what each row was "after the last
    #: sync" (conflicts are found against it next time)
    rebase: bool = False


def _masks(cfg: Config, plan: SyncPlan, src: dict[str, catalog.Table],
           tgt: dict[str, catalog.Table], conn: psycopg.Connection[Any],
           rules: masking.MaskRules, key: str | None) -> dict[str, dict[str, sql.Composable]]:
    out: dict[str, dict[str, sql.Composable]] = {}
    if not rules:
        return out
    for t in plan.tables:
        s = src[t.qualname]
        columns = [c for c in s.columns if c.name in t.columns]
        m = masking.mask_expressions(rules, t.qualname, columns, key,
                                     target_columns=tgt[t.qualname].columns, key_columns=t.key)
        if m:
            masking.probe(conn, t.qualname, columns, m, rules)
            out[t.qualname] = m
            for c in m:
                rule = rules.rule_for(t.qualname, c)
                t.masked[c] = rule.spec if rule else ""
    return out


def _catalogs(cfg: Config, snap: Snapshot, target: Target
              ) -> tuple[dict[str, catalog.Table], dict[str, catalog.Table],
                         dict[str, catalog.Table], str]:
    src = catalog.tables(snap.coordinator, cfg.sync.schemas)
    with connect(target.dsn, autocommit=True) as c:
        schemas = [r[0] for r in c.execute(_USER_SCHEMAS)]
        everything = catalog.tables(c, schemas)
        row = c.execute("SELECT current_user").fetchone()
    tgt = {k: v for k, v in everything.items() if v.schema in cfg.sync.schemas}
    return src, tgt, everything, str(row[0]) if row else ""


@dataclass
class Prepared:
    """What :func:`prepare` found: the open snapshot, the plan, the masks."""

    snapshot: Snapshot
    plan: SyncPlan
    masks: dict[str, dict[str, sql.Composable]]
    source_tables: dict[str, catalog.Table]
    unmasked: list[str]


def rules_for(cfg: Config, source: Target, target: Target) -> masking.MaskRules:
    """The ``[sync.mask]`` rules of this direction.

    Bad rules, and rules that would mask into a protected target, are BadInput
    (exit 2) before any connection.
    """
    return masking.compile_rules(cfg.sync.mask).direction(source, target)


def prepare(cfg: Config, source: Target, target: Target, opts: Options) -> Prepared:
    """Open the snapshot, read both catalogs, plan, check masks. Nothing is written."""
    retry = opts.retry_for if opts.retry_for is not None else parse_duration(
        cfg.sync.retry).total_seconds()
    rules = rules_for(cfg, source, target)
    # --no-mask copies unmasked, but the rules are still checked (a bad rule is bad input);
    # the key is then only a stand-in for that check
    key = (("x" * masking.MIN_KEY_LENGTH if opts.no_mask_reason else masking.mask_key(
        cfg.dotenv())) if rules.needs_key else None)
    snap = Snapshot(source.dsn, retry_for=retry, mask_key=key)
    try:
        src, tgt, everything, trole = _catalogs(cfg, snap, target)
        plan = build_plan(src, tgt, cfg.sync, mode=opts.mode, tables=opts.tables or None,
                          exclude=opts.exclude or None, referencing=everything,
                          history=f"{cfg.migrate.schema_}.{cfg.migrate.history_table}",
                          protected=target.protected, roles=(snap.role, trole),
                          on_conflict=opts.on_conflict)
        masks = _masks(cfg, plan, src, tgt, snap.coordinator, rules, key)
        if opts.no_mask_reason:
            masks, rules = {}, masking.MaskRules()
            for t in plan.tables:
                t.masked.clear()
        unmasked = masking.refuse_unmasked(
            rules, {t.qualname: src[t.qualname] for t in plan.tables}, source=source,
            target=target, no_mask_reason=opts.no_mask_reason) if opts.mode != "verify" else []
        for t in plan.tables:
            s = src[t.qualname]
            for c, seq in {**s.default_sequences, **s.sequences}.items():
                if c in t.sequences:
                    t.sequences[c] = f"{t.sequences[c]}|{seq}"  # target|source
        return Prepared(snap, plan, masks, src, unmasked)
    except BaseException:
        snap.close()
        raise


def _fill(result: SyncResult, plan: SyncPlan, opts: Options) -> None:
    """The result's tables as planned (before anything runs)."""
    result.warnings.extend(plan.warnings)
    result.findings.extend(plan.findings)
    for n in plan.missing_tables:
        r = result.table(n)
        r.status = "missing"
        r.findings.append("exists on the source but not on the target: apply the migrations "
                          "first")
    for t in plan.tables:
        r = result.table(t.qualname)
        r.mode, r.strategy = t.mode, t.strategy
        r.estimated_rows, r.estimated_bytes = t.row_estimate, t.total_bytes
        r.warnings.extend(t.warnings)
        r.findings.extend(t.findings)
        r.masked.update(t.masked)
        r.before_images = t.before_images and not opts.dry_run and opts.mode != "verify"
        if t.error:
            r.status, r.error = "failed", t.error
        elif opts.dry_run:
            r.status = "planned"


def _recover(target: Target, plan: SyncPlan, jobs: int, result: SyncResult) -> None:
    """Rebuild what an interrupted run left set aside (:func:`pgferry.sync.aside.recover`)."""
    try:
        rebuilt, elsewhere = aside.recover(target.dsn, [t.qualname for t in plan.runnable],
                                           jobs)
    except psycopg.Error as e:
        raise map_db_error(e, "rebuilding the indexes an interrupted sync set aside") from None
    if rebuilt:
        result.warnings.append("rebuilt index(es) an interrupted sync had set aside: "
                               + ", ".join(rebuilt))
    if elsewhere:
        result.warnings.append("an interrupted sync set aside indexes of "
                               + ", ".join(elsewhere) + " (see pgferry.set_aside); the next "
                               "sync of those tables rebuilds them")


def run(cfg: Config, source: Target, target: Target, opts: Options,
        channel: events.Channel | None = None) -> SyncResult:
    """Plan and execute a sync (or verify, or a dry run) of ``source`` into ``target``."""
    result = SyncResult(source.name, target.name, source.display, target.display,
                        mode=opts.mode, dry_run=opts.dry_run,
                        started_at=datetime.now(UTC), no_mask_reason=opts.no_mask_reason,
                        run_id=uuid.uuid4().hex[:12])
    batch = opts.batch_size or cfg.sync.batch_size
    jobs = 1 if opts.atomic else (opts.jobs or cfg.sync.jobs)
    result.options = {"batch_size": batch, "jobs": jobs, "tables": opts.tables,
                      "exclude": opts.exclude, "atomic": opts.atomic,
                      "on_conflict": opts.on_conflict}
    prep = prepare(cfg, source, target, opts)
    plan, snap = prep.plan, prep.snapshot
    try:
        _fill(result, plan, opts)
        result.options["table_policies"] = [
            {"table": t.qualname, "on_conflict": t.on_conflict,
             "keep_target_changes": t.keep_target_changes} for t in plan.tables if t.track]
        if prep.unmasked:
            result.warnings.append(f"copied unmasked ({opts.no_mask_reason}): "
                                   + ", ".join(prep.unmasked))
        retry = opts.retry_for if opts.retry_for is not None else parse_duration(
            cfg.sync.retry).total_seconds()
        ctx = RunContext(cfg, source, target, opts, plan, prep.masks, snap, result,
                         result.run_id, channel or events.Channel(), batch,
                         retry, parse_duration(cfg.sync.overlap).total_seconds(), jobs=jobs)
        if opts.dry_run:
            # read-only on both sides: the comparison the sync would make, counted
            result.options["plan"] = plan.to_dict()
            workers.execute(ctx, jobs)
            result.finished_at = datetime.now(UTC)
            return result
        args = {"source": source.name, "target": target.name, "mode": opts.mode,
                "tables": opts.tables, "exclude": opts.exclude, "batch_size": batch,
                "jobs": jobs, "atomic": opts.atomic, "no_mask_reason": opts.no_mask_reason,
                "run_id": result.run_id, "on_conflict": opts.on_conflict}
        verify = opts.mode == "verify"
        # verify is read-only on both sides: it journals only where a journal exists
        with journal.operation(target, "verify" if verify else "sync", args,
                               create=not verify) as op:
            lock = None
            try:
                if not verify:
                    with connect(target.dsn, autocommit=True, retry_for=retry) as tc:
                        state.ensure(tc)
                        state.expire_images(tc, parse_duration(
                            cfg.sync.keep_before_images_for).total_seconds())
                    lock = locks.acquire(target, [t.qualname for t in plan.runnable],
                                         parse_duration(cfg.sync.lock_wait).total_seconds(),
                                         result.run_id)
                    _recover(target, plan, jobs, result)
                ctx.event(events.RunStarted(source.name, target.name, opts.mode,
                                            [t.qualname for t in plan.tables]))
                for w in result.warnings:
                    ctx.event(events.Warning(w))
                workers.execute(ctx, jobs)
            finally:
                if lock is not None:
                    lock.close()
                result.finished_at = datetime.now(UTC)
                op.details.update(result.to_dict())
                outcome = result.derive_outcome()
                op.outcome, op.exit_code = outcome, result.exit_code
                ctx.event(events.RunFinished(outcome, result.exit_code, result.duration_s))
        return result
    finally:
        snap.close()

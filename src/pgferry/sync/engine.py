"""Run a sync, a verify or a dry run: plan, snapshot, locks, workers, journal.

Contract: :func:`start` validates everything that can be validated before any
write (mask rules and their direction, table names, keys, the personal-data
gate) — those raise :class:`~pgferry.errors.BadInput` /
:class:`~pgferry.errors.Refused` with nothing written — then opens the shared
source snapshot (:class:`~pgferry.sync.copy.SourceSnapshot`) and plans the run;
:func:`execute` runs it:

- a sync takes the run's table locks (:mod:`pgferry.sync.locks`: one sync at a
  time per target table) and runs the tables in units, each one target
  transaction (:mod:`pgferry.sync.unit_write`): every table ends up synced or
  exactly as it was;
- ``verify`` and ``--dry-run`` only compare, read-only on both sides, and
  count what differs: what a sync would insert, update and delete.

The journal (a sync journals the run in the target; verify where a journal
already exists; a dry run writes nothing at all) is the command layer's
(:mod:`pgferry.commands.sync`), around :func:`execute`, with
:attr:`Started.arguments`. :func:`run` is :func:`start` and :func:`execute` in
one, unjournaled (tests, previews). The run's id is :attr:`Options.run_id` when the
caller chose it beforehand (:func:`new_run_id`; the release saga does, so it knows the
run even when it raises), else a new one. The result is a
:class:`~pgferry.sync.result.SyncResult`; the caller maps it to an exit code.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from pgferry.config import Config
from pgferry.pg import catalog
from pgferry.pg.connect import Target, connect, map_db_error
from pgferry.sync import aside, events, locks, masking, rebuild, shared_keys, state, workers
from pgferry.sync.context import RunContext
from pgferry.sync.copy import SourceSnapshot
from pgferry.sync.plan import Mode, SyncPlan, build_plan, check_schemas
from pgferry.sync.result import SyncResult


def new_run_id() -> str:
    """A new sync run id (12 hex digits): the journal's, dead letters', before-images'."""
    return uuid.uuid4().hex[:12]


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
    #: the run's id, chosen by the caller before the run starts (a release's saga keeps it,
    #: so it can revert what the run committed even when the run raises); default: a new one
    run_id: str | None = None

    def retry(self, cfg: Config) -> float:
        """Seconds of retries: ``retry_for``, else ``[sync] retry``."""
        return self.retry_for if self.retry_for is not None else cfg.sync.retry.total_seconds()


def _masks(
    plan: SyncPlan,
    src: dict[str, catalog.Table],
    tgt: dict[str, catalog.Table],
    conn: psycopg.Connection[Any],
    rules: masking.MaskRules,
    key: str | None,
) -> dict[str, dict[str, sql.Composable]]:
    out: dict[str, dict[str, sql.Composable]] = {}
    if not rules:
        return out
    for t in plan.tables:
        s = src[t.qualname]
        columns = [c for c in s.columns if c.name in t.columns]
        m = masking.mask_expressions(
            rules,
            t.qualname,
            columns,
            key,
            target_columns=tgt[t.qualname].columns,
            key_columns=t.key,
        )
        if m:
            masking.probe(conn, t.qualname, columns, m, rules)
            out[t.qualname] = m
            for c in m:
                rule = rules.rule_for(t.qualname, c)
                t.masked[c] = rule.spec if rule else ""
    return out


def _catalogs(
    cfg: Config, snap: SourceSnapshot, source: Target, target: Target, retry: float
) -> tuple[dict[str, catalog.Table], dict[str, catalog.Table], dict[str, catalog.Table], str, int]:
    src = catalog.tables(snap.coordinator, cfg.sync.schemas)
    if not src:  # a misconfigured schema list would compare nothing and say ok
        check_schemas(
            cfg.sync.schemas, catalog.user_schemas(snap.coordinator, with_tables=True), source.name
        )
    # retried as long as the source's first connection (``[sync] retry``), not the
    # connection's own default (10 s), whatever the configuration said
    with connect(target.dsn, autocommit=True, retry_for=retry) as c:
        everything = catalog.tables(c, catalog.user_schemas(c))
        row = c.execute("SELECT current_user").fetchone()
        version = c.info.server_version
        # a primary key an interrupted run set aside is planned with: the run rebuilds it
        # (:func:`_recover`) before it writes; it was set aside only where the source has
        # the same one
        for name in aside.primary_keys_set_aside(c):
            if name in everything and name in src and not everything[name].primary_key:
                everything[name].primary_key = src[name].primary_key
    tgt = {k: v for k, v in everything.items() if v.schema in cfg.sync.schemas}
    return src, tgt, everything, str(row[0]) if row else "", version


@dataclass
class Prepared:
    """What :func:`prepare` found: the open snapshot, the plan, the masks."""

    snapshot: SourceSnapshot
    plan: SyncPlan
    masks: dict[str, dict[str, sql.Composable]]
    unmasked: list[str]


def rules_for(cfg: Config, source: Target, target: Target) -> masking.MaskRules:
    """The ``[sync.mask]`` rules of this direction.

    Bad rules, and rules that would mask into a protected target, are BadInput
    (exit 2) before any connection.
    """
    return masking.compile_rules(cfg.sync.mask).direction(source, target)


def prepare(cfg: Config, source: Target, target: Target, opts: Options) -> Prepared:
    """Open the snapshot, read both catalogs, plan, check masks. Nothing is written."""
    retry = opts.retry(cfg)
    rules = rules_for(cfg, source, target)
    # --no-mask copies unmasked, but the rules are still checked (a bad rule is bad input);
    # the key is then only a stand-in for that check
    key = (
        ("x" * masking.MIN_KEY_LENGTH if opts.no_mask_reason else masking.mask_key(cfg.dotenv()))
        if rules.needs_key
        else None
    )
    snap = SourceSnapshot(source.dsn, retry_for=retry, mask_key=key)
    try:
        src, tgt, everything, trole, tversion = _catalogs(cfg, snap, source, target, retry)
        plan = build_plan(
            src,
            tgt,
            cfg.sync,
            mode=opts.mode,
            tables=opts.tables or None,
            exclude=opts.exclude or None,
            referencing=everything,
            history=f"{cfg.migrate.schema_}.{cfg.migrate.history_table}",
            protected=target.protected,
            roles=(snap.role, trole),
            on_conflict=opts.on_conflict,
        )
        shared_keys.check(snap.coordinator, plan, src)
        if snap.coordinator.info.server_version // 10000 != tversion // 10000:
            for t in plan.tables:
                t.across_versions()
        masks = _masks(plan, src, tgt, snap.coordinator, rules, key)
        if opts.no_mask_reason:
            masks, rules = {}, masking.MaskRules()
            for t in plan.tables:
                t.masked.clear()
        unmasked = (
            masking.refuse_unmasked(
                rules,
                {t.qualname: src[t.qualname] for t in plan.tables},
                source=source,
                target=target,
                no_mask_reason=opts.no_mask_reason,
            )
            if opts.mode != "verify"
            else []
        )
        for t in plan.tables:
            s = src[t.qualname]
            for c, seq in {**s.default_sequences, **s.sequences}.items():
                if c in t.sequences:
                    t.sequences[c] = f"{t.sequences[c]}|{seq}"  # target|source
        return Prepared(snap, plan, masks, unmasked)
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
        r.findings.append("exists on the source but not on the target: apply the migrations first")
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


def _recover(
    target: Target, plan: SyncPlan, jobs: int, result: SyncResult, memory: str | None
) -> None:
    """Rebuild what an interrupted run left set aside (:func:`pgferry.sync.rebuild.recover`)."""
    try:
        rebuilt, elsewhere = rebuild.recover(
            target.dsn, [t.qualname for t in plan.runnable], jobs, memory
        )
    except psycopg.Error as e:
        raise map_db_error(e, "rebuilding the indexes an interrupted sync set aside") from None
    if rebuilt:
        result.warnings.append(
            "rebuilt index(es) an interrupted sync had set aside: " + ", ".join(rebuilt)
        )
    if elsewhere:
        result.warnings.append(
            "an interrupted sync set aside indexes of "
            + ", ".join(elsewhere)
            + " (see pgferry.set_aside); the next "
            "sync of those tables rebuilds them"
        )


@dataclass
class Started:
    """A planned run with its source snapshot open (see :func:`start`)."""

    ctx: RunContext
    plan: SyncPlan
    #: what the journal records as the run's arguments
    arguments: dict[str, Any]

    @property
    def result(self) -> SyncResult:
        return self.ctx.result


@contextmanager
def start(
    cfg: Config,
    source: Target,
    target: Target,
    opts: Options,
    channel: events.Channel | None = None,
) -> Iterator[Started]:
    """Plan the run (nothing written); the snapshot closes when the block ends."""
    result = SyncResult(
        source.name,
        target.name,
        source.display,
        target.display,
        mode=opts.mode,
        dry_run=opts.dry_run,
        started_at=datetime.now(UTC),
        no_mask_reason=opts.no_mask_reason,
        run_id=opts.run_id or new_run_id(),
    )
    batch = opts.batch_size or cfg.sync.batch_size
    jobs = 1 if opts.atomic else (opts.jobs or cfg.sync.jobs)
    result.options = {
        "batch_size": batch,
        "jobs": jobs,
        "tables": opts.tables,
        "exclude": opts.exclude,
        "atomic": opts.atomic,
        "on_conflict": opts.on_conflict,
    }
    prep = prepare(cfg, source, target, opts)
    plan, snap = prep.plan, prep.snapshot
    try:
        _fill(result, plan, opts)
        result.options["table_policies"] = [
            {
                "table": t.qualname,
                "on_conflict": t.on_conflict,
                "keep_target_changes": t.keep_target_changes,
            }
            for t in plan.tables
            if t.track
        ]
        if prep.unmasked:
            result.warnings.append(
                f"copied unmasked ({opts.no_mask_reason}): " + ", ".join(prep.unmasked)
            )
        retry = opts.retry(cfg)
        ctx = RunContext(
            cfg,
            source,
            target,
            opts,
            plan,
            prep.masks,
            snap,
            result,
            result.run_id,
            channel or events.Channel(),
            batch,
            retry,
            cfg.sync.overlap.total_seconds(),
            jobs=jobs,
        )
        args = {
            "source": source.name,
            "target": target.name,
            "mode": opts.mode,
            "tables": opts.tables,
            "exclude": opts.exclude,
            "batch_size": batch,
            "jobs": jobs,
            "atomic": opts.atomic,
            "no_mask_reason": opts.no_mask_reason,
            "run_id": result.run_id,
            "on_conflict": opts.on_conflict,
        }
        yield Started(ctx, plan, args)
    finally:
        snap.close()


def execute(run: Started) -> None:
    """Run what :func:`start` planned; the result is filled in also when it raises."""
    ctx, plan, result, opts = run.ctx, run.plan, run.result, run.ctx.opts
    cfg, source, target = ctx.cfg, ctx.source, ctx.target
    if opts.dry_run:
        # read-only on both sides: the comparison the sync would make, counted
        result.options["plan"] = plan.to_dict()
        workers.execute(ctx, ctx.jobs)
        result.finished_at = datetime.now(UTC)
        return
    lock = None
    try:
        if opts.mode != "verify":
            with connect(target.dsn, autocommit=True, retry_for=ctx.retry_for) as tc:
                state.ensure(tc)
                state.expire_images(tc, cfg.sync.keep_before_images_for.total_seconds())
            lock = locks.acquire(
                target,
                [t.qualname for t in plan.runnable],
                cfg.sync.lock_wait.total_seconds(),
                result.run_id,
            )
            _recover(target, plan, ctx.jobs, result, ctx.cfg.sync.rebuild_memory)
        ctx.event(
            events.RunStarted(
                source.name, target.name, opts.mode, [t.qualname for t in plan.tables]
            )
        )
        for w in result.warnings:
            ctx.event(events.Warning(w))
        workers.execute(ctx, ctx.jobs)
    finally:
        if lock is not None:
            lock.close()
        result.finished_at = datetime.now(UTC)
        ctx.event(events.RunFinished(result.derive_outcome(), result.exit_code, result.duration_s))


def run(
    cfg: Config,
    source: Target,
    target: Target,
    opts: Options,
    channel: events.Channel | None = None,
) -> SyncResult:
    """Plan and execute a sync (or verify, or a dry run) of ``source`` into ``target``;
    not journaled (:func:`pgferry.commands.sync.sync` is the journaled command)."""
    with start(cfg, source, target, opts, channel) as started:
        execute(started)
        return started.result

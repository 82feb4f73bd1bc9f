"""``migrate new|number|sum|status|validate|baseline|repair``.

Contract: one function per verb, each taking the config and its options and
returning a result dataclass whose ``to_dict()`` is the verb's ``--json``
object. ``baseline`` and ``repair`` rewrite the history: they go through the
policy (blackout window first, then ``--yes``: a protected environment, and for
``repair`` every environment), are journaled in the target, and refusals are
journaled where the journal exists. ``validate`` reports problems in its
result (:attr:`ValidateResult.exit_code` 1); it never raises for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pgferry.commands import base
from pgferry.config import Config
from pgferry.events import Notice, Subscriber, ignore
from pgferry.migrate import admin, files, templates
from pgferry.migrate import status as status_mod
from pgferry.migrate.history import BASELINE_SCRIPT
from pgferry.policy import WriteRequest

# -- new, number, sum: files only ----------------------------------------------------


@dataclass
class NewResult:
    created: list[str]
    sum: Path
    #: the sum file as the config names it (``migrations/pgferry.sum``)
    sum_shown: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "created": self.created, "sum": str(self.sum)}


def new(
    cfg: Config, description: str, *, undo: bool = False, today: date | None = None
) -> NewResult:
    """``migrate new``: a template ``VXXX__<desc>.sql`` (and ``UXXX`` with ``undo``)."""
    written = templates.new(
        cfg.migrations_dir, description, undo=undo, today=(today or date.today()).isoformat()
    )
    rel = [str(p.relative_to(cfg.root)) if p.is_relative_to(cfg.root) else str(p) for p in written]
    return NewResult(
        rel, cfg.migrations_dir / files.SUM_FILE, f"{cfg.migrate.dir}/{files.SUM_FILE}"
    )


def new_expand_contract(
    cfg: Config,
    description: str,
    *,
    table: str | None = None,
    env: str | None = None,
    today: date | None = None,
) -> NewResult:
    """``migrate new --expand-contract``: the five files of a zero-downtime recipe
    (:mod:`pgferry.migrate.recipes`), written from the catalog of ``env``."""
    import psycopg

    from pgferry.errors import BadInput
    from pgferry.migrate import recipe_sql, recipes
    from pgferry.pg.connect import connect, map_db_error

    spec = recipes.parse(description, table)
    if not cfg.migrations_dir.is_dir():
        raise BadInput(
            f"migrations directory {cfg.migrations_dir} does not exist; run `pgferry init`"
        )
    target = base.target(cfg, env)
    try:
        with connect(target.dsn, autocommit=True) as c:
            facts = recipes.read_facts(c, spec)
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot read the catalog of {target.name}") from None
    slug = recipes.slug_of(spec)
    rendered = recipe_sql.files_for(spec, facts, slug, (today or date.today()).isoformat())
    written = recipes.write(cfg.migrations_dir, cfg.backfills_dir, rendered)
    files.write_sum(files.scan(cfg.migrations_dir))
    rel = [str(p.relative_to(cfg.root)) if p.is_relative_to(cfg.root) else str(p) for p in written]
    return NewResult(
        rel, cfg.migrations_dir / files.SUM_FILE, f"{cfg.migrate.dir}/{files.SUM_FILE}"
    )


@dataclass
class NumberResult:
    dry_run: bool
    renames: list[templates.Rename] = field(default_factory=list)
    environments: list[templates.EnvVersion] = field(default_factory=list)
    orphan_undo: list[str] = field(default_factory=list)
    highest: str | None = None
    #: False when there was no template to number
    had_templates: bool = True
    sum_shown: str = ""

    def to_dict(self) -> dict[str, Any]:
        if not self.had_templates:
            return {"ok": True, "renames": [], "environments": [], "dry_run": self.dry_run}
        return {
            "ok": True,
            "dry_run": self.dry_run,
            "renames": [r.to_dict() for r in self.renames],
            "environments": [e.to_dict() for e in self.environments],
            "orphan_undo": self.orphan_undo,
        }


def number(
    cfg: Config, *, dry_run: bool = False, progress: Subscriber | None = None
) -> NumberResult:
    """``migrate number``: every VXXX/UXXX template gets the next free version (above every
    file and every version applied in any environment it can reach)."""
    say = progress or ignore
    ms = files.scan(cfg.migrations_dir)
    if not ms.templates:
        return NumberResult(dry_run, had_templates=False)
    envs = templates.env_versions(cfg, ms)
    for e in envs:
        if e.error:
            say(Notice(f"warning: {e.env} not reachable, its versions are not counted: {e.error}"))
    applied = [e.version for e in envs if e.version is not None]
    renames = templates.plan_numbering(ms, max(applied, default=None), templates.merged_keep(envs))
    if not dry_run:
        templates.apply_renames(ms, renames)
    orphans = templates.orphan_undo_templates(ms)
    for o in orphans:
        say(Notice(f"warning: {o} has no VXXX file of the same description; left as it is"))
    return NumberResult(
        dry_run,
        renames,
        envs,
        orphans,
        str(ms.highest) if ms.highest is not None else None,
        sum_shown=f"{cfg.migrate.dir}/{files.SUM_FILE}",
    )


@dataclass
class SumResult:
    path: Path
    was: str
    files: int
    total: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "path": str(self.path),
            "was": self.was,
            "files": self.files,
            "total": self.total,
        }


def write_sum(cfg: Config) -> SumResult:
    """``migrate sum``: rewrite ``pgferry.sum`` from the files on disk."""
    ms = files.scan(cfg.migrations_dir)
    before = files.sum_state(ms)
    path = files.write_sum(ms)
    lines = path.read_text(encoding="utf-8").splitlines()
    return SumResult(path, before, len(lines) - 1, lines[0])


# -- status, validate: read-only ---------------------------------------------------------


def status(cfg: Config, env: str | None = None) -> status_mod.Status:
    """``migrate status``: applied, pending, failed, ignored, missing, changed; templates."""
    return status_mod.collect(cfg, base.target(cfg, env))


@dataclass
class ValidateResult:
    env: str
    status: status_mod.Status
    problems: list[str]
    warnings: list[str]

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "env": self.env,
            "current_version": self.status.current,
            "sum": self.status.sum_state,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def validate(cfg: Config, env: str | None = None) -> ValidateResult:
    """``migrate validate``: an applied file changed or gone, a failed run, a stale sum."""
    t = base.target(cfg, env)
    s = status_mod.collect(cfg, t)
    return ValidateResult(t.name, s, status_mod.problems(s), status_mod.warnings(s))


# -- baseline, repair: history rewrites ---------------------------------------------------


@dataclass(frozen=True)
class RewriteOptions:
    env: str | None = None
    yes: bool = False
    override_blackout: bool = False
    reason: str | None = None


@dataclass
class BaselineDone:
    baseline: admin.BaselineResult

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, **self.baseline.to_dict()}


def baseline(
    cfg: Config,
    version: str,
    opts: RewriteOptions,
    *,
    description: str = BASELINE_SCRIPT,
    now: datetime | None = None,
    confirm: base.Confirm | None = None,
) -> BaselineDone:
    """``migrate baseline``: adopt an existing database at ``version`` (Flyway's BASELINE)."""
    from pgferry import journal

    when = base.now_or(now)
    target = base.target(cfg, opts.env)
    command = "migrate baseline"
    req = WriteRequest(
        command,
        target.name,
        target.protected,
        action=f"baseline {target.name} at version {version}",
        yes=opts.yes,
        override_blackout=opts.override_blackout,
        reason=opts.reason,
    )
    window = base.authorize(cfg, target, req, now=when, rules=("input", "blackout"))
    base.authorize(cfg, target, req, now=when, rules=("protected",), confirm=confirm)
    args: dict[str, Any] = {"version": version, "description": description, "yes": opts.yes}
    with journal.operation(target, command, args) as op:
        if window.window is not None:
            op.details["blackout_override"] = {"reason": opts.reason, "window": window.window_text}
        res = admin.baseline(
            cfg, target, version, description, under_lock=base.blackout_again(cfg, req, now)
        )
        op.details.update(res.to_dict())
    return BaselineDone(res)


@dataclass
class RepairResult:
    env: str
    plan: admin.RepairPlan
    changed: bool
    #: False: there was nothing to repair (nothing was asked or journaled)
    ran: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, **self.plan.to_dict(), "changed": self.changed}


def repair_lines(plan: admin.RepairPlan, done: bool) -> list[str]:
    """What a repair changes (``done``) or will change, one line per history row."""
    remove, realign, convert = (
        ("removed", "realigned", "converted")
        if done
        else ("will remove", "will realign", "will convert")
    )
    return (
        [
            f"{remove} failed row {r.installed_rank}: {r.version or ''} {r.script}"
            for r in plan.remove
        ]
        + [
            f"{realign} {a.version} {a.script}: checksum {a.old_checksum} → {a.new_checksum}"
            for a in plan.realign
        ]
        + [
            f"{convert} UNDO_SQL row {c.installed_rank} ({c.script}) into the DELETE row "
            f"Flyway reads for {c.version} {c.becomes}"
            for c in plan.convert
        ]
    )


def repair(
    cfg: Config,
    opts: RewriteOptions,
    *,
    now: datetime | None = None,
    progress: Subscriber | None = None,
    confirm: base.Confirm | None = None,
) -> RepairResult:
    """``migrate repair``: remove failed rows, realign checksums to the files (needs --yes)."""
    from pgferry import journal

    when = base.now_or(now)
    target = base.target(cfg, opts.env)
    name, command = target.name, "migrate repair"
    req = WriteRequest(
        command,
        name,
        target.protected,
        yes=opts.yes,
        override_blackout=opts.override_blackout,
        reason=opts.reason,
        rewrites_history=True,
        action=f"repair the migration history of {name}" if target.protected else "repair",
    )
    window = base.authorize(cfg, target, req, now=when, rules=("input", "blackout"))
    plan = admin.read_plan(cfg, target)
    if plan.empty:
        return RepairResult(name, plan, False, ran=False)
    if not opts.yes:
        for line in repair_lines(plan, done=False):
            (progress or ignore)(Notice(line))
    base.authorize(cfg, target, req, now=when, rules=("protected",), confirm=confirm)
    with journal.operation(target, command, {"yes": opts.yes}) as op:
        if window.window is not None:
            op.details["blackout_override"] = {"reason": opts.reason, "window": window.window_text}
        done = admin.repair(cfg, target, under_lock=base.blackout_again(cfg, req, now))
        op.details.update(done.to_dict())
    return RepairResult(name, done, not done.empty)

"""``migrate plan``, ``migrate up`` and ``migrate undo``: the verbs that execute SQL.

Contract: :func:`plan` is read-only (the exact SQL ``up`` would run);
:func:`up` and :func:`undo` (both :func:`run`) decide by policy, in this order,
before anything runs: bad input (``--allow-unsafe``/``--override-blackout``
without ``--reason``), the blackout window, the protected environment (the
``confirm`` callback may ask a person), then the checks of
:mod:`pgferry.migrate.service` and the lint gate on the plan, which is judged
again under the migration lock. A refusal is journaled where the journal
exists; the run itself is journaled (``migrate up``/``migrate undo``: applied
files, durations, override reasons) and publishes
:mod:`pgferry.migrate.events` to ``progress``. ``--dry-run`` checks everything
(a blackout window refuses it too, unjournaled) and changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pgferry.commands import base
from pgferry.config import Config
from pgferry.errors import BadInput
from pgferry.events import Subscriber
from pgferry.migrate import files, preflight, service
from pgferry.migrate.files import MigrationFile, Version
from pgferry.migrate.plan import current_version
from pgferry.migrate.settings import FileResult, RunSettings
from pgferry.pg.connect import Target
from pgferry.policy import GateFinding, WriteRequest, decide


def parse_version(text: str | None, opt: str) -> Version | None:
    """``--target 3`` / ``--to 1.2`` as a version; BadInput naming the option."""
    if text is None:
        return None
    try:
        return Version.parse(text)
    except BadInput:
        raise BadInput(f"{opt} {text!r} is not a version (like 3 or 1.2)") from None


@dataclass(frozen=True)
class PlanOptions:
    env: str | None = None
    #: apply up to this version (``--target``)
    target: str | None = None
    out_of_order: bool = False


@dataclass
class PlanResult:
    env: str
    current_version: str | None
    settings: dict[str, Any]
    steps: list[dict[str, Any]]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "current_version": self.current_version,
                "settings": self.settings, "steps": self.steps, "warnings": self.warnings}


def lint_gate(cfg: Config, target: Target) -> service.LintFiles:
    """The lint gate for ``target``: its catalog read once per call, the config's rules."""
    from pgferry.lint.gate import check_migrations

    def lint(mfs: list[MigrationFile]) -> list[Any]:
        return list(check_migrations(mfs, cfg, target))

    return lint


def plan(cfg: Config, opts: PlanOptions) -> PlanResult:
    """What ``up`` would run, read-only: each file's SQL, transaction mode and settings."""
    target = base.target(cfg, opts.env)
    version = parse_version(opts.target, "--target")
    ms = files.scan(cfg.migrations_dir)
    rows, failed = service.read_history(cfg, target)
    p = service.prepare(target, ms, rows, failed, version=version, strict=False,
                        lint=lint_gate(cfg, target), out_of_order=opts.out_of_order)
    p.warnings += service.sum_warnings(cfg, ms, strict=False) + preflight.notes(p.steps)
    preflight.check(target, p.steps)
    s = RunSettings.from_config(cfg)
    return PlanResult(target.name, service.version_text(current_version(rows)),
                      service.settings_dict(s),
                      [service.step_dict(st, pf, s, p.findings.get(st.file.script, []))
                       for st, pf in p.steps], p.warnings)


@dataclass(frozen=True)
class RunOptions:
    """``migrate up`` / ``migrate undo`` as the command line (or a request) says it."""

    env: str | None = None
    #: up: apply up to this version (``--target``)
    target: str | None = None
    #: undo: undo every applied version above this one (``--to``)
    to: str | None = None
    dry_run: bool = False
    yes: bool = False
    override_blackout: bool = False
    #: why the blackout is overridden or the lint gate passed (journaled)
    reason: str | None = None
    allow_unsafe: bool = False
    out_of_order: bool = False


@dataclass
class RunResult:
    env: str
    command: str
    dry_run: bool
    warnings: list[str]
    current_version: str | None
    #: a dry run: the steps it would run (as ``migrate plan`` shows them)
    steps: list[dict[str, Any]] | None = None
    applied: list[FileResult] = field(default_factory=list)
    duration_ms: int = 0
    #: the ``[migrate]`` settings (a dry run is rendered as a plan)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ok": True, "env": self.env, "command": self.command,
                             "dry_run": self.dry_run, "warnings": self.warnings}
        if self.dry_run:
            return {**d, "steps": self.steps, "current_version": self.current_version}
        return {**d, "applied": [x.to_dict() for x in self.applied],
                "current_version": self.current_version, "duration_ms": self.duration_ms}


def _arguments(opts: RunOptions, undo: bool, env: str) -> dict[str, Any]:
    """The journal's arguments: the options as given, the environment resolved."""
    args: dict[str, Any] = {"env": env}
    if undo:
        args["to"] = opts.to
    else:
        args["target"] = opts.target
    args.update(dry_run=opts.dry_run, yes=opts.yes, override_blackout=opts.override_blackout,
                reason=opts.reason, allow_unsafe=opts.allow_unsafe)
    if not undo:
        args["out_of_order"] = opts.out_of_order
    return args


def _gate_findings(p: service.PreparedSteps) -> tuple[GateFinding, ...]:
    return tuple(GateFinding(script, f.line, f.rule, f.message, f.to_dict())
                 for script, f in p.lint_errors())


def up(cfg: Config, opts: RunOptions, *, now: datetime | None = None,
       progress: Subscriber | None = None, confirm: base.Confirm | None = None) -> RunResult:
    """``migrate up``: apply pending migrations, each file in its own transaction."""
    return run(cfg, opts, undo=False, now=now, progress=progress, confirm=confirm)


def undo(cfg: Config, opts: RunOptions, *, now: datetime | None = None,
         progress: Subscriber | None = None, confirm: base.Confirm | None = None) -> RunResult:
    """``migrate undo``: run U files newest first (default: the newest applied version)."""
    return run(cfg, opts, undo=True, now=now, progress=progress, confirm=confirm)


def run(cfg: Config, opts: RunOptions, *, undo: bool, now: datetime | None = None,
        progress: Subscriber | None = None, confirm: base.Confirm | None = None) -> RunResult:
    """``migrate up`` (or ``undo``): policy, checks, then apply under the lock, journaled."""
    from pgferry import journal

    when = base.now_or(now)
    command = "migrate undo" if undo else "migrate up"
    req = WriteRequest(command, "", False, yes=opts.yes, override_blackout=opts.override_blackout,
                  reason=opts.reason, allow_unsafe=opts.allow_unsafe, unsafe_reason=opts.reason)
    early = decide(cfg, req, when, ("input",)).error()
    if early is not None:  # bad input before any database is resolved
        raise early
    version = parse_version(opts.target, "--target")
    to = parse_version(opts.to, "--to")
    target = base.target(cfg, opts.env)
    req = replace(req, env=target.name, protected=target.protected)
    arguments = _arguments(opts, undo, target.name)
    if opts.dry_run:  # changes nothing: only a window refuses it (as it always did)
        d = decide(cfg, req, when, ("blackout",))
        if (err := d.error()) is not None:
            raise err
        window = d.window_text
    else:
        window = base.authorize(cfg, target, req, now=when, confirm=confirm, arguments=arguments,
                                rules=("input", "blackout", "protected")).window_text
    lint = lint_gate(cfg, target)
    ms = files.scan(cfg.migrations_dir)

    def check(p: service.PreparedSteps) -> None:
        err = decide(cfg, replace(req, lint_errors=_gate_findings(p)), when,
                     ("lint_gate",)).error()
        if err is not None:
            raise err

    with journal.refusals(target, command, arguments):  # refusals by the checks, journaled
        warnings = service.sum_warnings(cfg, ms)
        rows, failed = service.read_history(cfg, target)
        # the gate only refuses on protected envs; elsewhere `migrate plan`/`lint` show findings
        gated = target.protected or opts.dry_run
        pre = service.prepare(target, ms, rows, failed, version=version, undo=undo, to=to,
                              lint=lint if gated else None, out_of_order=opts.out_of_order)
        check(pre)
    preflight.check(target, pre.steps)
    warnings += pre.warnings + preflight.notes(pre.steps)
    s = RunSettings.from_config(cfg)
    result = RunResult(target.name, command, opts.dry_run, warnings,
                       service.version_text(current_version(rows)),
                       settings=service.settings_dict(s))
    if opts.dry_run:
        result.steps = [service.step_dict(st, pf, s, pre.findings.get(st.file.script, []))
                        for st, pf in pre.steps]
        return result
    start = time.monotonic()
    with journal.operation(target, command, arguments) as op:
        if window is not None:
            op.details["blackout_override"] = {"window": window, "reason": opts.reason}
        errors = pre.lint_errors()
        if opts.allow_unsafe and errors:
            op.details["allow_unsafe"] = {"reason": opts.reason,
                                          "findings": [f.to_dict() for _, f in errors]}
        done = service.apply(cfg, target, ms, pre, undo=undo, version=version, to=to,
                             out_of_order=opts.out_of_order, lint=lint if target.protected
                             else None, check=check, publish=progress, warnings=warnings,
                             details=op.details)
        result.applied, result.current_version = done.results, done.current_version
        result.duration_ms = int((time.monotonic() - start) * 1000)
        op.details["current_version"] = result.current_version
    return result

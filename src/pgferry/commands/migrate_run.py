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
and changes nothing; inside a blackout window it is not refused (as ``sync --dry-run``
is not) but its first warning says a real run would be.

Contract-phase files (:mod:`pgferry.migrate.contract`) are held unless ``contract`` and
their guards pass (judged before the lock — watching ``pg_stat_activity`` for the
``[contract] clients_window`` — and again under it); ``override_guards`` (with
``--contract`` and a reason) applies them anyway and journals the guards that did not
pass. With ``contract``, a file still held ends the run with
:class:`~pgferry.errors.ProblemFound` (exit 1) after the rest was applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pgferry.commands import base
from pgferry.config import Config
from pgferry.errors import BadInput, ProblemFound
from pgferry.events import Notice, Subscriber
from pgferry.migrate import contract as contract_mod
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
    #: show contract files whose guards pass as part of the plan (``--contract``)
    contract: bool = False


@dataclass
class PlanResult:
    env: str
    current_version: str | None
    settings: dict[str, Any]
    steps: list[dict[str, Any]]
    warnings: list[str]
    #: contract files held back, with their guards
    held: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "current_version": self.current_version,
            "settings": self.settings,
            "steps": self.steps,
            "held": self.held,
            "warnings": self.warnings,
        }


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
    p = service.prepare(
        target,
        ms,
        rows,
        failed,
        version=version,
        strict=False,
        lint=lint_gate(cfg, target),
        out_of_order=opts.out_of_order,
    )
    contract_mod.hold(cfg, target, ms, p, contract=opts.contract)
    p.warnings += service.sum_warnings(cfg, ms, strict=False) + preflight.notes(p.steps)
    preflight.check(target, p.steps)
    s = RunSettings.from_config(cfg)
    return PlanResult(
        target.name,
        service.version_text(current_version(rows)),
        service.settings_dict(s),
        [_step(st, pf, s, p) for st, pf in p.steps],
        p.warnings,
        [d.to_dict() for d in p.held],
    )


def _step(step: Any, pf: Any, s: RunSettings, p: service.PreparedSteps) -> dict[str, Any]:
    """A step as ``plan`` shows it, with the phase its header declares."""
    d = service.step_dict(step, pf, s, p.findings.get(step.file.script, []))
    h = p.headers.get(step.file.script)
    d["phase"] = h.phase if h is not None else None
    return d


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
    #: up: also apply contract-phase files whose guards pass (``--contract``)
    contract: bool = False
    #: up: apply contract files whatever their guards say (needs ``contract`` and ``reason``)
    override_guards: bool = False
    #: undo: exactly these applied versions (a gate's rollback of what one run applied)
    only: tuple[str, ...] = ()


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
    #: contract files held back / released by this run, with their guards
    held: list[dict[str, Any]] = field(default_factory=list)
    released: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "ok": True,
            "env": self.env,
            "command": self.command,
            "dry_run": self.dry_run,
            "warnings": self.warnings,
            "held": self.held,
        }
        if self.dry_run:
            return {**d, "steps": self.steps, "current_version": self.current_version}
        return {
            **d,
            "applied": [x.to_dict() for x in self.applied],
            "released": self.released,
            "current_version": self.current_version,
            "duration_ms": self.duration_ms,
        }


def _arguments(opts: RunOptions, undo: bool, env: str) -> dict[str, Any]:
    """The journal's arguments: the options as given, the environment resolved."""
    args: dict[str, Any] = {"env": env}
    if undo:
        args["to"] = opts.to
    else:
        args["target"] = opts.target
    args.update(
        dry_run=opts.dry_run,
        yes=opts.yes,
        override_blackout=opts.override_blackout,
        reason=opts.reason,
        allow_unsafe=opts.allow_unsafe,
    )
    if not undo:
        args.update(
            out_of_order=opts.out_of_order,
            contract=opts.contract,
            override_guards=opts.override_guards,
        )
    elif opts.only:
        args["only"] = list(opts.only)
    return args


def _gate_findings(p: service.PreparedSteps) -> tuple[GateFinding, ...]:
    return tuple(
        GateFinding(script, f.line, f.rule, f.message, f.to_dict()) for script, f in p.lint_errors()
    )


def up(
    cfg: Config,
    opts: RunOptions,
    *,
    now: datetime | None = None,
    progress: Subscriber | None = None,
    confirm: base.Confirm | None = None,
) -> RunResult:
    """``migrate up``: apply pending migrations, each file in its own transaction."""
    return run(cfg, opts, undo=False, now=now, progress=progress, confirm=confirm)


def undo(
    cfg: Config,
    opts: RunOptions,
    *,
    now: datetime | None = None,
    progress: Subscriber | None = None,
    confirm: base.Confirm | None = None,
) -> RunResult:
    """``migrate undo``: run U files, the most recently applied first (default: that one)."""
    return run(cfg, opts, undo=True, now=now, progress=progress, confirm=confirm)


def run(
    cfg: Config,
    opts: RunOptions,
    *,
    undo: bool,
    now: datetime | None = None,
    progress: Subscriber | None = None,
    confirm: base.Confirm | None = None,
    journal_arguments: dict[str, Any] | None = None,
) -> RunResult:
    """``migrate up`` (or ``undo``): policy, checks, then apply under the lock, journaled.

    ``journal_arguments`` go into the journal row's arguments too (a gate's rollback says
    which gate and why)."""
    from pgferry import journal

    only = _only(opts)
    when = base.now_or(now)
    command = "migrate undo" if undo else "migrate up"
    req = WriteRequest(
        command,
        "",
        False,
        yes=opts.yes,
        override_blackout=opts.override_blackout,
        reason=opts.reason,
        allow_unsafe=opts.allow_unsafe,
        unsafe_reason=opts.reason,
    )
    early = decide(cfg, req, when, ("input",)).error()
    if early is not None:  # bad input before any database is resolved
        raise early
    version = parse_version(opts.target, "--target")
    to = parse_version(opts.to, "--to")
    target = base.target(cfg, opts.env)
    req = replace(req, env=target.name, protected=target.protected)
    arguments = {**_arguments(opts, undo, target.name), **(journal_arguments or {})}
    in_window: str | None = None
    window: str | None = None
    if opts.dry_run:  # changes nothing, so no window refuses it: it says what a run would meet
        in_window = base.blackout_warning(cfg, req, when)
    else:
        window = base.authorize(
            cfg,
            target,
            req,
            now=when,
            confirm=confirm,
            arguments=arguments,
            rules=("input", "blackout", "protected"),
        ).window_text
    lint = lint_gate(cfg, target)
    ms = files.scan(cfg.migrations_dir)

    def check(p: service.PreparedSteps) -> None:
        err = decide(cfg, replace(req, lint_errors=_gate_findings(p)), when, ("lint_gate",)).error()
        if err is not None:
            raise err

    with journal.refusals(target, command, arguments):  # refusals by the checks, journaled
        warnings = service.sum_warnings(cfg, ms)
        rows, failed = service.read_history(cfg, target)
        # the gate only refuses on protected envs; elsewhere `migrate plan`/`lint` show findings
        gated = target.protected or opts.dry_run
        pre = service.prepare(
            target,
            ms,
            rows,
            failed,
            version=version,
            undo=undo,
            to=to,
            lint=lint if gated else None,
            out_of_order=opts.out_of_order,
            only=only,
        )
        check(pre)

    if not undo:  # guards first, without the lock: watching for old clients may take minutes
        contract_mod.hold(
            cfg,
            target,
            ms,
            pre,
            contract=opts.contract,
            override=opts.override_guards,
            watch=opts.contract and not opts.dry_run,
            on_wait=_notice(progress),
        )
    preflight.check(target, pre.steps)
    warnings += pre.warnings + preflight.notes(pre.steps)
    if in_window is not None:
        warnings.insert(0, in_window)
    s = RunSettings.from_config(cfg)
    result = RunResult(
        target.name,
        command,
        opts.dry_run,
        warnings,
        service.version_text(current_version(rows)),
        settings=service.settings_dict(s),
    )
    result.held = [d.to_dict() for d in pre.held]
    if opts.dry_run:
        result.steps = [_step(st, pf, s, pre) for st, pf in pre.steps]
        return result

    def judge(p: service.PreparedSteps, conn: Any) -> None:
        contract_mod.hold(
            cfg, target, ms, p, conn=conn, contract=opts.contract, override=opts.override_guards
        )

    start = time.monotonic()
    with journal.operation(target, command, arguments) as op:
        if window is not None:
            op.details["blackout_override"] = {"window": window, "reason": opts.reason}
        errors = pre.lint_errors()
        if opts.allow_unsafe and errors:
            op.details["allow_unsafe"] = {
                "reason": opts.reason,
                "findings": [f.to_dict() for _, f in errors],
            }
        done = service.apply(
            cfg,
            target,
            ms,
            pre,
            undo=undo,
            version=version,
            to=to,
            out_of_order=opts.out_of_order,
            lint=lint if target.protected else None,
            check=_under_lock(cfg, req, now, check),
            publish=progress,
            warnings=warnings,
            details=op.details,
            only=only,
            judge=None if undo else judge,
        )
        result.applied, result.current_version = done.results, done.current_version
        result.duration_ms = int((time.monotonic() - start) * 1000)
        op.details["current_version"] = result.current_version
        _contract_outcome(result, done, opts, op.details)
    return result


def _under_lock(
    cfg: Config,
    req: WriteRequest,
    now: datetime | None,
    check: Callable[[service.PreparedSteps], None],
) -> Callable[[service.PreparedSteps], None]:
    """``check`` for the steps prepared under the lock, and the blackout window judged again
    at that moment: a window may have begun while the run waited (for the lock, for
    contract guards)."""

    again = base.blackout_again(cfg, req, now)

    def locked(p: service.PreparedSteps) -> None:
        check(p)
        again()

    return locked


def _only(opts: RunOptions) -> set[Version] | None:
    """The versions of ``only``; BadInput for ``--override-guards`` without what it needs."""
    if opts.override_guards and not (opts.contract and (opts.reason or "").strip()):
        raise BadInput('--override-guards needs --contract and --reason "why it is safe now"')
    if not opts.only:
        return None
    return {v for v in (parse_version(x, "only") for x in opts.only) if v is not None}


def _notice(progress: Subscriber | None) -> Any:
    def notice(text: str) -> None:
        if progress is not None:
            progress(Notice(text))

    return notice


def _contract_outcome(
    result: RunResult, done: service.Applied, opts: RunOptions, details: dict[str, Any]
) -> None:
    """The held and released contract files into the result and the journal; with
    ``--contract``, a file still held is ProblemFound (exit 1)."""
    result.held = [d.to_dict() for d in done.held]
    result.released = [d.to_dict() for d in done.released]
    if result.held:
        details["held"] = result.held
    overridden = [d for d in result.released if d["overridden"]]
    if overridden:
        details["guard_override"] = {"reason": opts.reason, "files": overridden}
    if opts.contract and result.held:
        n = len(result.applied)
        held = "; ".join(f"{d.step.script} ({d.describe()})" for d in done.held)
        raise ProblemFound(
            f"{result.env}: applied {n} migration{'s' if n != 1 else ''}; "
            f"{len(done.held)} contract file(s) still held: {held}",
            applied=[x.to_dict() for x in result.applied],
            held=result.held,
            current_version=result.current_version,
        )

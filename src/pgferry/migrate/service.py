"""``migrate plan|up|undo`` as service functions (the CLI and the server call these).

Contract: each function takes the config, a resolved target and options, and
returns a JSON-ready dict; anything wrong is a :class:`~pgferry.errors.PgferryError`.
Order of checks for ``up``/``undo`` (all before anything runs):

1. blackout window (:func:`pgferry.policy.blackout_guard`, run by the caller, exit 4);
2. pgferry.sum stale/missing: a warning, or Refused (4) with ``strict_sum``;
3. validate: an applied file changed, deleted, or a failed row recorded →
   **Refused (exit 4)**: ``up`` refuses to run on a history it cannot trust
   (``migrate validate`` reports the same as exit 1, "found a problem"); a
   file below the current version that is not applied (the history is ahead
   of the files) → ProblemFound (exit 1), as Flyway's validate, unless
   ``out_of_order``;
4. templates on a protected env → Refused (4): "number them first";
5. every file to run parses (pglast) → else SqlParseError (exit 2);
6. the lint gate (when ``pgferry.lint.gate`` exists) on a protected env:
   error findings → Refused (4) unless ``allow_unsafe`` with a reason;
7. the target has every extension the files create and a version whose grammar
   they use (:mod:`pgferry.migrate.preflight`) → else BadInput (exit 2);
8. every file's phase header is valid (:mod:`pgferry.migrate.phases`) → else BadInput
   (exit 2); contract files are held unless ``contract`` and their guards pass
   (or ``override_guards`` with a reason, journaled): :mod:`pgferry.migrate.contract`.
   With ``contract``, a file still held ends the run with ProblemFound (exit 1) after
   the rest was applied.

Then, under the migration lock, the history is read again (another run may
have applied files meanwhile), the same checks repeat on what is left, and
the :class:`~pgferry.migrate.runner.Runner` executes. Everything that writes
is journaled (``migrate up``/``migrate undo``) with applied files, durations
and any override reasons; a refusal (exit 4) or a check that stops the run
(exit 1) is journaled too, where the journal exists. The caller handles
``--yes`` (confirm_protected) and the blackout guard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgferry import journal
from pgferry.config import Config
from pgferry.errors import BadInput, PgferryError, ProblemFound, Refused
from pgferry.migrate import contract as contract_mod
from pgferry.migrate import files, history, preflight
from pgferry.migrate.files import MigrationSet, Version
from pgferry.migrate.history import HistoryRow, undo_row
from pgferry.migrate.plan import (
    REFUSE_STATES,
    Step,
    classify,
    current_version,
    pending,
    undo_steps,
)
from pgferry.migrate.runner import Event, Runner, Settings, failed_statements
from pgferry.migrate.statements import ParsedFile, parse_file
from pgferry.migrate.windows import check_blackout, describe
from pgferry.pg import fingerprint
from pgferry.pg.connect import Target, connect, map_db_error


def _gate_module() -> Any:
    """The lint gate (``pgferry.lint.gate``) when it exists, else None."""
    import importlib

    try:
        return importlib.import_module("pgferry.lint.gate")
    except ImportError:
        return None


@dataclass
class Prepared:
    steps: list[tuple[Step, ParsedFile]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    findings: dict[str, list[Any]] = field(default_factory=dict)  # script -> lint findings
    rows: list[HistoryRow] = field(default_factory=list)
    linted: set[str] = field(default_factory=set)  # scripts the lint gate has seen
    headers: dict[str, Any] = field(default_factory=dict)  # script -> phases.Header
    held: list[contract_mod.Decision] = field(default_factory=list)  # contract files held
    released: list[contract_mod.Decision] = field(default_factory=list)  # ... and released


def read_history(cfg: Config, target: Target) -> tuple[list[HistoryRow], dict[str, Any]]:
    """History rows and non-tx progress, read-only ([] on a fresh database)."""
    import psycopg

    try:
        with connect(target.dsn, autocommit=True) as c:
            rows = history.read(c, cfg.migrate.schema_, cfg.migrate.history_table)
            failed = failed_statements(c, cfg) if any(not r.success for r in rows) else {}
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot read the history of {target.name}") from None
    return rows, failed


def _problem_text(entries: list[Any], failed: dict[str, Any]) -> list[str]:
    out = []
    for e in entries:
        name = f"{e.version} ({e.script})" if e.version is not None else str(e.script)
        if e.state == "checksum_mismatch":
            out.append(f"{name} was changed after it was applied")
        elif e.state == "missing":
            out.append(f"{name} is applied but its file is gone")
        elif e.state == "failed":
            where = failed.get(e.script or "", {}).get("describe")
            out.append(f"{name} failed" + (f" ({where})" if where else ""))
    return out


def _validate(ms: MigrationSet, rows: list[HistoryRow], failed: dict[str, Any], env: str,
              out_of_order: bool = False) -> list[str]:
    """Refused when the history cannot be trusted; ProblemFound (exit 1) when it is ahead of
    the files (as Flyway's validate) unless ``out_of_order``; returns warnings otherwise."""
    entries = classify(ms, rows)
    bad = [e for e in entries if e.state in REFUSE_STATES]
    if bad:
        raise Refused(
            "validate failed, nothing was run: " + "; ".join(_problem_text(bad, failed))
            + ". Restore the files, or run `pgferry migrate repair` (failed rows, checksums)",
            problems=[e.to_dict() for e in bad],
        )
    behind = [e for e in entries if e.state == "ignored"]
    if not behind:
        return []
    names = ", ".join(f"{e.version} ({e.script})" for e in behind)
    current = current_version(rows)
    if out_of_order:
        return [f"applying {names} out of order, below the current version {current}"]
    raise ProblemFound(
        f"the history of {env} is ahead of the files: {names} "
        f"{'is' if len(behind) == 1 else 'are'} not applied and below its current version "
        f"{current}, so nothing was run; apply {'it' if len(behind) == 1 else 'them'} anyway "
        f"with --out-of-order (Flyway's outOfOrder), or renumber above {current}",
        versions=[str(e.version) for e in behind], current_version=str(current))


def _sum_warnings(cfg: Config, ms: MigrationSet, *, strict: bool = True) -> list[str]:
    """A warning for a stale or missing pgferry.sum; Refused under ``strict_sum``."""
    state = files.sum_state(ms)
    if state == "ok":
        return []
    msg = (f"migrations/{files.SUM_FILE} is {state}; run `pgferry migrate sum` and commit it")
    if strict and cfg.migrate.strict_sum:
        raise Refused(f"{msg} ([migrate] strict_sum = true refuses to run)", sum_state=state)
    return [msg]


def _lint(cfg: Config, target: Target | None, steps: list[tuple[Step, ParsedFile]]
          ) -> dict[str, list[Any]]:
    gate = _gate_module()
    if gate is None or not steps:
        return {}
    found = gate.check_migrations([s.file for s, _ in steps], cfg, target)
    by: dict[str, list[Any]] = {s.file.script: [] for s, _ in steps}
    for f in found:
        by.setdefault(str(getattr(f, "path", "")).rsplit("/", 1)[-1], []).append(f)
    return by


def prepare(cfg: Config, target: Target, ms: MigrationSet, rows: list[HistoryRow],
            failed: dict[str, Any], *, version: Version | None = None, undo: bool = False,
            to: Version | None = None, strict: bool = True, lint: bool = True,
            linted: dict[str, list[Any]] | None = None, out_of_order: bool = False,
            only: set[Version] | None = None) -> Prepared:
    """The steps to run, parsed and checked (see the module docstring).

    ``strict=False`` (``migrate plan``) turns refusals into warnings; ``lint``
    runs the lint gate (it reads the target's catalog) for files not in ``linted``.
    """
    p = Prepared(rows=rows)
    try:
        p.warnings += _validate(ms, rows, failed, target.name, out_of_order or undo)
    except (Refused, ProblemFound) as e:
        if strict:
            raise
        p.warnings.append(e.message)
    if undo:
        steps = undo_steps(ms, rows, to=to, only=only)
    else:
        steps = pending(ms, rows, target=version, allow_templates=True,
                        out_of_order=out_of_order)
        templates = [s for s in steps if s.template]
        if templates and target.protected:
            names = ", ".join(s.file.script for s in templates)
            msg = (f"{target.name} is protected and {names} "
                   f"{'is a template' if len(templates) == 1 else 'are templates'}: "
                   "number them first (`pgferry migrate number`) and commit the result")
            if strict:
                raise Refused(msg, templates=[s.file.script for s in templates])
            p.warnings.append(msg)
            steps = [s for s in steps if not s.template]
    for s in steps:
        p.steps.append((s, parse_file(s.file)))
    if not undo:
        p.headers = contract_mod.headers(cfg, p.steps)
    if lint:
        known = linted or {}
        todo = [x for x in p.steps if x[0].file.script not in known]
        p.findings = {**{k: v for k, v in known.items()}, **_lint(cfg, target, todo)}
        p.linted = {x[0].file.script for x in p.steps}
    return p


def gate_errors(p: Prepared) -> list[Any]:
    """Error-level lint findings of the steps (what the gate refuses on)."""
    return [f for fs in p.findings.values() for f in fs if getattr(f, "severity", "") == "error"]


def _gate_check(target: Target, p: Prepared, allow_unsafe: bool, reason: str | None) -> None:
    errors = [(script, f) for script, fs in p.findings.items() for f in fs
              if getattr(f, "severity", "") == "error"]
    if not errors or not target.protected:
        return
    if allow_unsafe:
        if not (reason or "").strip():
            raise BadInput("--allow-unsafe needs --reason \"why this is safe here\"")
        return
    first = "; ".join(f"{s}:{f.line} {f.rule}: {f.message}" for s, f in errors[:3])
    raise Refused(
        f"lint gate: {len(errors)} error finding(s) on protected {target.name}: {first}"
        + ("; ..." if len(errors) > 3 else "")
        + ". Fix them, or pass --allow-unsafe --reason \"...\"",
        findings=[f.to_dict() for _, f in errors],
    )


def hold(cfg: Config, target: Target, ms: MigrationSet, p: Prepared, *,
         conn: Any | None = None, contract: bool = False, override: bool = False,
         watch: bool = False, on_wait: Any = None) -> None:
    """Judge the contract steps of ``p`` and take the held ones out of ``p.steps``."""
    if not any(h.contract for h in p.headers.values()):
        return

    def judge(c: Any) -> list[contract_mod.Decision]:
        return contract_mod.judge(cfg, c, target.name, ms, p.rows, p.steps, p.headers,
                                  contract=contract, override=override, watch=watch,
                                  on_wait=on_wait)

    if conn is not None:
        decisions = judge(conn)
    else:
        import psycopg

        try:
            with connect(target.dsn, autocommit=True) as c:
                decisions = judge(c)
        except psycopg.Error as e:
            raise map_db_error(e, f"cannot judge the contract guards in {target.name}") from None
    p.steps, p.held = contract_mod.split(p.steps, decisions)
    p.released = [d for d in decisions if d.run]


def plan(cfg: Config, target: Target, *, version: Version | None = None,
         out_of_order: bool = False, contract: bool = False) -> dict[str, Any]:
    """What ``up`` would run, read-only: each file's SQL, transaction mode and settings."""
    ms = files.scan(cfg.migrations_dir)
    rows, failed = read_history(cfg, target)
    p = prepare(cfg, target, ms, rows, failed, version=version, strict=False,
                out_of_order=out_of_order)
    hold(cfg, target, ms, p, contract=contract)
    p.warnings += _sum_warnings(cfg, ms, strict=False) + preflight.notes(p.steps)
    preflight.check(target, p.steps)
    s = Settings.from_config(cfg)
    return {
        "env": target.name,
        "current_version": _str(current_version(rows)),
        "settings": {"lock_timeout": s.lock_timeout, "statement_timeout": s.statement_timeout,
                     "lock_retries": s.lock_retries, "lock_wait_s": s.lock_wait,
                     "history_table": f"{s.schema}.{s.table}"},
        "steps": [_step_dict(st, pf, s, p.findings.get(st.file.script, []))
                  for st, pf in p.steps],
        "held": [d.to_dict() for d in p.held],
        "warnings": p.warnings,
    }


def _str(v: Version | None) -> str | None:
    return str(v) if v is not None else None


def _history_record(step: Step, s: Settings) -> dict[str, Any]:
    """The history row the step will write (for ``plan`` and ``--dry-run``)."""
    kind, desc, script = "SQL", step.description, step.script
    checksum: int | None = step.checksum
    if step.kind == "U":
        kind, desc, script, checksum, _ = undo_row(s.undo_history, True, step.undoes, desc,
                                                   script, checksum, 0)
    return {"type": kind, "version": _str(step.version), "description": desc, "script": script,
            "checksum": checksum}


def _step_dict(step: Step, pf: ParsedFile, s: Settings, findings: list[Any]) -> dict[str, Any]:
    return {
        **step.to_dict(),
        "history_row": _history_record(step, s),
        "mode": pf.mode,
        "non_transactional": pf.reasons,
        "settings": s.session_sql(local=pf.transactional),
        "statements": [{"line": x.line, "sql": x.text, "non_tx": x.non_tx}
                       for x in pf.statements],
        "phase": _phase(step, pf),
        "findings": [f.to_dict() for f in findings],
    }


def _phase(step: Step, pf: ParsedFile) -> str | None:
    from pgferry.migrate.phases import parse_header

    if step.kind != "V":
        return None
    return parse_header(pf.file.sql, pf.file.script).phase


def run(cfg: Config, target: Target, *, undo: bool = False, version: Version | None = None,
        to: Version | None = None, dry_run: bool = False, now: datetime,
        override_blackout: bool = False, reason: str | None = None,
        allow_unsafe: bool = False, unsafe_reason: str | None = None,
        arguments: dict[str, Any] | None = None, on_event: Event | None = None,
        out_of_order: bool = False, contract: bool = False, override_guards: bool = False,
        guard_reason: str | None = None, on_wait: Any = None,
        only: set[Version] | None = None, command: str | None = None) -> dict[str, Any]:
    """``migrate up`` (or ``undo``): checks, then apply under the lock, journaled.

    ``only`` (undo): exactly these versions (a gate's rollback of what one run applied);
    ``command`` names the journal row (default ``migrate up``/``migrate undo``)."""
    if override_guards and not (contract and (guard_reason or "").strip()):
        raise BadInput('--override-guards needs --contract and --reason "why it is safe now"')
    command = command or ("migrate undo" if undo else "migrate up")
    # the caller ran policy.blackout_guard (journaled); here only to name the window
    window = check_blackout(cfg, target.name, now, override_blackout, reason)
    ms = files.scan(cfg.migrations_dir)
    with journal.refusals(target, command, arguments):  # refusals by the checks, journaled
        warnings = _sum_warnings(cfg, ms)
        rows, failed = read_history(cfg, target)
        # the gate only refuses on protected envs; elsewhere `migrate plan`/`lint` show findings
        gated = target.protected or dry_run
        pre = prepare(cfg, target, ms, rows, failed, version=version, undo=undo, to=to,
                      lint=gated, out_of_order=out_of_order, only=only)
        _gate_check(target, pre, allow_unsafe, unsafe_reason)
    # guards first, without the lock: watching for old clients may take minutes
    hold(cfg, target, ms, pre, contract=contract, override=override_guards,
         watch=contract and not dry_run, on_wait=on_wait)
    preflight.check(target, pre.steps)
    result: dict[str, Any] = {"env": target.name, "command": command, "dry_run": dry_run,
                              "warnings": warnings + pre.warnings + preflight.notes(pre.steps)}
    if dry_run:
        s = Settings.from_config(cfg)
        result["steps"] = [_step_dict(st, pf, s, pre.findings.get(st.file.script, []))
                           for st, pf in pre.steps]
        result["held"] = [d.to_dict() for d in pre.held]
        result["current_version"] = _str(current_version(rows))
        return result
    start = time.monotonic()
    with journal.operation(target, command, arguments) as op:
        if window is not None:
            op.details["blackout_override"] = {"window": describe(window), "reason": reason}
        if allow_unsafe and gate_errors(pre):
            op.details["allow_unsafe"] = {"reason": unsafe_reason,
                                          "findings": [f.to_dict() for f in gate_errors(pre)]}
        with Runner(target, Settings.from_config(cfg), on_event=on_event) as r:
            if r.orphans:
                result["warnings"].append(
                    f"terminated backend(s) {r.orphans} left by an interrupted run")
            interrupted = r.settle_interrupted()
            rows = r.history()
            failed = failed_statements(r.work, cfg) if interrupted else failed
            if interrupted:
                op.details["interrupted"] = interrupted
            p = prepare(cfg, target, ms, rows, failed, version=version, undo=undo, to=to,
                        lint=target.protected, linted=pre.findings, out_of_order=out_of_order,
                        only=only)
            _gate_check(target, p, allow_unsafe, unsafe_reason)
            # again under the lock (one sample of clients: the window was watched above)
            hold(cfg, target, ms, p, conn=r.work, contract=contract, override=override_guards)
            if p.held:
                op.details["held"] = [d.to_dict() for d in p.held]
            if any(d.overridden for d in p.released):
                op.details["guard_override"] = {
                    "reason": guard_reason,
                    "files": [d.to_dict() for d in p.released if d.overridden]}
            try:
                results = r.apply(p.steps, undo=undo)
            except PgferryError as e:  # --json and the journal say which files did get applied
                e.details.setdefault("applied", [x.to_dict() for x in r.done])
                raise
            finally:
                op.details["applied"] = [_journal_entry(x) for x in r.done]
                op.details["warnings"] = result["warnings"]
            after = r.history()
            # the schema as the migrations left it, for `pgferry health`'s drift check
            result["warnings"] += fingerprint.after_migrate(r.work, bool(results),
                                                            _str(current_version(after)))
        result["applied"] = [x.to_dict() for x in results]
        result["current_version"] = _str(current_version(after))
        result["duration_ms"] = int((time.monotonic() - start) * 1000)
        result["held"] = [d.to_dict() for d in p.held]
        result["released"] = [d.to_dict() for d in p.released]
        op.details["current_version"] = result["current_version"]
        if contract and p.held:
            n = len(result["applied"])
            held = "; ".join(f"{d.step.script} ({d.describe()})" for d in p.held)
            raise ProblemFound(
                f"{target.name}: applied {n} migration{'s' if n != 1 else ''}; "
                f"{len(p.held)} contract file(s) still held: {held}",
                applied=result["applied"], held=result["held"],
                current_version=result["current_version"])
    return result


def _journal_entry(x: Any) -> dict[str, Any]:
    return {"script": x.script, "version": x.version, "mode": x.mode,
            "duration_ms": x.duration_ms, "attempts": x.attempts,
            **({"resumed_after": x.resumed_after} if x.resumed_after else {})}

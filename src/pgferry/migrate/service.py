"""``migrate plan|up|undo``: the checks and the run, for :mod:`pgferry.commands.migrate_run`.

Contract: the command layer owns the policy decisions (blackout, ``--yes``, the
lint gate: :mod:`pgferry.policy`) and the journal; this module reads, checks and
runs. Order of checks for ``up``/``undo`` (all before anything runs):

1. pgferry.sum stale/missing: a warning (:func:`sum_warnings`), or Refused (4)
   with ``strict_sum``;
2. validate (:func:`prepare`): an applied file changed, deleted, or a failed
   row recorded → **Refused (exit 4)**: ``up`` refuses to run on a history it
   cannot trust (``migrate validate`` reports the same as exit 1, "found a
   problem"); a file below the current version that is not applied (the
   history is ahead of the files) → ProblemFound (exit 1), as Flyway's
   validate, unless ``out_of_order``;
3. templates on a protected env → Refused (4): "number them first";
4. every file to run parses (pglast) → else SqlParseError (exit 2);
5. the files are linted by the ``lint`` function the caller passes (the lint
   gate; the caller judges the findings with :func:`pgferry.policy.decide`);
6. the target has every extension the files create and a version whose grammar
   they use (:mod:`pgferry.migrate.preflight`) → else BadInput (exit 2);
7. every file's phase header is valid, and contract-phase files are held unless the
   caller releases them (:func:`pgferry.migrate.contract.hold`, passed in as ``judge``).

Then :func:`apply`, under the migration lock, reads the history again
(another run may have applied files meanwhile), prepares what is left (the
caller's ``check`` judges it again) and the
:class:`~pgferry.migrate.runner.Runner` executes, publishing
:mod:`pgferry.migrate.events`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pgferry.config import Config
from pgferry.errors import PgferryError, ProblemFound, Refused
from pgferry.events import Subscriber
from pgferry.migrate import files, history
from pgferry.migrate.files import MigrationFile, MigrationSet, Version
from pgferry.migrate.history import HistoryRow, undo_row
from pgferry.migrate.plan import (
    REFUSE_STATES,
    Step,
    classify,
    current_version,
    pending,
    undo_steps,
)
from pgferry.migrate.runner import Runner, failed_statements
from pgferry.migrate.settings import FileResult, RunSettings
from pgferry.migrate.statements import ParsedFile, parse_file
from pgferry.pg import fingerprint
from pgferry.pg.connect import Target, connect, map_db_error
from pgferry.redaction import redact


class LintFinding(Protocol):
    """A lint finding as the gate reports it (:class:`pgferry.lint.model.Finding`)."""

    @property
    def path(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def line(self) -> int: ...
    @property
    def rule(self) -> str: ...
    @property
    def message(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...


#: lints migration files in run order (the lint gate, passed in by the command layer)
LintFiles = Callable[[list[MigrationFile]], Sequence[LintFinding]]


@dataclass
class PreparedSteps:
    steps: list[tuple[Step, ParsedFile]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: script -> its lint findings
    findings: dict[str, list[LintFinding]] = field(default_factory=dict)
    rows: list[HistoryRow] = field(default_factory=list)
    failed: dict[str, Any] = field(default_factory=dict)
    #: script -> its phase header (:class:`pgferry.migrate.phases.Header`), once judged
    headers: dict[str, Any] = field(default_factory=dict)
    #: contract files held back / released (:class:`pgferry.migrate.contract.ContractDecision`)
    held: list[Any] = field(default_factory=list)
    released: list[Any] = field(default_factory=list)

    def lint_errors(self) -> list[tuple[str, LintFinding]]:
        """(script, finding) of every error-level finding: what the gate refuses on."""
        return [
            (script, f) for script, fs in self.findings.items() for f in fs if f.severity == "error"
        ]


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


def _validate(
    ms: MigrationSet,
    rows: list[HistoryRow],
    failed: dict[str, Any],
    env: str,
    out_of_order: bool = False,
) -> list[str]:
    """Refused when the history cannot be trusted; ProblemFound (exit 1) when it is ahead of
    the files (as Flyway's validate) unless ``out_of_order``; returns warnings otherwise."""
    entries = classify(ms, rows)
    bad = [e for e in entries if e.state in REFUSE_STATES]
    if bad:
        raise Refused(
            "validate failed, nothing was run: "
            + "; ".join(_problem_text(bad, failed))
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
        versions=[str(e.version) for e in behind],
        current_version=str(current),
    )


def sum_warnings(cfg: Config, ms: MigrationSet, *, strict: bool = True) -> list[str]:
    """A warning for a stale or missing pgferry.sum; Refused under ``strict_sum``."""
    state = files.sum_state(ms)
    if state == "ok":
        return []
    msg = f"migrations/{files.SUM_FILE} is {state}; run `pgferry migrate sum` and commit it"
    if strict and cfg.migrate.strict_sum:
        raise Refused(f"{msg} ([migrate] strict_sum = true refuses to run)", sum_state=state)
    return [msg]


def _lint(
    lint: LintFiles | None, steps: list[tuple[Step, ParsedFile]]
) -> dict[str, list[LintFinding]]:
    if lint is None or not steps:
        return {}
    by: dict[str, list[LintFinding]] = {s.file.script: [] for s, _ in steps}
    for f in lint([s.file for s, _ in steps]):
        by.setdefault(Path(f.path).name, []).append(f)
    return by


def prepare(
    target: Target,
    ms: MigrationSet,
    rows: list[HistoryRow],
    failed: dict[str, Any],
    *,
    version: Version | None = None,
    undo: bool = False,
    to: Version | None = None,
    strict: bool = True,
    lint: LintFiles | None = None,
    linted: dict[str, list[LintFinding]] | None = None,
    out_of_order: bool = False,
    only: set[Version] | None = None,
) -> PreparedSteps:
    """The steps to run, parsed and checked (see the module docstring).

    ``strict=False`` (``migrate plan``) turns refusals into warnings; ``lint``
    (the lint gate; it reads the target's catalog) runs on the files not in ``linted``.
    """
    p = PreparedSteps(rows=rows, failed=failed)
    try:
        p.warnings += _validate(ms, rows, failed, target.name, out_of_order or undo)
    except (Refused, ProblemFound) as e:
        if strict:
            raise
        p.warnings.append(e.message)
    if undo:
        steps = undo_steps(ms, rows, to=to, only=only)
    else:
        steps = pending(ms, rows, target=version, allow_templates=True, out_of_order=out_of_order)
        templates = [s for s in steps if s.template]
        if templates and target.protected:
            names = ", ".join(s.file.script for s in templates)
            msg = (
                f"{target.name} is protected and {names} "
                f"{'is a template' if len(templates) == 1 else 'are templates'}: "
                "number them first (`pgferry migrate number`) and commit the result"
            )
            if strict:
                raise Refused(msg, templates=[s.file.script for s in templates])
            p.warnings.append(msg)
            steps = [s for s in steps if not s.template]
    for s in steps:
        p.steps.append((s, parse_file(s.file)))
    if lint is not None:
        known = linted or {}
        todo = [x for x in p.steps if x[0].file.script not in known]
        p.findings = {**known, **_lint(lint, todo)}
    return p


def settings_dict(s: RunSettings) -> dict[str, Any]:
    """The ``[migrate]`` settings as ``migrate plan`` shows them."""
    return {
        "lock_timeout": s.lock_timeout,
        "statement_timeout": s.statement_timeout,
        "lock_retries": s.lock_retries,
        "lock_wait_s": s.lock_wait,
        "history_table": f"{s.schema}.{s.table}",
    }


def version_text(v: Version | None) -> str | None:
    return str(v) if v is not None else None


def _history_record(step: Step, s: RunSettings) -> dict[str, Any]:
    """The history row the step will write (for ``plan`` and ``--dry-run``)."""
    kind, desc, script = "SQL", step.description, step.script
    checksum: int | None = step.checksum
    if step.kind == "U":
        kind, desc, script, checksum, _ = undo_row(
            s.undo_history, True, step.undoes, desc, script, checksum, 0
        )
    return {
        "type": kind,
        "version": version_text(step.version),
        "description": desc,
        "script": script,
        "checksum": checksum,
    }


def step_dict(
    step: Step, pf: ParsedFile, s: RunSettings, findings: Sequence[LintFinding]
) -> dict[str, Any]:
    return {
        **step.to_dict(),
        "history_row": _history_record(step, s),
        "mode": pf.mode,
        "non_transactional": pf.reasons,
        "settings": s.session_sql(local=pf.transactional),
        # (shown and kept where the file is not: a password in it is left out; the
        # file's checksum above still binds an approval to the real statements)
        "statements": [
            {"line": x.line, "sql": redact(x.text), "non_tx": x.non_tx} for x in pf.statements
        ],
        "findings": [f.to_dict() for f in findings],
    }


@dataclass
class Applied:
    results: list[FileResult]
    current_version: str | None
    #: contract files held back / released under the lock
    held: list[Any] = field(default_factory=list)
    released: list[Any] = field(default_factory=list)


#: judges the contract steps of a prepared run on a connection, and takes the held ones
#: out (:func:`pgferry.migrate.contract.hold`)
Judge = Callable[[PreparedSteps, Any], None]


def apply(
    cfg: Config,
    target: Target,
    ms: MigrationSet,
    pre: PreparedSteps,
    *,
    undo: bool = False,
    version: Version | None = None,
    to: Version | None = None,
    out_of_order: bool = False,
    lint: LintFiles | None = None,
    check: Callable[[PreparedSteps], None],
    publish: Subscriber | None = None,
    warnings: list[str],
    details: dict[str, Any],
    only: set[Version] | None = None,
    judge: Judge | None = None,
) -> Applied:
    """Under the migration lock: settle an interrupted run, prepare again (``check``
    judges it), run the steps. ``warnings`` grows and ``details`` (the journal's)
    gets what happened, also when it raises."""
    with Runner(target, RunSettings.from_config(cfg), on_event=publish) as r:
        if r.orphans:
            warnings.append(f"terminated backend(s) {r.orphans} left by an interrupted run")
        interrupted = r.settle_interrupted()
        rows = r.history()
        failed = failed_statements(r.work, cfg) if interrupted else pre.failed
        if interrupted:
            details["interrupted"] = interrupted
        p = prepare(
            target,
            ms,
            rows,
            failed,
            version=version,
            undo=undo,
            to=to,
            lint=lint,
            linted=pre.findings,
            out_of_order=out_of_order,
            only=only,
        )
        check(p)
        if judge is not None:  # again under the lock (one sample of clients)
            judge(p, r.work)
        try:
            results = r.apply(p.steps, undo=undo)
        except PgferryError as e:  # --json and the journal say which files did get applied
            e.details.setdefault("applied", [x.to_dict() for x in r.done])
            raise
        finally:
            details["applied"] = [_journal_entry(x) for x in r.done]
            details["warnings"] = warnings
        after = version_text(current_version(r.history()))
        # the schema as the migrations left it, for `pgferry health`'s drift check
        warnings += fingerprint.after_migrate(r.work, bool(results), after)
    return Applied(results, after, p.held, p.released)


def _journal_entry(x: FileResult) -> dict[str, Any]:
    return {
        "script": x.script,
        "version": x.version,
        "mode": x.mode,
        "duration_ms": x.duration_ms,
        "attempts": x.attempts,
        **({"resumed_after": x.resumed_after} if x.resumed_after else {}),
    }

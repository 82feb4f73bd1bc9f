"""``pgferry migrate plan|up|undo``: the verbs that execute SQL (see :mod:`pgferry.cli.migrate`).

Thin: arguments, ``--yes``, rendering and progress; the logic is in
:mod:`pgferry.migrate.service`.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from pgferry.cli.common import (
    EnvOpt,
    JsonOpt,
    State,
    YesOpt,
    confirm_protected,
    sigterm_interrupts,
    state,
)
from pgferry.errors import BadInput
from pgferry.migrate import service
from pgferry.migrate.files import Version
from pgferry.migrate.plan import Step
from pgferry.migrate.runner import FileResult
from pgferry.policy import blackout_guard

TargetOpt = Annotated[str | None, typer.Option("--target", help="Apply up to this version.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Check and show, change nothing.")]
OverrideOpt = Annotated[bool, typer.Option("--override-blackout",
                                           help="Run inside a blackout window (needs --reason).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why; goes into the journal.")]
OutOfOrderOpt = Annotated[bool, typer.Option(
    "--out-of-order", help="Also apply versions below the current one that are not applied "
    "(the history is ahead of the files), as Flyway's outOfOrder.")]
UnsafeOpt = Annotated[bool, typer.Option(
    "--allow-unsafe", help="Run despite lint errors on a protected env (needs --reason).")]
ContractOpt = Annotated[bool, typer.Option(
    "--contract", help="Also apply contract-phase files whose guards pass (exit 1 while one "
    "is still held).")]
OverrideGuardsOpt = Annotated[bool, typer.Option(
    "--override-guards", help="With --contract: apply contract files although a guard does "
    "not pass (needs --reason; journaled).")]
WatchOpt = Annotated[bool, typer.Option(
    "--watch", help="After applying, watch the [[gate]] entries for [gates] watch; a "
    "rollback gate that fires runs the U files of what this run applied.")]
WatchForOpt = Annotated[str | None, typer.Option(
    "--watch-for", help="The watch window (e.g. 10min); implies --watch.")]
BAR_AFTER = 5  # more files than this: a progress bar


def held_lines(res: dict[str, Any]) -> list[str]:
    """One line per held contract file (plan, up), and per released one."""
    out = []
    for d in res.get("held") or []:
        v = f"V{d['version']} " if d.get("version") else ""
        out.append(f"held {v}{d['description']} (contract): {d['reason']}")
    for d in res.get("released") or []:
        v = f"V{d['version']} " if d.get("version") else ""
        how = "guards overridden" if d.get("overridden") else "every guard passed"
        out.append(f"released {v}{d['description']} (contract): {how}")
    return out


def _version(text: str | None, opt: str) -> Version | None:
    if text is None:
        return None
    try:
        return Version.parse(text)
    except BadInput:
        raise BadInput(f"{opt} {text!r} is not a version (like 3 or 1.2)") from None


def _label(step: Step) -> str:
    v = f"{step.kind}{step.version} " if step.version is not None else "R "
    return f"{v}{step.description}"


class _Progress:
    """One stderr line per file with its duration; a bar when there are many files."""

    def __init__(self, st: State, verb: str) -> None:
        self.st, self.verb = st, verb
        self.bar: Progress | None = None
        self.task: Any = None

    def event(self, kind: str, step: Step, res: FileResult | None, index: int,
              total: int) -> None:
        if kind == "start" and self.bar is None and total > BAR_AFTER and sys.stderr.isatty():
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                console=self.st.err, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.verb, total=total)
        if kind == "retry":
            self.st.err.print(f"{_label(step)}: could not get a lock in time (attempt "
                              f"{index}/{total}); retrying after a backoff", soft_wrap=True)
        if kind != "done" or res is None:
            return
        extra = f", resumed after statement {res.resumed_after}" if res.resumed_after else ""
        extra += f", {res.attempts} attempts" if res.attempts > 1 else ""
        if res.dropped_invalid_indexes:
            extra += ", dropped INVALID index " + ", ".join(res.dropped_invalid_indexes)
        line = f"{self.verb} {_label(step)} ({res.mode}{extra}) in {res.duration_ms} ms"
        if self.bar is not None:
            self.bar.console.print(line)
            self.bar.advance(self.task)
        else:
            self.st.err.print(line, soft_wrap=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _render_plan(out: Console, res: dict[str, Any]) -> None:
    s = res["settings"]
    out.print(f"-- plan for {res['env']} (current version: {res['current_version'] or 'none'}; "
              f"history {s['history_table']}; lock_timeout {s['lock_timeout']}, "
              f"statement_timeout {s['statement_timeout'] or 'server default'}, "
              f"{s['lock_retries']} lock retries; search_path starts with "
              f"{s['history_table'].split('.')[0]})")
    for w in res["warnings"]:
        out.print(f"-- warning: {w}")
    for line in held_lines({"held": res.get("held")}):
        out.print(f"-- {line}", soft_wrap=True)
    if not res["steps"]:
        out.print("-- nothing to apply")
    for step in res["steps"]:
        tx = step["mode"] == "transaction"
        why = "" if tx else f" ({', '.join(step['non_transactional'])}), statement by statement"
        phase = f" [{step['phase']}]" if step.get("phase") else ""
        out.print(f"\n-- {step['script']}: {step['mode']}{why}{phase}"
                  + (f" [template from {step['file']}]" if step["template"] else ""))
        for f in step["findings"]:
            out.print(f"-- lint {f['severity']} {f['rule']} (line {f['line']}): {f['message']}")
        if tx:
            out.print("BEGIN;")
        for line in step["settings"]:
            out.print(f"{line};")
        for x in step["statements"]:
            out.print(f"{x['sql']};")
        h = step["history_row"]
        version = h["version"] or "NULL"
        if h["type"] == "DELETE":
            out.print(f"-- record in history: version {version}, type DELETE (marks "
                      f"{h['script']} undone, as Flyway's repair marks a deleted migration), "
                      f"checksum {h['checksum']}")
        else:
            out.print(f"-- record in history: version {version}, type {h['type']}, script "
                      f"{h['script']}, checksum {h['checksum']}")
        if tx:
            out.print("COMMIT;")


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the ``migrate`` app."""

    @app.command("plan")
    def plan_cmd(ctx: typer.Context, env: EnvOpt = None, target: TargetOpt = None,
                 out_of_order: OutOfOrderOpt = False, contract: ContractOpt = False,
                 json_: JsonOpt = False) -> None:
        """Show the exact SQL `up` would run, in order, with transaction mode and settings."""
        st = state(ctx, json_)
        res = service.plan(st.config(), st.target(env), version=_version(target, "--target"),
                           out_of_order=out_of_order, contract=contract)
        st.emit(res, lambda out: _render_plan(out, res))

    def _run(ctx: typer.Context, env: str | None, json_: bool, *, undo: bool, yes: bool,
             arguments: dict[str, Any], **kw: Any) -> None:
        if kw["allow_unsafe"] and not (kw["reason"] or "").strip():
            raise BadInput("--allow-unsafe needs --reason \"why this is safe here\"")
        st = state(ctx, json_)
        cfg, t = st.config(), st.target(env)
        arguments["env"] = t.name
        verb = "undo" if undo else "up"
        now = datetime.now(UTC)
        if not kw.get("dry_run"):
            # a window refuses anyway: say so before asking for confirmation
            blackout_guard(cfg, t, f"migrate {verb}", override=kw["override_blackout"],
                           reason=kw["reason"], now=now, arguments=arguments)
            confirm_protected(st, t, yes, f"migrate {verb}", arguments=arguments)
        bar = _Progress(st, "undone" if undo else "applied")

        def event(kind: str, step: Step, res: FileResult | None, i: int, total: int) -> None:
            bar.event(kind, step, res, i, total)

        def note(text: str) -> None:
            st.err.print(text, markup=False, soft_wrap=True)

        watch, watch_for = kw.pop("watch", False), kw.pop("watch_for", None)
        try:
            with sigterm_interrupts():
                if watch or watch_for:
                    from pgferry.config import parse_duration
                    from pgferry.gates.watch import up_and_watch

                    try:
                        secs = parse_duration(watch_for).total_seconds() if watch_for else None
                    except ValueError as e:
                        raise BadInput(f"--watch-for: {e}") from None
                    res = up_and_watch(cfg, t, watch_s=secs, now=now, arguments=arguments,
                                       on_note=note, on_event=event, on_wait=note, **kw)
                else:
                    res = service.run(cfg, t, undo=undo, now=now, arguments=arguments,
                                      on_event=event, on_wait=note, **kw)
        finally:
            bar.close()
        for w in res["warnings"]:
            st.err.print(f"warning: {w}", soft_wrap=True)
        for line in held_lines(res):
            st.err.print(line, soft_wrap=True)

        def render(out: Console) -> None:
            if res["dry_run"]:
                _render_plan(out, {**res, "settings": _settings(cfg)})
                return
            n = len(res["applied"])
            what = "undid" if undo else "applied"
            out.print(f"{t.name}: {what} {n} migration{'s' if n != 1 else ''} in "
                      f"{res['duration_ms']} ms; current version "
                      f"{res['current_version'] or 'none'}")

        st.emit({"ok": True, **res}, render)

    def _settings(cfg: Any) -> dict[str, Any]:
        from pgferry.migrate.runner import Settings

        s = Settings.from_config(cfg)
        return {"lock_timeout": s.lock_timeout, "statement_timeout": s.statement_timeout,
                "lock_retries": s.lock_retries, "history_table": f"{s.schema}.{s.table}"}

    @app.command("up")
    def up_cmd(ctx: typer.Context, env: EnvOpt = None, target: TargetOpt = None,
               dry_run: DryRunOpt = False, yes: YesOpt = False,
               override_blackout: OverrideOpt = False, reason: ReasonOpt = None,
               allow_unsafe: UnsafeOpt = False, out_of_order: OutOfOrderOpt = False,
               contract: ContractOpt = False, override_guards: OverrideGuardsOpt = False,
               watch: WatchOpt = False, watch_for: WatchForOpt = None,
               json_: JsonOpt = False) -> None:
        """Apply pending migrations (each file in its own transaction, under a lock)."""
        if override_guards and not (contract and (reason or "").strip()):
            raise BadInput('--override-guards needs --contract and --reason "why it is safe '
                           'now"')
        args = {"env": env, "target": target, "dry_run": dry_run, "yes": yes,
                "override_blackout": override_blackout, "reason": reason,
                "allow_unsafe": allow_unsafe, "out_of_order": out_of_order,
                "contract": contract, "override_guards": override_guards,
                "watch": watch or bool(watch_for), "watch_for": watch_for}
        _run(ctx, env, json_, undo=False, yes=yes, arguments=args,
             version=_version(target, "--target"), dry_run=dry_run,
             override_blackout=override_blackout, reason=reason,
             allow_unsafe=allow_unsafe, unsafe_reason=reason, out_of_order=out_of_order,
             contract=contract, override_guards=override_guards, guard_reason=reason,
             watch=watch, watch_for=watch_for)

    @app.command("undo")
    def undo_cmd(ctx: typer.Context, env: EnvOpt = None,
                 to: Annotated[str | None, typer.Option(
                     "--to", help="Undo every applied version above this one.")] = None,
                 dry_run: DryRunOpt = False, yes: YesOpt = False,
                 override_blackout: OverrideOpt = False, reason: ReasonOpt = None,
                 allow_unsafe: UnsafeOpt = False, json_: JsonOpt = False) -> None:
        """Run U files newest first (default: the newest applied version only)."""
        args = {"env": env, "to": to, "dry_run": dry_run, "yes": yes,
                "override_blackout": override_blackout, "reason": reason,
                "allow_unsafe": allow_unsafe}
        _run(ctx, env, json_, undo=True, yes=yes, arguments=args, to=_version(to, "--to"),
             dry_run=dry_run, override_blackout=override_blackout, reason=reason,
             allow_unsafe=allow_unsafe, unsafe_reason=reason)

"""``pgferry migrate plan|up|undo``: the verbs that execute SQL (see :mod:`pgferry.cli.migrate`).

Thin: arguments in, :mod:`pgferry.commands.migrate_run` called, its result and
progress rendered.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from pgferry.cli.common import EnvOpt, JsonOpt, State, YesOpt, sigterm_interrupts, state
from pgferry.cli.progress import MigrationLines
from pgferry.commands import migrate_run as cmd
from pgferry.events import Event

TargetOpt = Annotated[str | None, typer.Option("--target", help="Apply up to this version.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Check and show, change nothing.")]
OverrideOpt = Annotated[
    bool, typer.Option("--override-blackout", help="Run inside a blackout window (needs --reason).")
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why; goes into the journal.")]
OutOfOrderOpt = Annotated[
    bool,
    typer.Option(
        "--out-of-order",
        help="Also apply versions below the current one that are not applied "
        "(the history is ahead of the files), as Flyway's outOfOrder.",
    ),
]
UnsafeOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unsafe", help="Run despite lint errors on a protected env (needs --reason)."
    ),
]
ContractOpt = Annotated[
    bool,
    typer.Option(
        "--contract",
        help="Also apply contract-phase files whose guards pass (exit 1 while one is still held).",
    ),
]
OverrideGuardsOpt = Annotated[
    bool,
    typer.Option(
        "--override-guards",
        help="With --contract: apply contract files although a guard does "
        "not pass (needs --reason; journaled).",
    ),
]
WatchOpt = Annotated[
    bool,
    typer.Option(
        "--watch",
        help="After applying, watch the [[gate]] entries for [gates] watch; a "
        "rollback gate that fires runs the U files of what this run applied.",
    ),
]
WatchForOpt = Annotated[
    str | None, typer.Option("--watch-for", help="The watch window (e.g. 10min); implies --watch.")
]


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


def _render_plan(out: Console, res: dict[str, Any]) -> None:
    s = res["settings"]
    out.print(
        f"-- plan for {res['env']} (current version: {res['current_version'] or 'none'}; "
        f"history {s['history_table']}; lock_timeout {s['lock_timeout']}, "
        f"statement_timeout {s['statement_timeout'] or 'server default'}, "
        f"{s['lock_retries']} lock retries; search_path starts with "
        f"{s['history_table'].split('.')[0]})"
    )
    for w in res["warnings"]:
        out.print(f"-- warning: {w}")
    for line in held_lines({"held": res.get("held")}):
        out.print(f"-- {line}", soft_wrap=True, markup=False)
    if not res["steps"]:
        out.print("-- nothing to apply")
    for step in res["steps"]:
        tx = step["mode"] == "transaction"
        why = "" if tx else f" ({', '.join(step['non_transactional'])}), statement by statement"
        phase = f" [{step['phase']}]" if step.get("phase") else ""
        out.print(
            f"\n-- {step['script']}: {step['mode']}{why}{phase}"
            + (f" [template from {step['file']}]" if step["template"] else "")
        )
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
            out.print(
                f"-- record in history: version {version}, type DELETE (marks "
                f"{h['script']} undone, as Flyway's repair marks a deleted migration), "
                f"checksum {h['checksum']}"
            )
        else:
            out.print(
                f"-- record in history: version {version}, type {h['type']}, script "
                f"{h['script']}, checksum {h['checksum']}"
            )
        if tx:
            out.print("COMMIT;")


def _run(
    st: State,
    opts: cmd.RunOptions,
    *,
    undo: bool,
    watch_for: str | None = None,
    watch: bool = False,
) -> None:
    from pgferry.commands import migrate_watch

    cfg = st.config()
    notices = st.notices()
    with sigterm_interrupts(), MigrationLines(st.err, "undone" if undo else "applied") as lines:

        def progress(event: Event) -> None:
            lines(event)
            notices(event)

        if watch or watch_for:
            res: Any = migrate_watch.up(
                cfg, opts, watch_for=watch_for, progress=progress, confirm=st.confirm()
            )
        else:
            verb = cmd.undo if undo else cmd.up
            res = verb(cfg, opts, progress=progress, confirm=st.confirm())
    for w in res.warnings:
        st.err.print(f"warning: {w}", soft_wrap=True)
    for line in held_lines(res.to_dict()):
        st.err.print(line, soft_wrap=True, markup=False)

    def render(out: Console) -> None:
        if res.dry_run:
            _render_plan(out, {**res.to_dict(), "settings": res.settings})
            return
        n = len(res.applied)
        what = "undid" if undo else "applied"
        out.print(
            f"{res.env}: {what} {n} migration{'s' if n != 1 else ''} in "
            f"{res.duration_ms} ms; current version {res.current_version or 'none'}"
        )

    st.emit(res.to_dict(), render)


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the ``migrate`` app."""

    @app.command("plan")
    def plan_cmd(
        ctx: typer.Context,
        env: EnvOpt = None,
        target: TargetOpt = None,
        out_of_order: OutOfOrderOpt = False,
        contract: ContractOpt = False,
        json_: JsonOpt = False,
    ) -> None:
        """Show the exact SQL `up` would run, in order, with transaction mode and settings."""
        st = state(ctx, json_)
        res = cmd.plan(st.config(), cmd.PlanOptions(env, target, out_of_order, contract))
        d = res.to_dict()
        st.emit(d, lambda out: _render_plan(out, d))

    @app.command("up")
    def up_cmd(
        ctx: typer.Context,
        env: EnvOpt = None,
        target: TargetOpt = None,
        dry_run: DryRunOpt = False,
        yes: YesOpt = False,
        override_blackout: OverrideOpt = False,
        reason: ReasonOpt = None,
        allow_unsafe: UnsafeOpt = False,
        out_of_order: OutOfOrderOpt = False,
        contract: ContractOpt = False,
        override_guards: OverrideGuardsOpt = False,
        watch: WatchOpt = False,
        watch_for: WatchForOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Apply pending migrations (each file in its own transaction, under a lock)."""
        _run(
            state(ctx, json_),
            cmd.RunOptions(
                env,
                target=target,
                dry_run=dry_run,
                yes=yes,
                override_blackout=override_blackout,
                reason=reason,
                allow_unsafe=allow_unsafe,
                out_of_order=out_of_order,
                contract=contract,
                override_guards=override_guards,
            ),
            undo=False,
            watch=watch,
            watch_for=watch_for,
        )

    @app.command("undo")
    def undo_cmd(
        ctx: typer.Context,
        env: EnvOpt = None,
        to: Annotated[
            str | None, typer.Option("--to", help="Undo every applied version above this one.")
        ] = None,
        dry_run: DryRunOpt = False,
        yes: YesOpt = False,
        override_blackout: OverrideOpt = False,
        reason: ReasonOpt = None,
        allow_unsafe: UnsafeOpt = False,
        json_: JsonOpt = False,
    ) -> None:
        """Run U files, the most recently applied first (default: that one only)."""
        _run(
            state(ctx, json_),
            cmd.RunOptions(
                env,
                to=to,
                dry_run=dry_run,
                yes=yes,
                override_blackout=override_blackout,
                reason=reason,
                allow_unsafe=allow_unsafe,
            ),
            undo=True,
        )

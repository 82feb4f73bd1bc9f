"""``pgferry migrate new|number|sum|status|validate|baseline|repair``.

See :mod:`pgferry.cli.migrate` for how the verbs are split between modules.
Thin: arguments in, :mod:`pgferry.commands.migrate_info` called, its result rendered.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pgferry.cli.common import EnvOpt, JsonOpt, YesOpt, state
from pgferry.commands import migrate_info as cmd
from pgferry.migrate import files
from pgferry.migrate import status as status_mod
from pgferry.migrate.history import BASELINE_SCRIPT

OverrideOpt = Annotated[
    bool, typer.Option("--override-blackout", help="Proceed inside a blackout window.")
]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Why the blackout is overridden (journaled).")
]

STATUS_ROWS = 50  # a text status longer than this sums up the older applied migrations

STATE_STYLE = {
    "applied": "green",
    "pending": "yellow",
    "template": "cyan",
    "failed": "bold red",
    "missing": "red",
    "checksum_mismatch": "bold red",
    "ignored": "magenta",
    "outdated": "yellow",
    "baseline": "blue",
    "below_baseline": "dim",
    "undone": "yellow",
    "future": "magenta",
    "held": "magenta",
}


def _state_label(s: status_mod.Status, e: Any) -> str:
    """The State column: a held contract file says whether its guards pass; a failed
    non-transactional file where it stopped."""
    label = str(e.state).replace("_", " ")
    if e.state == "held":
        label = "held (contract, ready)" if s.ready(e) else "held (contract)"
    where = s.failed_at(e)
    if where is not None:
        label += (
            f" (statement {where['statement']} of {where['statements_total']})"
            if where.get("statement")
            else f" ({where.get('statements_done')} of {where.get('statements_total')} done)"
        )
    return label


def _render_held(s: status_mod.Status, entries: list[Any], out: Console) -> None:
    """One line per held contract file: the guard that holds it, or that all pass."""
    for e in entries:
        reason = s.held_reason(e) if e.state == "held" else None
        if reason is not None:
            out.print(f"[magenta]held[/]     {escape(e.script or e.description)}: {escape(reason)}")


def _render_status(s: status_mod.Status, out: Console, show_all: bool = False) -> None:
    t = Table(
        "Version",
        "Description",
        "State",
        "Installed on",
        "ms",
        title=f"{s.env}: {s.history_table}",
        title_justify="left",
    )
    entries, old, later = s.shown(None if show_all else STATUS_ROWS)
    if old:
        t.add_row("…", f"{old} older applied migrations (--all lists them)", "", "", "")
    for e in entries:
        if e.state == "baseline":
            version = f"{e.version} (baseline)"
        elif e.state == "template":
            version = f"XXX→{e.version}"
        elif e.kind == "R":
            version = "R"
        else:
            version = str(e.version) if e.version is not None else ""
        label = _state_label(s, e)
        row = e.row
        t.add_row(
            version,
            e.description,
            f"[{STATE_STYLE.get(e.state, '')}]{label}[/]",
            row.installed_on.strftime("%Y-%m-%d %H:%M") if row else "",
            str(row.execution_time) if row else "",
        )
    if later:
        t.add_row("…", f"{later} more pending migrations (--all lists them)", "", "", "")
    out.print(t)
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(s.counts().items()))
    out.print(f"current version: {s.current or 'none'}   ({counts or 'no migrations'})")
    out.print(f"{files.SUM_FILE}: {s.sum_state}")
    _render_held(s, entries, out)
    for w in status_mod.warnings(s):
        out.print(f"[yellow]warning[/]  {escape(w)}")
    for p in status_mod.problems(s):
        out.print(f"[red]problem[/]  {escape(p)}")


def _render_number(res: cmd.NumberResult, out: Console) -> None:
    if not res.had_templates:
        out.print("no templates to number")
        return
    seen = ", ".join(f"{e.env} {e.version or 'empty'}" for e in res.environments if not e.error)
    out.print(f"highest file: {res.highest or 'none'}; applied: {seen or 'unknown'}")
    verb = "would rename" if res.dry_run else "renamed"
    for r in res.renames:
        out.print(f"{verb} {r.old.name} → {r.new.name}")
    if not res.dry_run:
        out.print(f"rewrote {res.sum_shown}")


def _render_validate(res: cmd.ValidateResult, out: Console) -> None:
    for w in res.warnings:
        out.print(f"[yellow]warning[/]  {escape(w)}")
    for p in res.problems:
        out.print(f"[red]problem[/]  {escape(p)}")
    if res.problems:
        out.print(f"{res.env}: {len(res.problems)} problem(s)")
        return
    s = res.status
    n = sum(1 for e in s.entries if e.state == "applied")
    out.print(
        f"{res.env}: ok — {n} applied migration(s) match their files, "
        f"current version {s.current or 'none'}, {files.SUM_FILE} {s.sum_state}"
    )


def _render_repair(res: cmd.RepairResult, out: Console) -> None:
    if not res.ran:
        out.print(f"{res.env}: nothing to repair")
        return
    done = res.plan
    for line in cmd.repair_lines(done, done=True):
        out.print(line)
    out.print(
        f"{res.env}: repaired ({len(done.remove)} removed, {len(done.realign)} realigned"
        + (f", {len(done.convert)} converted" if done.convert else "")
        + ")"
    )


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the ``migrate`` app."""

    @app.command("new")
    def new_cmd(
        ctx: typer.Context,
        description: Annotated[str, typer.Argument(help="What the migration does.")],
        undo: Annotated[bool, typer.Option("--undo", help="Also create UXXX__<desc>.sql.")] = False,
        expand_contract: Annotated[
            bool,
            typer.Option(
                "--expand-contract",
                help="Scaffold a zero-downtime change from a recipe: rename "
                "T.C to N; change type of T.C to TYPE; add not null to T.C default V; split T into "
                "N (C, ...).",
            ),
        ] = False,
        table: Annotated[
            str | None,
            typer.Option(
                "--table",
                help="With --expand-contract: the table, when the description names only a column.",
            ),
        ] = None,
        env: EnvOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Create a template VXXX__<desc>.sql (numbered later by `migrate number`)."""
        st = state(ctx, json_)
        if expand_contract:
            res = cmd.new_expand_contract(st.config(), description, table=table, env=env)
        else:
            res = cmd.new(st.config(), description, undo=undo)

        def render(out: Console) -> None:
            for p in res.created:
                out.print(f"created {p}")
            out.print(f"rewrote {res.sum_shown}")

        st.emit(res.to_dict(), render)

    @app.command("number")
    def number_cmd(
        ctx: typer.Context,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, rename nothing.")] = False,
        json_: JsonOpt = False,
    ) -> None:
        """Give every VXXX/UXXX template the next free version and rename the files."""
        st = state(ctx, json_)
        res = cmd.number(st.config(), dry_run=dry_run, progress=st.notices())
        st.emit(res.to_dict(), lambda out: _render_number(res, out))

    @app.command("sum")
    def sum_cmd(ctx: typer.Context, json_: JsonOpt = False) -> None:
        """Rewrite migrations/pgferry.sum from the files on disk."""
        st = state(ctx, json_)
        res = cmd.write_sum(st.config())
        st.emit(
            res.to_dict(),
            lambda out: out.print(
                f"wrote {res.path} ({res.files} files, was {res.was}): {res.total}"
            ),
        )

    @app.command("status")
    def status_cmd(
        ctx: typer.Context,
        env: EnvOpt = None,
        show_all: Annotated[
            bool,
            typer.Option(
                "--all",
                help=f"List every migration (default: past {STATUS_ROWS} rows, the "
                "older applied ones are summed up in one line).",
            ),
        ] = False,
        json_: JsonOpt = False,
    ) -> None:
        """Applied, pending, failed, ignored, missing and changed migrations; templates."""
        st = state(ctx, json_)
        s = cmd.status(st.config(), env)
        st.emit(s.to_dict(), lambda out: _render_status(s, out, show_all))

    @app.command("validate")
    def validate_cmd(ctx: typer.Context, env: EnvOpt = None, json_: JsonOpt = False) -> None:
        """Exit 1 when an applied file changed or is gone, a run failed, or the sum is stale."""
        st = state(ctx, json_)
        res = cmd.validate(st.config(), env)
        st.emit(res.to_dict(), lambda out: _render_validate(res, out))
        if res.exit_code:
            raise typer.Exit(res.exit_code)

    @app.command("baseline")
    def baseline_cmd(
        ctx: typer.Context,
        version: Annotated[str, typer.Option("--version", help="The version the database is at.")],
        env: EnvOpt = None,
        description: Annotated[
            str, typer.Option("--description", help="Description of the baseline row.")
        ] = BASELINE_SCRIPT,
        yes: YesOpt = False,
        override_blackout: OverrideOpt = False,
        reason: ReasonOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Adopt an existing database: record Flyway's BASELINE row at --version."""
        st = state(ctx, json_)
        done = cmd.baseline(
            st.config(),
            version,
            cmd.RewriteOptions(env, yes, override_blackout, reason),
            description=description,
            confirm=st.confirm(),
        )
        res = done.baseline
        st.emit(
            done.to_dict(),
            lambda out: out.print(
                f"{res.env}: baselined at version {res.version} ({res.description}); "
                "files at or below it will not run here"
            ),
        )

    @app.command("repair")
    def repair_cmd(
        ctx: typer.Context,
        env: EnvOpt = None,
        yes: YesOpt = False,
        override_blackout: OverrideOpt = False,
        reason: ReasonOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Remove failed rows and realign checksums to the files (asks --yes)."""
        st = state(ctx, json_)
        # the rows a repair will change are said before it asks (not under --json)
        res = cmd.repair(
            st.config(),
            cmd.RewriteOptions(env, yes, override_blackout, reason),
            progress=None if st.json else st.notices(),
            confirm=st.confirm(),
        )
        st.emit(res.to_dict(), lambda out: _render_repair(res, out))

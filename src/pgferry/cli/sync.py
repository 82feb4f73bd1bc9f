"""``pgferry sync``, ``pgferry verify`` and ``pgferry sync revert``: thin over
:mod:`pgferry.commands.sync`.

Contract: arguments are parsed into the command's options; the command runs
with a rich progress bar per table on a terminal's stderr (a line per table on
any other: :mod:`pgferry.cli.lines`; a person at a terminal is shown the preview
of a write into a protected TARGET and asked); the result is printed (one JSON
object under ``--json``; for a person: :mod:`pgferry.cli.sync_render`). rich is
imported only to draw on a terminal or for a person.
Exit code: the result's (0 ok, 1 differences or dead letters, 3 failed); bad input 2 and
refusals 4 come from the errors the command raises before any write.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgferry.cli.common import JsonOpt, State, YesOpt, sigterm_interrupts, state

if TYPE_CHECKING:  # the engine is imported when a command runs: fast start-up for the others
    from rich.console import Console

    from pgferry.commands.base import Confirm, Question
    from pgferry.sync.result import SyncResult

ModeOpt = Annotated[str, typer.Option("--mode", "-m", help="incremental | full | verify")]
TablesOpt = Annotated[
    str | None,
    typer.Option("--tables", "-t", help="Comma-separated schema.table list (wins over exclude)."),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude", help="schema.table to leave out (repeatable, comma-separated allowed)."
    ),
]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Write a Markdown report here.")]


def _split(values: list[str] | str | None) -> list[str]:
    if values is None:
        return []
    items = [values] if isinstance(values, str) else values
    return [p.strip() for v in items for p in v.split(",") if p.strip()]


def _as_json(result: SyncResult) -> dict[str, Any]:
    from pgferry.sync import report as sync_report

    return sync_report.as_json(result)


def _confirm(st: State) -> Confirm | None:
    """Show the preview (what would change) on stderr, then ask."""
    ask = st.confirm()
    if ask is None:
        return None

    def confirm(q: Question) -> bool:
        _render(q.preview)(st.err)
        return q.ask and ask(q)

    return confirm


def _render(result: SyncResult) -> Callable[[Console], None]:
    """Draw ``result`` for a person (rich and the renderer are imported when it is drawn)."""

    def render(out: Console) -> None:
        from pgferry.cli.sync_render import renderer

        renderer(result)(out)

    return render


def _run(st: State, run: Any) -> None:
    """Run ``run(progress)``, render its result; exit with the result's code."""
    progress: Any
    if sys.stderr.isatty():
        from pgferry.cli.progress import SyncBars

        progress = SyncBars(st.err)
    else:
        from pgferry.cli.lines import SyncLines

        progress = SyncLines(sys.stderr)
    with sigterm_interrupts(), progress as bars:
        result = run(bars)
    st.emit(_as_json(result), _render(result))
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def register(app: typer.Typer) -> None:
    """Add the sync and verify commands to ``app``."""

    @app.command("sync")
    def sync_cmd(
        ctx: typer.Context,
        source: Annotated[str, typer.Argument(metavar="SOURCE", help="Source environment.")],
        target: Annotated[str, typer.Argument(metavar="TARGET", help="Target environment.")],
        mode: ModeOpt = "incremental",
        tables: TablesOpt = None,
        exclude: ExcludeOpt = None,
        batch_size: Annotated[
            int | None,
            typer.Option(
                "--batch-size", min=1, help="Rows per write batch (default [sync] batch_size)."
            ),
        ] = None,
        jobs: Annotated[
            int | None,
            typer.Option("--jobs", "-j", min=1, max=64, help="Workers over tables and key ranges."),
        ] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
        report: ReportOpt = None,
        json_: JsonOpt = False,
        yes: YesOpt = False,
        atomic: Annotated[
            bool, typer.Option("--atomic", help="All tables in one transaction.")
        ] = False,
        no_mask: Annotated[
            bool, typer.Option("--no-mask", help="Copy personal columns unmasked (needs --reason).")
        ] = False,
        reason: Annotated[
            str | None,
            typer.Option(
                "--reason",
                help="Why --no-mask and/or --override-blackout (one --reason serves "
                "both; recorded in the journal).",
            ),
        ] = None,
        override_blackout: Annotated[
            bool,
            typer.Option(
                "--override-blackout",
                help="Write into TARGET inside one of its blackout windows (needs --reason).",
            ),
        ] = False,
        on_conflict: Annotated[
            str | None,
            typer.Option(
                "--on-conflict",
                help="What a row changed on the target since the last sync does: "
                "stop (the table stays as it was), source (it is overwritten, kept for sync "
                "revert), target (it stays). Default [sync] on_conflict: stop on protected "
                "targets, else source.",
            ),
        ] = None,
        rebase: Annotated[
            bool,
            typer.Option(
                "--rebase",
                help="After this sync, take every row as the target then holds it as "
                "the state the next sync finds conflicts against (after both sides were changed "
                "the same way by hand; drops conflicts kept with on_conflict = target).",
            ),
        ] = False,
        verify_after: Annotated[
            bool,
            typer.Option(
                "--verify-after",
                help="Compare each table again after its load (checksums "
                "after; exit 1 when anything still differs). On whenever --report is given.",
            ),
        ] = False,
    ) -> None:
        """Make TARGET hold what SOURCE holds (incremental, full) or compare them (verify).

        Undo a run with: pgferry sync revert RUN_ID --env TARGET --yes
        """
        st = state(ctx, json_)
        from pgferry.commands import sync as cmd

        opts = cmd.SyncOptions(
            source,
            target,
            mode,
            _split(tables),
            _split(exclude),
            batch_size=batch_size,
            jobs=jobs,
            dry_run=dry_run,
            yes=yes,
            atomic=atomic,
            no_mask=no_mask,
            reason=reason,
            override_blackout=override_blackout,
            on_conflict=on_conflict,
            rebase=rebase,
            verify_after=verify_after,
            report=report,
        )
        cfg, confirm = st.config(), _confirm(st)
        if dry_run:  # the plan only: no progress bars
            result = cmd.sync(cfg, opts, confirm=confirm)
            st.emit(_as_json(result), _render(result))
            if result.exit_code:
                raise typer.Exit(result.exit_code)
            return
        _run(st, lambda bars: cmd.sync(cfg, opts, progress=bars, confirm=confirm))

    @app.command("verify")
    def verify_cmd(
        ctx: typer.Context,
        source: Annotated[str, typer.Argument(metavar="SOURCE", help="Source environment.")],
        target: Annotated[str, typer.Argument(metavar="TARGET", help="Target environment.")],
        tables: TablesOpt = None,
        exclude: ExcludeOpt = None,
        jobs: Annotated[
            int | None, typer.Option("--jobs", "-j", min=1, max=64, help="Tables compared at once.")
        ] = None,
        report: ReportOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Compare SOURCE and TARGET table by table (chunked checksums); exit 1 when they differ."""
        st = state(ctx, json_)
        from pgferry.commands import sync as cmd

        opts = cmd.VerifyOptions(source, target, _split(tables), _split(exclude), jobs, report)
        cfg = st.config()
        _run(st, lambda bars: cmd.verify(cfg, opts, progress=bars))


def register_revert(app: typer.Typer) -> None:
    """Add ``revert`` (reached as ``pgferry sync revert``, see cli/app.py) to ``app``."""

    @app.command("revert")
    def revert_cmd(
        ctx: typer.Context,
        run_id: Annotated[
            str,
            typer.Argument(
                metavar="RUN_ID",
                help="The sync run to undo (its id is in the report, --json and journal).",
            ),
        ],
        env: Annotated[
            str | None,
            typer.Option(
                "--env",
                "-e",
                help="The environment the run wrote to (default: the one "
                "whose before-images hold RUN_ID).",
            ),
        ] = None,
        yes: YesOpt = False,
        dry_run: Annotated[
            bool,
            typer.Option("--dry-run", help="Check and count, then roll back: nothing is changed."),
        ] = False,
        override_blackout: Annotated[
            bool,
            typer.Option(
                "--override-blackout",
                help="Revert inside one of the environment's blackout windows (needs --reason).",
            ),
        ] = False,
        reason: Annotated[
            str | None,
            typer.Option("--reason", help="Why --override-blackout (recorded in the journal)."),
        ] = None,
        json_: JsonOpt = False,
    ) -> None:
        """Put back every row one sync changed (its before-images), unless one changed since."""
        from pgferry.commands import sync as cmd

        st = state(ctx, json_)
        res = cmd.revert(
            st.config(),
            cmd.RevertOptions(run_id, env, yes, dry_run, override_blackout, reason),
            confirm=st.confirm(),
        )

        def render(out: Console) -> None:
            from pgferry.cli.sync_render import say

            verb = "would put back" if dry_run else "put back"
            for w in res.warnings:
                say(out, f"warning: {w}")
            for t in res.tables:
                say(
                    out,
                    f"{t.table}: {verb}: {t.removed} inserted row(s) removed, "
                    f"{t.reinserted} deleted row(s) inserted again, {t.restored} updated "
                    "row(s) restored",
                )
            tot = res.to_dict()["totals"]
            say(
                out,
                f"{'dry run: nothing changed' if dry_run else 'reverted'} sync run "
                f"{run_id} in {res.env}: {sum(tot.values())} row(s)",
            )

        st.emit(res.to_dict(), render)

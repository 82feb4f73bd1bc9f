"""``pgferry sync`` and ``pgferry verify``: thin wrappers over :func:`pgferry.sync.engine.run`.

Contract: arguments are checked (``--no-mask`` needs ``--reason``, SOURCE and
TARGET differ, a protected TARGET needs ``--yes`` unless nothing is written),
the engine runs with a rich progress bar per table on stderr, the result is
printed (one JSON object under ``--json``) and ``--report FILE`` gets the
Markdown report. Exit code: the result's (0 ok, 1 differences or dead letters,
3 failed); bad input 2 and refusals 4 come from the errors raised before any
write.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table as RichTable

from pgferry.cli.common import JsonOpt, State, YesOpt, confirm_protected, sigterm_interrupts, state
from pgferry.errors import BadInput

if TYPE_CHECKING:  # the engine is imported when a command runs: fast start-up for the others
    from pgferry.sync import engine
    from pgferry.sync.result import SyncResult

ModeOpt = Annotated[str, typer.Option("--mode", "-m", help="incremental | full | verify")]
TablesOpt = Annotated[str | None, typer.Option(
    "--tables", "-t", help="Comma-separated schema.table list (wins over exclude).")]
ExcludeOpt = Annotated[list[str] | None, typer.Option(
    "--exclude", help="schema.table to leave out (repeatable, comma-separated allowed).")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Write a Markdown report here.")]


def _render_plan(result: SyncResult, out: Console) -> None:
    plan = result.options.get("plan") or {}
    tbl = RichTable(title=f"plan: {result.mode} {result.source} -> {result.target} "
                    "(dry run, nothing written)")
    for h in ("#", "table", "strategy", "key", "est. rows", "est. size", "columns", "status"):
        tbl.add_column(h, justify="right" if h in ("#", "est. rows", "est. size") else "left")
    for t in plan.get("tables", []):
        diff = []
        if t["missing_on_target"]:
            diff.append("source only: " + ", ".join(t["missing_on_target"]))
        if t["missing_on_source"]:
            diff.append("target only: " + ", ".join(t["missing_on_source"]))
        tbl.add_row(str(t["order"] + 1), t["table"], t["strategy"], ",".join(t["key"]) or "-",
                    f"{t['estimated_rows']:,}", f"{t['estimated_bytes'] / 1e6:,.1f} MB",
                    "; ".join(diff) or f"{len(t['columns'])} same",
                    "stopped" if t["error"] else "ready")
    out.print(tbl)
    for t in plan.get("tables", []):
        if t["error"]:
            out.print(f"stopped: {t['error']}")
        for w in t["warnings"]:
            out.print(f"warning: {t['table']}: {w}")
    for w in result.warnings:
        out.print(f"warning: {w}")


def _render(result: SyncResult) -> Any:
    from pgferry.sync.report import key_text

    def render(out: Console) -> None:
        if result.dry_run:
            _render_plan(result, out)
            return
        verify = result.mode == "verify"
        tbl = RichTable(title=f"{result.mode} {result.source} -> {result.target}"
                        + (" (dry run)" if result.dry_run else ""))
        tbl.add_column("table")
        tbl.add_column("strategy")
        heads = (["matched", "differing", "only source", "only target"] if verify
                 else ["inserted", "updated", "deleted", "unchanged", "dead"])
        for h in heads:
            tbl.add_column(h, justify="right")
        tbl.add_column("status")
        for t in result.tables:
            nums = ([t.matched, t.differing, t.only_in_source, t.only_in_target] if verify
                    else [t.inserted, t.updated, t.deleted, t.unchanged, t.dead_lettered])
            tbl.add_row(t.table, t.strategy, *[str(n) for n in nums],
                        t.status + (f": {t.error}" if t.error else ""))
        out.print(tbl)
        for t in result.tables:
            for w in t.warnings:
                out.print(f"warning: {t.table}: {w}")
            if t.checksums_match is not None and not verify:
                out.print(f"{t.table}: checksums after: source {t.checksum_source}, target "
                          f"{t.checksum_target} ({'match' if t.checksums_match else 'DIFFER'})")
            for d in t.dead_letters[:5]:
                out.print(f"dead letter: {t.table} {d.key}: {d.error}")
            if t.dead_lettered > 5:
                out.print(f"dead letter: {t.table}: {t.dead_lettered - 5} more (all in "
                          "pgferry.dead_letters on the target, and in --report)")
            if verify and t.first_differing_keys:
                keys = t.first_differing_keys
                more = t.differing + t.only_in_source + t.only_in_target - min(len(keys), 5)
                out.print(f"{t.table}: first differing keys: "
                          + "; ".join(key_text(k) for k in keys[:5])
                          + (f"; and {more:,} more" if more > 0 else ""))
        for w in result.warnings:
            out.print(f"warning: {w}")
        if result.error:
            out.print(f"error: {result.error}")
        out.print(f"{result.derive_outcome()} in {result.duration_s:.1f}s")
    return render


def _split(values: list[str] | str | None) -> list[str]:
    if values is None:
        return []
    items = [values] if isinstance(values, str) else values
    return [p.strip() for v in items for p in v.split(",") if p.strip()]


def _run(st: State, source: str, target: str, opts: engine.Options, yes: bool,
         report: Path | None) -> None:
    from pgferry.sync import engine, events
    from pgferry.sync import report as sync_report

    if source == target:
        raise BadInput("SOURCE and TARGET are the same environment")
    cfg = st.config()
    src = st.target(source)
    tgt = st.target(target)
    if opts.mode not in ("incremental", "full", "verify"):
        raise BadInput(f"--mode {opts.mode!r}: use incremental, full or verify")
    if opts.mode != "verify" and not opts.dry_run:
        confirm_protected(st, tgt, yes, f"sync {opts.mode} from {source} into {target}")
    if report is not None:
        sync_report.check_writable(report)
    channel = events.Channel()
    if opts.dry_run:
        result = engine.run(cfg, src, tgt, opts, channel)
    else:
        with sigterm_interrupts(), events.RichProgress(st.err) as bars:
            channel.subscribe(bars)
            result = engine.run(cfg, src, tgt, opts, channel)
    if report is not None:
        sync_report.write(report, result)
    st.emit(sync_report.as_json(result), _render(result))
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
        batch_size: Annotated[int | None, typer.Option(
            "--batch-size", min=1, help="Rows per write batch (default [sync] batch_size).")
        ] = None,
        jobs: Annotated[int | None, typer.Option(
            "--jobs", "-j", min=1, max=64, help="Workers over tables and key ranges.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
        report: ReportOpt = None,
        json_: JsonOpt = False,
        yes: YesOpt = False,
        atomic: Annotated[bool, typer.Option("--atomic", help="All tables in one transaction."
                                             )] = False,
        no_mask: Annotated[bool, typer.Option("--no-mask", help="Copy personal columns "
                                              "unmasked (needs --reason).")] = False,
        reason: Annotated[str | None, typer.Option(
            "--reason", help="Why --no-mask and/or --override-blackout (one --reason serves "
            "both; recorded in the journal).")] = None,
        override_blackout: Annotated[bool, typer.Option(
            "--override-blackout", help="Write into TARGET inside one of its blackout "
            "windows (needs --reason).")] = False,
        verify_after: Annotated[bool, typer.Option(
            "--verify-after", help="Compare each table again after its load (checksums "
            "after; exit 1 when anything still differs). On whenever --report is given.")
        ] = False,
    ) -> None:
        """Make TARGET hold what SOURCE holds (incremental, full) or compare them (verify)."""
        st = state(ctx, json_)
        if no_mask and not (reason and reason.strip()):
            raise BadInput("--no-mask needs --reason TEXT (it is recorded in the journal)")
        if reason and not (no_mask or override_blackout):
            raise BadInput("--reason goes with --no-mask or --override-blackout")
        from pgferry.sync import engine

        opts = engine.Options(mode=mode, tables=_split(tables), exclude=_split(exclude),  # type: ignore[arg-type]
                              batch_size=batch_size, jobs=jobs, dry_run=dry_run, atomic=atomic,
                              no_mask_reason=reason if no_mask else None,
                              # a report is the proof: it carries the checksums after
                              verify_after=verify_after or report is not None)
        if mode != "verify" and not dry_run:  # a freeze covers every write (exit 4, journaled)
            from pgferry.policy import blackout_guard

            blackout_guard(st.config(), target, "sync", override=override_blackout, reason=reason)
        _run(st, source, target, opts, yes, report)

    @app.command("verify")
    def verify_cmd(
        ctx: typer.Context,
        source: Annotated[str, typer.Argument(metavar="SOURCE", help="Source environment.")],
        target: Annotated[str, typer.Argument(metavar="TARGET", help="Target environment.")],
        tables: TablesOpt = None,
        exclude: ExcludeOpt = None,
        jobs: Annotated[int | None, typer.Option(
            "--jobs", "-j", min=1, max=64, help="Tables compared at once.")] = None,
        report: ReportOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Compare SOURCE and TARGET table by table (chunked checksums); exit 1 when they differ."""
        st = state(ctx, json_)
        from pgferry.sync import engine

        opts = engine.Options(mode="verify", tables=_split(tables), exclude=_split(exclude),
                              jobs=jobs)
        _run(st, source, target, opts, False, report)

"""``pgferry sync``, ``pgferry verify`` and ``pgferry sync revert``: thin over
:mod:`pgferry.commands.sync`.

Contract: arguments are parsed into the command's options; the command runs
with a rich progress bar per table on stderr (a person at a terminal is shown
the preview of a write into a protected TARGET and asked); the result is
printed (one JSON object under ``--json``). Exit code: the result's (0 ok, 1
differences or dead letters, 3 failed); bad input 2 and refusals 4 come from
the errors the command raises before any write.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from pgferry.cli.common import JsonOpt, State, YesOpt, sigterm_interrupts, state

if TYPE_CHECKING:  # the engine is imported when a command runs: fast start-up for the others
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


def _say(out: Console, text: str) -> None:
    """Print a message as it is: text in square brackets is not rich markup."""
    out.print(text, markup=False, highlight=False)


def _cells(*values: object) -> list[Text]:
    return [Text(str(v)) for v in values]


def conflict_lines(t: Any, on_conflict: str, keep: bool) -> list[str]:
    """What the conflicts step found for one table, as lines to print (empty: nothing)."""
    from pgferry import jsonio

    lines = []
    if t.conflicts:
        what = {
            "stop": "the table is left as it was; choose with --on-conflict source (the "
            "source wins, the target's rows are kept for sync revert) or target (the "
            "target's rows stay)",
            "source": "the source's rows win; the target's are kept for sync revert",
            "target": "the target's rows stay",
        }
        lines.append(
            f"conflicts: {t.table}: {t.conflicts} row(s) changed on both sides since "
            f"the last sync (on_conflict = {on_conflict}: {what[on_conflict]})"
        )
        for c in t.conflict_rows[:5]:
            key = ", ".join(f"{k}={v}" for k, v in c["key"].items())
            lines.append(
                f"  {key} ({c['kind']}): target {jsonio.dumps(c['target_row'])} | "
                f"source {jsonio.dumps(c['source_row'])}"
            )
        if t.conflicts > 5:
            lines.append(f"  and {t.conflicts - 5:,} more (all counted in --json and the report)")
    if t.target_only:
        lines.append(
            f"{t.table}: {t.target_only} row(s) changed only on the target since the "
            "last sync: "
            + (
                "kept as they are (keep_target_changes)"
                if keep
                else "written back to the source's rows"
            )
        )
    return lines


def _unknown(out: Console, result: SyncResult) -> None:
    unknown = [t.table for t in result.tables if t.conflicts_known is False]
    if unknown:
        _say(
            out,
            f"conflicts cannot be known yet (no earlier sync from {result.source}) for: "
            + ", ".join(unknown),
        )


def _plan_table(result: SyncResult, plan: dict[str, Any]) -> RichTable:
    tbl = RichTable(
        title=Text(
            f"plan: {result.mode} {result.source} -> {result.target} (dry run, nothing written)"
        )
    )
    heads = (
        "#",
        "table",
        "strategy",
        "key",
        "insert",
        "update",
        "delete",
        "conflicts",
        "columns",
        "status",
    )
    for h in heads:
        tbl.add_column(
            h,
            justify="right" if h in ("#", "insert", "update", "delete", "conflicts") else "left",
            no_wrap=h == "table",
        )
    by = {t.table: t for t in result.tables}
    for t in plan.get("tables", []):
        r = by.get(t["table"])
        diff = []
        if t["missing_on_target"]:
            diff.append("source only: " + ", ".join(t["missing_on_target"]))
        if t["missing_on_source"]:
            diff.append("target only: " + ", ".join(t["missing_on_source"]))
        counted = r is not None and r.status != "failed" and not t["error"]
        nums = (
            [
                f"{r.would_insert:,}",
                f"{r.would_update:,}",
                f"{r.would_delete:,}",
                "?"
                if r.conflicts_known is False
                else f"{r.conflicts:,}"
                if t["conflicts_tracked"]
                else "-",
            ]
            if counted and r is not None
            else ["-", "-", "-", "-"]
        )
        tbl.add_row(
            *_cells(
                t["order"] + 1,
                t["table"],
                t["strategy"],
                ",".join(t["key"]) or "-",
                *nums,
                "; ".join(diff) or f"{len(t['columns'])} same",
                "stopped" if t["error"] else "failed" if r and r.status == "failed" else "ready",
            )
        )
    return tbl


def _plan_table_lines(result: SyncResult, t: dict[str, Any]) -> list[str]:
    """What the plan says of one table, below the table."""
    from pgferry.sync.report import key_text

    name = t["table"]
    r = next((x for x in result.tables if x.table == name), None)
    lines = []
    if t["error"]:
        lines.append(f"stopped: {t['error']}")
    elif r is not None and r.error:
        lines.append(f"failed: {name}: {r.error}")
    lines += [f"drift: {name}: {f}" for f in t["findings"]]
    if r is not None and r.first_differing_keys:
        keys = "; ".join(key_text(k) for k in r.first_differing_keys[:5])
        lines.append(f"{name}: first keys: {keys}")
    if r is not None and r.note:
        lines.append(f"note: {name}: {r.note}")
    if r is not None:
        lines += conflict_lines(r, t["on_conflict"], t["keep_target_changes"])
    if t["masked"]:
        lines.append(
            f"{name}: masked: "
            + ", ".join(f"{c} ({rule})" for c, rule in sorted(t["masked"].items()))
        )
    lines += [f"warning: {name}: {w}" for w in t["warnings"]]
    return lines


def _plan_summary(tables: list[dict[str, Any]]) -> list[str]:
    """What holds for many tables, said once."""
    lines = []
    locks: dict[str, list[str]] = {}
    for t in tables:
        for lock in t["locks"]:
            locks.setdefault(lock, []).append(t["table"])
    lines += [f"locks: {lock}: {', '.join(names)}" for lock, names in locks.items()]
    seqs = sorted({v.partition("|")[0] for t in tables for v in t["sequences"].values()})
    if seqs:
        lines.append("sequences moved forward after the data: " + ", ".join(seqs))
    images = [t["table"] for t in tables if t["before_images"]]
    if images:
        lines.append(
            "before-images kept (sync revert): "
            + ("every table" if len(images) == len(tables) else ", ".join(images))
        )
    return lines


def _render_plan(result: SyncResult, out: Console) -> None:
    plan = result.options.get("plan") or {}
    out.print(_plan_table(result, plan))
    tables = plan.get("tables", [])
    for t in tables:
        for line in _plan_table_lines(result, t):
            _say(out, line)
    _unknown(out, result)
    for line in _plan_summary(tables):
        _say(out, line)
    for f in plan.get("findings", []):
        _say(out, f"drift: {f}")
    for w in result.warnings:
        _say(out, f"warning: {w}")


def _result_table(result: SyncResult) -> RichTable:
    verify = result.mode == "verify"
    tbl = RichTable(title=Text(f"{result.mode} {result.source} -> {result.target}"))
    tbl.add_column("table")
    tbl.add_column("strategy")
    heads = (
        ["matched", "differing", "only source", "only target"]
        if verify
        else ["inserted", "updated", "deleted", "unchanged", "dead"]
    )
    for h in heads:
        tbl.add_column(h, justify="right")
    tbl.add_column("status")
    for t in result.tables:
        nums = (
            [t.matched, t.differing, t.only_in_source, t.only_in_target]
            if verify
            else [t.inserted, t.updated, t.deleted, t.unchanged, t.dead_lettered]
        )
        status = t.status + (f": {t.error}" if t.error else "")
        if t.status == "conflicts":  # the conflict lines below say the rest
            status = f"stopped: {t.conflicts} conflict(s), unchanged"
        if t.note and t.status != "failed":
            status += f" ({t.note})"
        tbl.add_row(*_cells(t.table, t.strategy, *nums, status))
    return tbl


def _result_table_lines(result: SyncResult, t: Any, policy: dict[str, Any]) -> list[str]:
    """What the result says of one table, below the table."""
    from pgferry.sync.report import key_text

    verify = result.mode == "verify"
    lines = conflict_lines(
        t, policy.get("on_conflict", "source"), policy.get("keep_target_changes", False)
    )
    lines += [f"drift: {t.table}: {f}" for f in t.findings]
    lines += [f"warning: {t.table}: {w}" for w in t.warnings]
    if t.checksums_match is not None and not verify:
        lines.append(
            f"{t.table}: checksums after: source {t.checksum_source}, target "
            f"{t.checksum_target} ({'match' if t.checksums_match else 'DIFFER'})"
        )
    lines += [f"dead letter: {t.table} {d.key}: {d.error}" for d in t.dead_letters[:5]]
    if t.dead_lettered > 5:
        lines.append(
            f"dead letter: {t.table}: {t.dead_lettered - 5} more (all in "
            "pgferry.dead_letters on the target, and in --report)"
        )
    if verify and t.first_differing_keys:
        keys = t.first_differing_keys
        more = t.differing + t.only_in_source + t.only_in_target - min(len(keys), 5)
        lines.append(
            f"{t.table}: first differing keys: "
            + "; ".join(key_text(k) for k in keys[:5])
            + (f"; and {more:,} more" if more > 0 else "")
        )
    return lines


def _render(result: SyncResult) -> Any:
    def render(out: Console) -> None:
        if result.dry_run:
            _render_plan(result, out)
            return
        out.print(_result_table(result))
        plans = {p["table"]: p for p in result.options.get("table_policies", [])}
        for t in result.tables:
            for line in _result_table_lines(result, t, plans.get(t.table, {})):
                _say(out, line)
        _unknown(out, result)
        listed = {t.table for t in result.tables if t.status == "missing"}
        for f in result.findings:
            if f.split(" ", 1)[0] not in listed:  # (a missing table's row says it already)
                _say(out, f"drift: {f}")
        for w in result.warnings:
            _say(out, f"warning: {w}")
        if result.error:
            _say(out, f"error: {result.error}")
        if result.mode != "verify" and any(t.before_images and t.written for t in result.tables):
            _say(
                out,
                f"run {result.run_id}: undo with `pgferry sync revert {result.run_id} "
                f"--env {result.target} --yes`",
            )
        _say(out, f"{result.derive_outcome()} in {result.duration_s:.1f}s")

    return render


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


def _run(st: State, run: Any) -> None:
    """Run ``run(progress)``, render its result; exit with the result's code."""
    from pgferry.cli.progress import SyncBars

    with sigterm_interrupts(), SyncBars(st.err) as bars:
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
            verb = "would put back" if dry_run else "put back"
            for t in res.tables:
                _say(
                    out,
                    f"{t.table}: {verb}: {t.removed} inserted row(s) removed, "
                    f"{t.reinserted} deleted row(s) inserted again, {t.restored} updated "
                    "row(s) restored",
                )
            tot = res.to_dict()["totals"]
            _say(
                out,
                f"{'dry run: nothing changed' if dry_run else 'reverted'} sync run "
                f"{run_id} in {res.env}: {sum(tot.values())} row(s)",
            )

        st.emit(res.to_dict(), render)

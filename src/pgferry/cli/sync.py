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

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from pgferry.cli.common import (
    JsonOpt,
    State,
    YesOpt,
    confirm_protected,
    sigterm_interrupts,
    state,
)
from pgferry.errors import BadInput, Refused

if TYPE_CHECKING:  # the engine is imported when a command runs: fast start-up for the others
    from pgferry.pg.connect import Target
    from pgferry.sync import engine
    from pgferry.sync.result import SyncResult

ModeOpt = Annotated[str, typer.Option("--mode", "-m", help="incremental | full | verify")]
TablesOpt = Annotated[str | None, typer.Option(
    "--tables", "-t", help="Comma-separated schema.table list (wins over exclude).")]
ExcludeOpt = Annotated[list[str] | None, typer.Option(
    "--exclude", help="schema.table to leave out (repeatable, comma-separated allowed).")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Write a Markdown report here.")]


def _say(out: Console, text: str) -> None:
    """Print a message as it is: text in square brackets is not rich markup."""
    out.print(text, markup=False, highlight=False)


def _cells(*values: object) -> list[Text]:
    return [Text(str(v)) for v in values]


def conflict_lines(t: Any, source: str, on_conflict: str, keep: bool) -> list[str]:
    """What the conflicts step found for one table, as lines to print (empty: nothing)."""
    from pgferry import jsonio

    lines = []
    if t.conflicts:
        what = {"stop": "the table is left as it was; choose with --on-conflict source (the "
                "source wins, the target's rows are kept for sync revert) or target (the "
                "target's rows stay)", "source": "the source's rows win; the target's are kept "
                "for sync revert", "target": "the target's rows stay"}
        lines.append(f"conflicts: {t.table}: {t.conflicts} row(s) changed on both sides since "
                     f"the last sync (on_conflict = {on_conflict}: {what[on_conflict]})")
        for c in t.conflict_rows[:5]:
            key = ", ".join(f"{k}={v}" for k, v in c["key"].items())
            lines.append(f"  {key} ({c['kind']}): target {jsonio.dumps(c['target_row'])} | "
                         f"source {jsonio.dumps(c['source_row'])}")
        if t.conflicts > 5:
            lines.append(f"  and {t.conflicts - 5:,} more (all counted in --json and the report)")
    if t.target_only:
        lines.append(f"{t.table}: {t.target_only} row(s) changed only on the target since the "
                     "last sync: " + ("kept as they are (keep_target_changes)" if keep
                                      else "written back to the source's rows"))
    return lines


def _unknown(out: Console, result: SyncResult) -> None:
    unknown = [t.table for t in result.tables if t.conflicts_known is False]
    if unknown:
        _say(out, f"conflicts cannot be known yet (no earlier sync from {result.source}) for: "
             + ", ".join(unknown))


def _render_plan(result: SyncResult, out: Console) -> None:
    from pgferry.sync.report import key_text

    plan = result.options.get("plan") or {}
    tbl = RichTable(title=Text(f"plan: {result.mode} {result.source} -> {result.target} "
                               "(dry run, nothing written)"))
    heads = ("#", "table", "strategy", "key", "insert", "update", "delete", "conflicts",
             "columns", "status")
    for h in heads:
        tbl.add_column(h, justify="right" if h in ("#", "insert", "update", "delete",
                                                   "conflicts") else "left",
                       no_wrap=h == "table")
    by = {t.table: t for t in result.tables}
    for t in plan.get("tables", []):
        r = by.get(t["table"])
        diff = []
        if t["missing_on_target"]:
            diff.append("source only: " + ", ".join(t["missing_on_target"]))
        if t["missing_on_source"]:
            diff.append("target only: " + ", ".join(t["missing_on_source"]))
        counted = r is not None and r.status != "failed" and not t["error"]
        nums = ([f"{r.would_insert:,}", f"{r.would_update:,}", f"{r.would_delete:,}",
                 "?" if r.conflicts_known is False else f"{r.conflicts:,}"
                 if t["conflicts_tracked"] else "-"]
                if counted and r is not None else ["-", "-", "-", "-"])
        tbl.add_row(*_cells(t["order"] + 1, t["table"], t["strategy"], ",".join(t["key"]) or "-",
                            *nums, "; ".join(diff) or f"{len(t['columns'])} same",
                            "stopped" if t["error"] else "failed" if r and r.status == "failed"
                            else "ready"))
    out.print(tbl)
    tables = plan.get("tables", [])
    for t in tables:
        name = t["table"]
        r = by.get(name)
        if t["error"]:
            _say(out, f"stopped: {t['error']}")
        elif r is not None and r.error:
            _say(out, f"failed: {name}: {r.error}")
        for f in t["findings"]:
            _say(out, f"drift: {name}: {f}")
        if r is not None and r.first_differing_keys:
            keys = "; ".join(key_text(k) for k in r.first_differing_keys[:5])
            _say(out, f"{name}: first keys: {keys}")
        if r is not None and r.note:
            _say(out, f"note: {name}: {r.note}")
        if r is not None:
            for line in conflict_lines(r, result.source, t["on_conflict"],
                                       t["keep_target_changes"]):
                _say(out, line)
        if t["masked"]:
            _say(out, f"{name}: masked: " + ", ".join(f"{c} ({rule})" for c, rule in
                                                       sorted(t["masked"].items())))
        for w in t["warnings"]:
            _say(out, f"warning: {name}: {w}")
    # what holds for many tables, said once
    _unknown(out, result)
    locks: dict[str, list[str]] = {}
    for t in tables:
        for lock in t["locks"]:
            locks.setdefault(lock, []).append(t["table"])
    for lock, names in locks.items():
        _say(out, f"locks: {lock}: {', '.join(names)}")
    seqs = sorted({v.partition("|")[0] for t in tables for v in t["sequences"].values()})
    if seqs:
        _say(out, "sequences moved forward after the data: " + ", ".join(seqs))
    images = [t["table"] for t in tables if t["before_images"]]
    if images:
        _say(out, "before-images kept (sync revert): " + (
            "every table" if len(images) == len(tables) else ", ".join(images)))
    for f in plan.get("findings", []):
        _say(out, f"drift: {f}")
    for w in result.warnings:
        _say(out, f"warning: {w}")


def _render(result: SyncResult) -> Any:
    from pgferry.sync.report import key_text

    def render(out: Console) -> None:
        if result.dry_run:
            _render_plan(result, out)
            return
        verify = result.mode == "verify"
        tbl = RichTable(title=Text(f"{result.mode} {result.source} -> {result.target}"))
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
            status = t.status + (f": {t.error}" if t.error else "")
            if t.status == "conflicts":  # the conflict lines below say the rest
                status = f"stopped: {t.conflicts} conflict(s), unchanged"
            if t.note and t.status != "failed":
                status += f" ({t.note})"
            tbl.add_row(*_cells(t.table, t.strategy, *nums, status))
        out.print(tbl)
        plans = {p["table"]: p for p in result.options.get("table_policies", [])}
        for t in result.tables:
            pol = plans.get(t.table, {})
            for line in conflict_lines(t, result.source, pol.get("on_conflict", "source"),
                                       pol.get("keep_target_changes", False)):
                _say(out, line)
            for f in t.findings:
                _say(out, f"drift: {t.table}: {f}")
            for w in t.warnings:
                _say(out, f"warning: {t.table}: {w}")
            if t.checksums_match is not None and not verify:
                _say(out, f"{t.table}: checksums after: source {t.checksum_source}, target "
                     f"{t.checksum_target} ({'match' if t.checksums_match else 'DIFFER'})")
            for d in t.dead_letters[:5]:
                _say(out, f"dead letter: {t.table} {d.key}: {d.error}")
            if t.dead_lettered > 5:
                _say(out, f"dead letter: {t.table}: {t.dead_lettered - 5} more (all in "
                     "pgferry.dead_letters on the target, and in --report)")
            if verify and t.first_differing_keys:
                keys = t.first_differing_keys
                more = t.differing + t.only_in_source + t.only_in_target - min(len(keys), 5)
                _say(out, f"{t.table}: first differing keys: "
                     + "; ".join(key_text(k) for k in keys[:5])
                     + (f"; and {more:,} more" if more > 0 else ""))
        _unknown(out, result)
        listed = {t.table for t in result.tables if t.status == "missing"}
        for f in result.findings:
            if f.split(" ", 1)[0] not in listed:  # (a missing table's row says it already)
                _say(out, f"drift: {f}")
        for w in result.warnings:
            _say(out, f"warning: {w}")
        if result.error:
            _say(out, f"error: {result.error}")
        if not verify and any(t.before_images and t.written for t in result.tables):
            _say(out, f"run {result.run_id}: undo with `pgferry sync revert {result.run_id} "
                 f"--env {result.target} --yes`")
        _say(out, f"{result.derive_outcome()} in {result.duration_s:.1f}s")
    return render


def interactive(st: State) -> bool:
    """A person at a terminal who can answer a question (not --json, not piped)."""
    return not st.json and sys.stdin.isatty() and sys.stderr.isatty()


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
    if report is not None:
        sync_report.check_writable(report)
    if opts.mode != "verify" and not opts.dry_run and tgt.protected and not yes:
        action = f"sync {opts.mode} from {source} into {target}"
        if interactive(st):
            # show what would change before asking: the read-only comparison, counted
            preview = engine.run(cfg, src, tgt, replace(opts, dry_run=True))
            _render(preview)(st.err)
            if preview.exit_code:
                raise Refused(f"the preview of {action} did not complete (exit "
                              f"{preview.exit_code}); nothing was written", env=target)
            if not typer.confirm(f"{target} is protected. Apply these changes ({action})?",
                                 default=False, err=True):
                raise Refused(f"environment {target!r} is protected: {action} was not "
                              "confirmed; nothing was written", env=target)
        else:
            confirm_protected(st, tgt, yes, action)
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
        on_conflict: Annotated[str | None, typer.Option(
            "--on-conflict", help="What a row changed on the target since the last sync does: "
            "stop (the table stays as it was), source (it is overwritten, kept for sync "
            "revert), target (it stays). Default [sync] on_conflict: stop on protected "
            "targets, else source.")] = None,
        rebase: Annotated[bool, typer.Option(
            "--rebase", help="After this sync, take every row as the target then holds it as "
            "the state the next sync finds conflicts against (after both sides were changed "
            "the same way by hand; drops conflicts kept with on_conflict = target).")] = False,
        verify_after: Annotated[bool, typer.Option(
            "--verify-after", help="Compare each table again after its load (checksums "
            "after; exit 1 when anything still differs). On whenever --report is given.")
        ] = False,
    ) -> None:
        """Make TARGET hold what SOURCE holds (incremental, full) or compare them (verify).

        Undo a run with: pgferry sync revert RUN_ID --env TARGET --yes
        """
        st = state(ctx, json_)
        if no_mask and not (reason and reason.strip()):
            raise BadInput("--no-mask needs --reason TEXT (it is recorded in the journal)")
        if reason and not (no_mask or override_blackout):
            raise BadInput("--reason goes with --no-mask or --override-blackout")
        from pgferry.sync import engine

        if on_conflict is not None and on_conflict not in ("stop", "source", "target"):
            raise BadInput(f"--on-conflict {on_conflict!r}: use stop, source or target")
        opts = engine.Options(mode=mode, tables=_split(tables), exclude=_split(exclude),  # type: ignore[arg-type]
                              batch_size=batch_size, jobs=jobs, dry_run=dry_run, atomic=atomic,
                              on_conflict=on_conflict, rebase=rebase,
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


def register_revert(app: typer.Typer) -> None:
    """Add ``revert`` (reached as ``pgferry sync revert``, see cli/app.py) to ``app``."""

    @app.command("revert")
    def revert_cmd(
        ctx: typer.Context,
        run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The sync run to undo "
                                              "(its id is in the report, --json and journal).")],
        env: Annotated[str | None, typer.Option(
            "--env", "-e", help="The environment the run wrote to (default: the one "
            "whose before-images hold RUN_ID).")] = None,
        yes: YesOpt = False,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Check and count, then roll back: nothing is changed.")] = False,
        override_blackout: Annotated[bool, typer.Option(
            "--override-blackout", help="Revert inside one of the environment's blackout "
            "windows (needs --reason).")] = False,
        reason: Annotated[str | None, typer.Option(
            "--reason", help="Why --override-blackout (recorded in the journal).")] = None,
        json_: JsonOpt = False,
    ) -> None:
        """Put back every row one sync changed (its before-images), unless one changed since."""
        from pgferry import journal
        from pgferry.config import parse_duration
        from pgferry.sync import revert

        st = state(ctx, json_)
        cfg = st.config()
        tgt = st.target(env) if env else _find_run(st, run_id)
        if reason and not override_blackout:
            raise BadInput("--reason goes with --override-blackout")
        if not dry_run:
            from pgferry.policy import blackout_guard

            blackout_guard(cfg, tgt, "sync revert", override=override_blackout, reason=reason)
            confirm_protected(st, tgt, yes, f"sync revert {run_id} in {tgt.name}")
        wait = parse_duration(cfg.sync.lock_wait).total_seconds()
        if dry_run:
            res = revert.revert(tgt, run_id, lock_wait_s=wait, dry_run=True)
        else:
            with journal.operation(tgt, "sync revert", {"run_id": run_id}) as op:
                res = revert.revert(tgt, run_id, lock_wait_s=wait)
                op.details.update(res.to_dict())

        def render(out: Console) -> None:
            verb = "would put back" if dry_run else "put back"
            for t in res.tables:
                _say(out, f"{t.table}: {verb}: {t.removed} inserted row(s) removed, "
                     f"{t.reinserted} deleted row(s) inserted again, {t.restored} updated "
                     "row(s) restored")
            tot = res.to_dict()["totals"]
            _say(out, f"{'dry run: nothing changed' if dry_run else 'reverted'} sync run "
                 f"{run_id} in {tgt.name}: {sum(tot.values())} row(s)")
        st.emit(res.to_dict(), render)


def _find_run(st: State, run_id: str) -> Target:
    """The environment whose before-images hold ``run_id`` (BadInput when none or several)."""
    import psycopg

    from pgferry.errors import PgferryError
    from pgferry.pg.connect import connect

    hits = []
    for name in st.config().environments:
        try:
            t = st.target(name)
            with connect(t.dsn, autocommit=True, retry_for=0) as c:
                if c.execute("SELECT to_regclass('pgferry.before_images')").fetchone() == (None,):
                    continue
                if c.execute("SELECT 1 FROM pgferry.before_images WHERE run_id = %s LIMIT 1",
                             [run_id]).fetchone():
                    hits.append(t)
        except (PgferryError, psycopg.Error):
            continue  # an environment that cannot be reached cannot hold it for us either
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise BadInput(f"no environment holds before-images of sync run {run_id!r}; check the "
                       "run id (the report, --json or pgferry journal) or name it with --env")
    raise BadInput(f"sync run {run_id!r} is in {', '.join(t.name for t in hits)}; name one with "
                   "--env")

"""``pgferry backup create|list|verify|restore|prune``: thin over :mod:`pgferry.commands.backup`.

Contract: each verb parses its arguments, calls one command function (a person
at a terminal may be asked before a restore into a protected environment) and
renders its result (one JSON object under ``--json``). Exit
codes: 0 done; 1 a verify problem (or a damaged backup a restore refused);
2 bad input (unknown backup, no pg_dump new enough, wrong key); 3 the
operation failed (unwritable backup dir, pg_dump/pg_restore failed: the target
is as it was); 4 refused (protected without ``--yes``, blackout window).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pgferry.cli import common
from pgferry.cli.common import JsonOpt, YesOpt, state
from pgferry.commands import backup as cmd

app = typer.Typer(
    help="Backups you can restore: checksummed, retained, test-restored.", no_args_is_help=True
)

EnvReq = Annotated[str, typer.Option("--env", "-e", help="Environment name from pgferry.toml.")]
EnvOptional = Annotated[
    str | None,
    typer.Option("--env", "-e", help="Environment whose backups to use (needed for `latest`)."),
]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="A backup id, or `latest`.")]
JobsOpt = Annotated[
    int | None,
    typer.Option(
        "--jobs", "-j", min=1, max=64, help="Parallel pg_dump/pg_restore jobs ([backup] jobs)."
    ),
]


def _say(out: Console, text: str) -> None:
    out.print(text, markup=False, highlight=False)


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


@app.command("create")
def create_cmd(
    ctx: typer.Context,
    env: EnvReq,
    tag: Annotated[str | None, typer.Option("--tag", help="A label kept in the manifest.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Never prune this backup.")] = False,
    jobs: JobsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Take a backup of ENV: pg_dump (directory format), checksums, row counts, manifest last."""
    st = state(ctx, json_)
    with common.sigterm_interrupts():
        res = cmd.create(
            st.config(), cmd.CreateOptions(env, tag, keep, jobs), progress=st.notices()
        )
    m = res.manifest

    def render(out: Console) -> None:
        rows = sum(m.tables.values())
        _say(
            out,
            f"backup {m.id} of {env} ({m.database}): {len(m.tables)} tables, {rows:,} "
            f"rows, {len(m.files)} files, {size_text(m.size_bytes)}"
            f"{', encrypted' if m.encryption else ''} in {res.seconds:.1f}s",
        )
        _say(out, f"at {res.path}")
        _say(
            out,
            f"pg_dump {m.pg_dump_version} ({m.compression}) of PostgreSQL "
            f"{m.server_version}; check it with `pgferry backup verify {m.id} --restore-test`",
        )

    st.emit(res.to_dict(), render)


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    env: EnvReq,
    all_: Annotated[bool, typer.Option("--all", help="Also list interrupted backups.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List ENV's backups: when, size, tables, state, retention slot; and their freshness."""
    st = state(ctx, json_)
    cfg = st.config()
    res = cmd.listing(cfg, env, include_incomplete=all_)

    def render(out: Console) -> None:
        t = Table(title=Text(f"backups of {env} in {cfg.backup_dir / env}"))
        for h in ("id", "finished (UTC)", "size", "tables", "rows", "state", "slot", "tag"):
            t.add_column(
                h,
                justify="right" if h in ("size", "tables", "rows") else "left",
                no_wrap=h in ("id", "finished (UTC)", "size"),
            )
        for b in res.backups:
            when = (b["finished_at"] or "")[:19].replace("T", " ")
            flags = f" ({', '.join(b['flags'])})" if b["flags"] else ""
            v = b["verification"]
            at = v["restore_tested_at"] if b["state"] == "restore-tested" else v["verified_at"]
            stamp = (
                f" {at[:16].replace('T', ' ')}"
                if at and b["state"] in ("verified", "restore-tested")
                else ""
            )
            t.add_row(
                *(
                    Text(str(x))
                    for x in (
                        b["id"],
                        when,
                        size_text(b["size_bytes"]) if b["complete"] else "-",
                        b["tables"],
                        f"{b['rows']:,}",
                        b["state"] + stamp + flags,
                        ", ".join(b["slots"]) or "-",
                        b["tag"] or "",
                    )
                )
            )
        out.print(t)
        f = res.freshness
        _say(
            out,
            f"newest complete: {age_text(f['newest_complete_age_s'])} old; newest "
            f"restore-tested: {age_text(f['newest_restore_tested_age_s'])} old; max_age "
            f"{cfg.backup.max_age}" + (" (STALE)" if f["stale"] else ""),
        )
        if f["too_small"]:
            _say(
                out,
                f"warning: the newest backup is smaller than [backup] min_size "
                f"({size_text(f['min_size_bytes'])})",
            )

    st.emit(res.to_dict(), render)


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    backup_id: IdArg,
    env: EnvOptional = None,
    restore_test: Annotated[
        bool,
        typer.Option(
            "--restore-test", help="Also restore into a scratch database and compare row counts."
        ),
    ] = False,
    jobs: JobsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Re-hash every file against the manifest and read the archive; exit 1 on any mismatch."""
    st = state(ctx, json_)
    with common.sigterm_interrupts():
        res = cmd.verify(st.config(), cmd.BackupVerifyOptions(backup_id, env, restore_test, jobs))
    info = res.info

    def render(out: Console) -> None:
        for p in res.problems:
            _say(out, f"problem: {p}")
        what = f"{res.files_checked} files re-hashed, table of contents read"
        if res.restore_test:
            what += f", restore test: {res.tables_compared} tables' row counts compared"
        verdict = "ok" if res.ok else "FAILED"
        _say(out, f"backup {info.id} of {info.env}: {verdict} ({what}) in {res.seconds:.1f}s")
        for w in res.warnings:
            _say(out, f"warning: {w}")

    st.emit(res.to_dict(), render)
    if not res.ok:
        raise typer.Exit(1)


@app.command("restore")
def restore_cmd(
    ctx: typer.Context,
    backup_id: IdArg,
    env: EnvReq,
    from_env: Annotated[
        str | None,
        typer.Option(
            "--from", help="Whose backups ID is among (default: found by id; --env for latest)."
        ),
    ] = None,
    tables: Annotated[
        str | None,
        typer.Option(
            "--tables", "-t", help="Comma-separated schema.table list: restore only their rows."
        ),
    ] = None,
    into_new: Annotated[
        str | None,
        typer.Option(
            "--into-new", help="Restore into this new database on ENV's server; ENV is untouched."
        ),
    ] = None,
    yes: YesOpt = False,
    override_blackout: Annotated[
        bool,
        typer.Option(
            "--override-blackout", help="Proceed inside a blackout window (needs --reason)."
        ),
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why the blackout is overridden (journaled).")
    ] = None,
    jobs: JobsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Restore backup ID into ENV: verified first, emergency backup first, all or nothing."""
    st = state(ctx, json_)
    names = [t.strip() for t in (tables or "").split(",") if t.strip()]
    opts = cmd.RestoreOptions(
        backup_id, env, from_env, names, into_new, yes, override_blackout, reason, jobs
    )
    with common.sigterm_interrupts():
        res = cmd.restore(st.config(), opts, progress=st.notices(), confirm=st.confirm())
    info = res.backup

    def render(out: Console) -> None:
        n = len(info.manifest.tables) if info.manifest else 0
        what = ", ".join(res.tables) if res.tables else f"all {n} tables"
        where = (
            f"new database {res.database} on {env}'s server"
            if into_new
            else f"{env} (database {res.database})"
        )
        _say(
            out,
            f"restored backup {info.id} of {info.env} ({what}) into {where} in {res.seconds:.1f}s",
        )
        if res.emergency_id:
            _say(
                out,
                f"emergency backup of {env} before the restore: {res.emergency_id} at "
                f"{res.emergency_path} (kept; undo with `pgferry backup restore "
                f"{res.emergency_id} --env {env}`)",
            )
        else:
            _say(out, f"{env}'s own database was not touched")
        for w in res.warnings:
            _say(out, f"warning: {w}")

    st.emit(res.to_dict(), render)


@app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    env: EnvReq,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would go; delete nothing.")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Delete the backups [backup.keep] no longer keeps (never a kept or the newest verified)."""
    st = state(ctx, json_)
    res = cmd.prune(st.config(), env, dry_run=dry_run)

    def render(out: Console) -> None:
        verb = "would delete" if dry_run else "deleted"
        for b in res.deleted:
            _say(out, f"{verb} {b}")
        for b in res.interrupted:
            _say(out, f"{verb} {b} (interrupted)")
        for b in res.kept:
            _say(out, f"kept {b}: {', '.join(res.reasons.get(b, []))}")
        _say(
            out,
            f"{env}: {len(res.kept)} kept, {len(res.deleted)} {verb}"
            + (" (dry run)" if dry_run else ""),
        )

    st.emit(res.to_dict(), render)


def register(root: typer.Typer) -> None:
    """Add ``pgferry backup ...`` to ``root``."""
    root.add_typer(app, name="backup")

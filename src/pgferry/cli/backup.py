"""``pgferry backup create|list|verify|restore|prune``: thin wrappers over :mod:`pgferry.backup`.

Contract: each verb parses its arguments, checks policy that needs a person
(a protected environment needs ``--yes`` before a restore), calls one service
function and renders its result (one JSON object under ``--json``). Exit
codes: 0 done; 1 a verify problem (or a damaged backup a restore refused);
2 bad input (unknown backup, no pg_dump new enough, wrong key); 3 the
operation failed (unwritable backup dir, pg_dump/pg_restore failed: the target
is as it was); 4 refused (protected without ``--yes``, blackout window).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pgferry.cli import common
from pgferry.cli.common import JsonOpt, State, YesOpt, state

if TYPE_CHECKING:
    from pgferry.config import Config
    from pgferry.pg.connect import Target

app = typer.Typer(help="Backups you can restore: checksummed, retained, test-restored.",
                  no_args_is_help=True)

EnvReq = Annotated[str, typer.Option("--env", "-e", help="Environment name from pgferry.toml.")]
EnvOptional = Annotated[str | None, typer.Option(
    "--env", "-e", help="Environment whose backups to use (needed for `latest`).")]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="A backup id, or `latest`.")]
JobsOpt = Annotated[int | None, typer.Option(
    "--jobs", "-j", min=1, max=64, help="Parallel pg_dump/pg_restore jobs ([backup] jobs).")]


def _begin(ctx: typer.Context, json_: bool, env: str) -> tuple[State, Config, Target]:
    st = state(ctx, json_)
    return st, st.config(), st.target(env)


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
    from pgferry.backup import create

    st, cfg, target = _begin(ctx, json_, env)
    with common.sigterm_interrupts():
        res = create.create(cfg, target, tag=tag, keep=keep, jobs=jobs, note=st.note)
    m = res.manifest

    def render(out: Console) -> None:
        rows = sum(m.tables.values())
        _say(out, f"backup {m.id} of {env} ({m.database}): {len(m.tables)} tables, {rows:,} "
             f"rows, {len(m.files)} files, {size_text(m.size_bytes)}"
             f"{', encrypted' if m.encryption else ''} in {res.seconds:.1f}s")
        _say(out, f"at {res.path}")
        _say(out, f"pg_dump {m.pg_dump_version} ({m.compression}) of PostgreSQL "
             f"{m.server_version}; check it with `pgferry backup verify {m.id} --restore-test`")

    st.emit(res.to_dict(), render)


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    env: EnvReq,
    all_: Annotated[bool, typer.Option("--all", help="Also list interrupted backups.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List ENV's backups: when, size, tables, state, retention slot; and their freshness."""
    from pgferry.backup import service

    st = state(ctx, json_)
    cfg = st.config()
    cfg.env(env)
    res = service.listing(cfg, env, datetime.now(UTC), include_incomplete=all_)

    def render(out: Console) -> None:
        t = Table(title=Text(f"backups of {env} in {cfg.backup_dir / env}"))
        for h in ("id", "finished (UTC)", "size", "tables", "rows", "state", "slot", "tag"):
            t.add_column(h, justify="right" if h in ("size", "tables", "rows") else "left",
                         no_wrap=h in ("id", "finished (UTC)", "size"))
        for b in res.backups:
            when = (b["finished_at"] or "")[:19].replace("T", " ")
            flags = f" ({', '.join(b['flags'])})" if b["flags"] else ""
            v = b["verification"]
            at = v["restore_tested_at"] if b["state"] == "restore-tested" else v["verified_at"]
            stamp = f" {at[:16].replace('T', ' ')}" if at and b["state"] in (
                "verified", "restore-tested") else ""
            t.add_row(*(Text(str(x)) for x in (
                b["id"], when, size_text(b["size_bytes"]) if b["complete"] else "-",
                b["tables"], f"{b['rows']:,}", b["state"] + stamp + flags,
                ", ".join(b["slots"]) or "-", b["tag"] or "")))
        out.print(t)
        f = res.freshness
        _say(out, f"newest complete: {age_text(f['newest_complete_age_s'])} old; newest "
             f"restore-tested: {age_text(f['newest_restore_tested_age_s'])} old; max_age "
             f"{cfg.backup.max_age}" + (" (STALE)" if f["stale"] else ""))
        if f["too_small"]:
            _say(out, f"warning: the newest backup is smaller than [backup] min_size "
                 f"({size_text(f['min_size_bytes'])})")

    st.emit(res.to_dict(), render)


@app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    backup_id: IdArg,
    env: EnvOptional = None,
    restore_test: Annotated[bool, typer.Option(
        "--restore-test", help="Also restore into a scratch database and compare row counts."
    )] = False,
    jobs: JobsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Re-hash every file against the manifest and read the archive; exit 1 on any mismatch."""
    from pgferry import journal
    from pgferry.backup import catalog, verify

    st = state(ctx, json_)
    cfg = st.config()
    info = catalog.find(cfg.backup_dir, backup_id, env)
    target = st.target(info.env) if restore_test else None
    args = {"id": info.id, "restore_test": restore_test}
    if target is not None:
        with common.sigterm_interrupts(), journal.operation(target, "backup verify", args,
                                                     create=False) as op:
            res = verify.verify(cfg, info, restore=True, target=target, jobs=jobs)
            op.details.update(res.to_dict())
            if not res.ok:
                op.outcome, op.exit_code = "problem", 1
    else:
        res = verify.verify(cfg, info, jobs=jobs)

    def render(out: Console) -> None:
        for p in res.problems:
            _say(out, f"problem: {p}")
        what = f"{res.files_checked} files re-hashed, table of contents read"
        if res.restore_test:
            what += f", restore test: {res.tables_compared} tables' row counts compared"
        verdict = "ok" if res.ok else "FAILED"
        _say(out, f"backup {info.id} of {info.env}: {verdict} ({what}) in {res.seconds:.1f}s")

    st.emit(res.to_dict(), render)
    if not res.ok:
        raise typer.Exit(1)


@app.command("restore")
def restore_cmd(
    ctx: typer.Context,
    backup_id: IdArg,
    env: EnvReq,
    from_env: Annotated[str | None, typer.Option(
        "--from", help="Whose backups ID is among (default: found by id; --env for latest).")
    ] = None,
    tables: Annotated[str | None, typer.Option(
        "--tables", "-t", help="Comma-separated schema.table list: restore only their rows.")
    ] = None,
    into_new: Annotated[str | None, typer.Option(
        "--into-new", help="Restore into this new database on ENV's server; ENV is untouched.")
    ] = None,
    yes: YesOpt = False,
    override_blackout: Annotated[bool, typer.Option(
        "--override-blackout", help="Proceed inside a blackout window (needs --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="Why the blackout is overridden (journaled).")] = None,
    jobs: JobsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Restore backup ID into ENV: verified first, emergency backup first, all or nothing."""
    from pgferry.backup import catalog, restore

    st, cfg, target = _begin(ctx, json_, env)
    info = catalog.find(cfg.backup_dir, backup_id, from_env or (env if backup_id == "latest"
                                                                else None))
    names = [t.strip() for t in (tables or "").split(",") if t.strip()]
    if not into_new:
        what = f"restore backup {info.id} into {env}" + (f" ({', '.join(names)})" if names
                                                          else "")
        common.confirm_protected(st, target, yes, what)
    with common.sigterm_interrupts():
        res = restore.restore(cfg, target, info, now=datetime.now(UTC), tables=names,
                              into_new=into_new, override_blackout=override_blackout,
                              reason=reason, jobs=jobs, note=st.note)

    def render(out: Console) -> None:
        n = len(info.manifest.tables) if info.manifest else 0
        what = ", ".join(res.tables) if res.tables else f"all {n} tables"
        where = (f"new database {res.database} on {env}'s server" if into_new
                 else f"{env} (database {res.database})")
        _say(out, f"restored backup {info.id} of {info.env} ({what}) into {where} in "
             f"{res.seconds:.1f}s")
        if res.emergency_id:
            _say(out, f"emergency backup of {env} before the restore: {res.emergency_id} at "
                 f"{res.emergency_path} (kept; undo with `pgferry backup restore "
                 f"{res.emergency_id} --env {env}`)")
        else:
            _say(out, f"{env}'s own database was not touched")

    st.emit(res.to_dict(), render)


@app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    env: EnvReq,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; delete nothing."
                                          )] = False,
    json_: JsonOpt = False,
) -> None:
    """Delete the backups [backup.keep] no longer keeps (never a kept or the newest verified)."""
    from pgferry.backup import service

    st, cfg, target = _begin(ctx, json_, env)
    res = service.prune(cfg, target, datetime.now(UTC), dry_run=dry_run)

    def render(out: Console) -> None:
        verb = "would delete" if dry_run else "deleted"
        for b in res.deleted:
            _say(out, f"{verb} {b}")
        for b in res.interrupted:
            _say(out, f"{verb} {b} (interrupted)")
        for b in res.kept:
            _say(out, f"kept {b}: {', '.join(res.reasons.get(b, []))}")
        _say(out, f"{env}: {len(res.kept)} kept, {len(res.deleted)} {verb}"
             + (" (dry run)" if dry_run else ""))

    st.emit(res.to_dict(), render)


def register(root: typer.Typer) -> None:
    """Add ``pgferry backup ...`` to ``root``."""
    root.add_typer(app, name="backup")

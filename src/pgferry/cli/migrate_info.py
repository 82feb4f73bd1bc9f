"""``pgferry migrate new|number|sum|status|validate|baseline|repair``.

See :mod:`pgferry.cli.migrate` for how the verbs are split between modules.

Thin: parse arguments, apply policy (protected env, ``--yes``, blackout), call
:mod:`pgferry.migrate.templates`, :mod:`pgferry.migrate.status` and
:mod:`pgferry.migrate.admin`, journal the writes, render the result.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pgferry import journal
from pgferry.cli.common import (
    EnvOpt,
    JsonOpt,
    State,
    YesOpt,
    confirm_protected,
    pick_env,
    refuse,
    state,
)
from pgferry.config import Blackout, Config
from pgferry.errors import Refused
from pgferry.migrate import admin, files, templates
from pgferry.migrate import status as status_mod
from pgferry.migrate.history import BASELINE_SCRIPT
from pgferry.migrate.windows import describe
from pgferry.pg.connect import Target
from pgferry.policy import blackout_guard

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


def confirm_rewrite(st: State, target: Target, yes: bool, action: str) -> None:
    """History rewrites always need --yes (refused and journaled without); a bare terminal is
    asked instead."""
    if yes:
        return
    env = target.name
    if not st.json and sys.stdin.isatty() and sys.stderr.isatty():
        if typer.confirm(f"{action} in {env}?", default=False, err=True):
            return
    raise refuse(st, target, Refused(
        f"{action} rewrites the migration history of {env!r}: run again with --yes", env=env
    ))


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
        label = e.state.replace("_", " ")
        if e.state == "held":
            label = "held (contract, ready)" if s.ready(e) else "held (contract)"
        where = s.failed_at(e)
        if where is not None:
            label += (
                f" (statement {where['statement']} of {where['statements_total']})"
                if where.get("statement")
                else f" ({where.get('statements_done')} of {where.get('statements_total')} done)"
            )
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
    for e in entries:
        reason = s.held_reason(e) if e.state == "held" else None
        if reason is not None:
            out.print(f"[magenta]held[/]     {escape(e.script or e.description)}: "
                      f"{escape(reason)}")
    for w in status_mod.warnings(s):
        out.print(f"[yellow]warning[/]  {escape(w)}")
    for p in status_mod.problems(s):
        out.print(f"[red]problem[/]  {escape(p)}")


def _expand_contract(st: State, cfg: Config, description: str, table: str | None,
                     env: str | None) -> list[Any]:
    """The recipe's five files, from the catalog of ``env`` (see :mod:`pgferry.migrate.recipes`)."""
    import psycopg

    from pgferry.migrate import recipe_sql, recipes
    from pgferry.pg.connect import connect, map_db_error

    spec = recipes.parse(description, table)
    if not cfg.migrations_dir.is_dir():
        from pgferry.errors import BadInput

        raise BadInput(f"migrations directory {cfg.migrations_dir} does not exist; run "
                       "`pgferry init`")
    target = st.target(env)
    try:
        with connect(target.dsn, autocommit=True) as c:
            facts = recipes.read_facts(c, spec)
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot read the catalog of {target.name}") from None
    slug = recipes.slug_of(spec)
    rendered = recipe_sql.files_for(spec, facts, slug, date.today().isoformat())
    written = recipes.write(cfg.migrations_dir, cfg.backfills_dir, rendered)
    files.write_sum(files.scan(cfg.migrations_dir))
    return written


def _guarded(ctx: typer.Context, json_: bool, env: str | None, override: bool,
             reason: str | None) -> tuple[State, Config, str, Blackout | None, Target]:
    """What baseline and repair start with: the env, past the blackout check, resolved."""
    st = state(ctx, json_)
    cfg = st.config()
    name = pick_env(cfg, env)
    target = st.target(name)
    window = blackout_guard(cfg, target, st.command, override=override, reason=reason,
                            now=datetime.now(UTC))
    return st, cfg, name, window, target


def register(app: typer.Typer) -> None:
    """Add this module's verbs to the ``migrate`` app."""

    @app.command("new")
    def new_cmd(
        ctx: typer.Context,
        description: Annotated[str, typer.Argument(help="What the migration does.")],
        undo: Annotated[bool, typer.Option("--undo", help="Also create UXXX__<desc>.sql.")] = False,
        expand_contract: Annotated[bool, typer.Option(
            "--expand-contract", help="Scaffold a zero-downtime change from a recipe: rename "
            "T.C to N; change type of T.C to TYPE; add not null to T.C default V; split T into "
            "N (C, ...).")] = False,
        table: Annotated[str | None, typer.Option(
            "--table", help="With --expand-contract: the table, when the description names "
            "only a column.")] = None,
        env: EnvOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Create a template VXXX__<desc>.sql (numbered later by `migrate number`)."""
        st = state(ctx, json_)
        cfg = st.config()
        if expand_contract:
            written = _expand_contract(st, cfg, description, table, env)
        else:
            written = templates.new(
                cfg.migrations_dir, description, undo=undo, today=date.today().isoformat()
            )
        rel = [
            str(p.relative_to(cfg.root)) if p.is_relative_to(cfg.root) else str(p) for p in written
        ]

        def render(out: Console) -> None:
            for p in rel:
                out.print(f"created {p}")
            out.print(f"rewrote {cfg.migrate.dir}/{files.SUM_FILE}")

        st.emit(
            {"ok": True, "created": rel, "sum": str(cfg.migrations_dir / files.SUM_FILE)}, render
        )

    @app.command("number")
    def number_cmd(
        ctx: typer.Context,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, rename nothing.")] = False,
        json_: JsonOpt = False,
    ) -> None:
        """Give every VXXX/UXXX template the next free version and rename the files."""
        st = state(ctx, json_)
        cfg = st.config()
        ms = files.scan(cfg.migrations_dir)
        if not ms.templates:
            st.emit(
                {"ok": True, "renames": [], "environments": [], "dry_run": dry_run},
                lambda out: out.print("no templates to number"),
            )
            return
        envs = templates.env_versions(cfg, ms)
        for e in envs:
            if e.error:
                st.note(f"warning: {e.env} not reachable, its versions are not counted: {e.error}")
        applied = [e.version for e in envs if e.version is not None]
        renames = templates.plan_numbering(
            ms, max(applied, default=None), templates.merged_keep(envs)
        )
        if not dry_run:
            templates.apply_renames(ms, renames)
        orphans = templates.orphan_undo_templates(ms)
        for o in orphans:
            st.note(f"warning: {o} has no VXXX file of the same description; left as it is")

        def render(out: Console) -> None:
            seen = ", ".join(f"{e.env} {e.version or 'empty'}" for e in envs if not e.error)
            out.print(f"highest file: {ms.highest or 'none'}; applied: {seen or 'unknown'}")
            verb = "would rename" if dry_run else "renamed"
            for r in renames:
                out.print(f"{verb} {r.old.name} → {r.new.name}")
            if not dry_run:
                out.print(f"rewrote {cfg.migrate.dir}/{files.SUM_FILE}")

        st.emit(
            {
                "ok": True,
                "dry_run": dry_run,
                "renames": [r.to_dict() for r in renames],
                "environments": [e.to_dict() for e in envs],
                "orphan_undo": orphans,
            },
            render,
        )

    @app.command("sum")
    def sum_cmd(ctx: typer.Context, json_: JsonOpt = False) -> None:
        """Rewrite migrations/pgferry.sum from the files on disk."""
        st = state(ctx, json_)
        cfg = st.config()
        ms = files.scan(cfg.migrations_dir)
        before = files.sum_state(ms)
        path = files.write_sum(ms)
        total = path.read_text(encoding="utf-8").splitlines()[0]
        n = len(path.read_text(encoding="utf-8").splitlines()) - 1
        st.emit(
            {"ok": True, "path": str(path), "was": before, "files": n, "total": total},
            lambda out: out.print(f"wrote {path} ({n} files, was {before}): {total}"),
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
        cfg = st.config()
        name = pick_env(cfg, env)
        s = status_mod.collect(cfg, st.target(name))
        st.emit(s.to_dict(), lambda out: _render_status(s, out, show_all))

    @app.command("validate")
    def validate_cmd(ctx: typer.Context, env: EnvOpt = None, json_: JsonOpt = False) -> None:
        """Exit 1 when an applied file changed or is gone, a run failed, or the sum is stale."""
        st = state(ctx, json_)
        cfg = st.config()
        name = pick_env(cfg, env)
        s = status_mod.collect(cfg, st.target(name))
        problems = status_mod.problems(s)
        warns = status_mod.warnings(s)

        def render(out: Console) -> None:
            for w in warns:
                out.print(f"[yellow]warning[/]  {escape(w)}")
            for p in problems:
                out.print(f"[red]problem[/]  {escape(p)}")
            if problems:
                out.print(f"{name}: {len(problems)} problem(s)")
            else:
                n = sum(1 for e in s.entries if e.state == "applied")
                out.print(
                    f"{name}: ok — {n} applied migration(s) match their files, "
                    f"current version {s.current or 'none'}, {files.SUM_FILE} {s.sum_state}"
                )

        st.emit(
            {
                "ok": not problems,
                "env": name,
                "current_version": s.current,
                "sum": s.sum_state,
                "problems": problems,
                "warnings": warns,
            },
            render,
        )
        if problems:
            raise typer.Exit(1)

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
        st, cfg, name, window, target = _guarded(ctx, json_, env, override_blackout, reason)
        confirm_protected(st, target, yes, f"baseline {name} at version {version}")
        args: dict[str, Any] = {"version": version, "description": description, "yes": yes}
        with journal.operation(target, "migrate baseline", args) as op:
            if window is not None:
                op.details["blackout_override"] = {"reason": reason, "window": describe(window)}
            res = admin.baseline(cfg, target, version, description)
            op.details.update(res.to_dict())
        st.emit(
            {"ok": True, **res.to_dict()},
            lambda out: out.print(
                f"{name}: baselined at version {res.version} ({res.description}); "
                f"files at or below it will not run here"
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
        st, cfg, name, window, target = _guarded(ctx, json_, env, override_blackout, reason)
        plan = admin.read_plan(cfg, target)
        if plan.empty:
            st.emit(
                {"ok": True, **plan.to_dict(), "changed": False},
                lambda out: out.print(f"{name}: nothing to repair"),
            )
            return
        if not st.json and not yes:
            for r in plan.remove:
                st.note(f"will remove failed row {r.installed_rank}: {r.version or ''} {r.script}")
            for a in plan.realign:
                st.note(
                    f"will realign {a.version} {a.script}: checksum {a.old_checksum} → "
                    f"{a.new_checksum}"
                )
            for c in plan.convert:
                st.note(f"will convert UNDO_SQL row {c.installed_rank} ({c.script}) into the "
                        f"DELETE row Flyway reads for {c.version} {c.becomes}")
        if target.protected:
            confirm_protected(st, target, yes, f"repair the migration history of {name}")
        else:
            confirm_rewrite(st, target, yes, "repair")
        with journal.operation(target, "migrate repair", {"yes": yes}) as op:
            if window is not None:
                op.details["blackout_override"] = {"reason": reason, "window": describe(window)}
            done = admin.repair(cfg, target)
            op.details.update(done.to_dict())

        def render(out: Console) -> None:
            for r in done.remove:
                out.print(f"removed failed row {r.installed_rank}: {r.version or ''} {r.script}")
            for a in done.realign:
                out.print(
                    f"realigned {a.version} {a.script}: checksum {a.old_checksum} → "
                    f"{a.new_checksum}"
                )
            for c in done.convert:
                out.print(f"converted UNDO_SQL row {c.installed_rank} ({c.script}) into the "
                          f"DELETE row Flyway reads for {c.version} {c.becomes}")
            out.print(
                f"{name}: repaired ({len(done.remove)} removed, {len(done.realign)} realigned"
                + (f", {len(done.convert)} converted" if done.convert else "") + ")"
            )

        st.emit({"ok": True, **done.to_dict(), "changed": not done.empty}, render)

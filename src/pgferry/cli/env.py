"""``pgferry env check|template``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from pgferry import envcheck
from pgferry.cli.common import JsonOpt, state
from pgferry.errors import ProblemFound

app = typer.Typer(help="Check environments and their variables.", no_args_is_help=True)


@app.command("check")
def check(
    ctx: typer.Context,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Check only this one.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Every variable set, no placeholders, URLs parse, TLS for protected envs, server answers."""
    st = state(ctx, json_)
    reports = envcheck.check(st.config(), env)
    problems = [p for r in reports for p in r.problems]

    def render(out: Console) -> None:
        for r in reports:
            if r.ok:
                privs = ", ".join(k for k, v in r.privileges.items() if v) or "none"
                out.print(
                    f"ok  {r.env}{' (protected)' if r.protected else ''}: {r.dsn} — "
                    f"PostgreSQL {r.server_version}, role {r.role}, privileges: {privs}"
                )
        for p in problems:
            out.print(f"problem  {p}")

    st.emit({"ok": not problems, "environments": [envcheck.report_dict(r) for r in reports]},
            render)
    if problems:
        raise typer.Exit(ProblemFound.exit_code)


@app.command("template")
def template(
    ctx: typer.Context,
    output: Annotated[str, typer.Option("--output", "-o", help="File to write.")] = ".env.template",
    json_: JsonOpt = False,
) -> None:
    """Write .env.template listing every variable the config uses."""
    st = state(ctx, json_)
    cfg = st.config()
    text = envcheck.template(cfg)
    path = cfg.root / output
    path.write_text(text, encoding="utf-8")
    names = sorted({v for v, _, _ in cfg.variables()})
    st.emit({"ok": True, "path": str(path), "variables": names},
            lambda out: out.print(f"wrote {path} ({len(names)} variables: {', '.join(names)})"))


def register(root: typer.Typer) -> None:
    """Add ``pgferry env ...`` to ``root``."""
    root.add_typer(app, name="env")

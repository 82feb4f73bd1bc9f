"""``pgferry env check|template``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from pgferry.cli.common import JsonOpt, state
from pgferry.commands import env as cmd

app = typer.Typer(help="Check environments and their variables.", no_args_is_help=True)


@app.command("check")
def check(
    ctx: typer.Context,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Check only this one.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Every variable set, no placeholders, URLs parse, TLS for protected envs, server answers."""
    st = state(ctx, json_)
    res = cmd.check(st.config(), env)

    def render(out: Console) -> None:
        for r in res.reports:
            if r.ok:
                privs = ", ".join(k for k, v in r.privileges.items() if v) or "none"
                out.print(
                    f"ok  {r.env}{' (protected)' if r.protected else ''}: {r.dsn} — "
                    f"PostgreSQL {r.server_version}, role {r.role}, privileges: {privs}"
                )
        for p in res.problems:
            out.print(f"problem  {p}")

    st.emit(res.to_dict(), render)
    if res.exit_code:
        raise typer.Exit(res.exit_code)


@app.command("template")
def template(
    ctx: typer.Context,
    output: Annotated[str, typer.Option("--output", "-o", help="File to write.")] = ".env.template",
    json_: JsonOpt = False,
) -> None:
    """Write .env.template listing every variable the config uses."""
    st = state(ctx, json_)
    res = cmd.template(st.config(), output)
    st.emit(
        res.to_dict(),
        lambda out: out.print(
            f"wrote {res.path} ({len(res.variables)} variables: {', '.join(res.variables)})"
        ),
    )


def register(root: typer.Typer) -> None:
    """Add ``pgferry env ...`` to ``root``."""
    root.add_typer(app, name="env")

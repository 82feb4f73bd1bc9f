"""``pgferry init`` and ``pgferry embedded status|stop|psql|url`` (``pgferry demo``:
:func:`pgferry.demo.register`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pgferry.cli.common import EnvOpt, JsonOpt, state
from pgferry.commands import project as cmd


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        ctx: typer.Context,
        directory: Annotated[Path, typer.Argument(help="Project directory.")] = Path("."),
        force: Annotated[bool, typer.Option("--force", help="Overwrite pgferry.toml.")] = False,
        json_: JsonOpt = False,
    ) -> None:
        """Scaffold pgferry.toml, migrations/, .env.template and .gitignore entries."""
        st = state(ctx, json_)
        res = cmd.init(directory, force=force)

        def render(out: Console) -> None:
            for w in res.written:
                out.print(f"wrote {w}")
            out.print('next: pgferry env check && pgferry migrate new "create users"')

        st.emit(res.to_dict(), render)

    embedded_app = typer.Typer(
        help="The embedded PostgreSQL server under .pgferry/.", no_args_is_help=True
    )
    app.add_typer(embedded_app, name="embedded")

    @embedded_app.command("status")
    def status(ctx: typer.Context, json_: JsonOpt = False) -> None:
        """Is the embedded server running, and where is its data?"""
        st = state(ctx, json_)
        res = cmd.embedded_status(st.config(required=False))

        def render(out: Console) -> None:
            out.print(
                f"embedded server {'running' if res.running else 'stopped'}: {res.dir}"
                f" (stops after {res.idle_stop} without a client; [embedded] idle_stop)"
            )

        st.emit(res.to_dict(), render)

    @embedded_app.command("stop")
    def stop(ctx: typer.Context, json_: JsonOpt = False) -> None:
        """Stop the embedded server (it starts again on the next command that needs it)."""
        st = state(ctx, json_)
        res = cmd.embedded_stop(st.config(required=False))
        st.emit(
            res.to_dict(), lambda out: out.print("stopped" if res.stopped else "was not running")
        )

    @embedded_app.command("url")
    def url_cmd(ctx: typer.Context, env: EnvOpt = None, json_: JsonOpt = False) -> None:
        """Print the URL of an environment on the embedded server (starts it if needed)."""
        st = state(ctx, json_)
        res = cmd.embedded_url(st.config(), env)
        st.emit(res.to_dict(), lambda out: out.print(res.url, markup=False))

    @embedded_app.command(
        "psql", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )
    def psql_cmd(ctx: typer.Context, env: EnvOpt = None) -> None:
        """Open the embedded server's own psql on an environment; more arguments go to psql."""
        import subprocess

        from pgferry.pg import embedded

        st = state(ctx)
        t = cmd.embedded_target(st.config(), env)
        rc = subprocess.call([str(embedded.psql()), *ctx.args, embedded.url(t.dsn)])
        raise typer.Exit(rc)

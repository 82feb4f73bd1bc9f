"""``pgferry init``, ``pgferry demo`` and ``pgferry embedded status|stop|psql|url``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pgferry import scaffold
from pgferry.cli.common import EnvOpt, JsonOpt, State, state
from pgferry.config import load_config
from pgferry.errors import BadInput
from pgferry.pg import embedded
from pgferry.pg.connect import Target


def _embedded_target(st: State, env: str | None) -> Target:
    """An environment on the embedded server (started if needed), else BadInput."""
    t = st.target(env)
    if not t.embedded:
        raise BadInput(f"environment {t.name!r} has a url, it is not on the embedded server; "
                       "use your own psql with that URL")
    return t


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
        written = scaffold.init(directory, force=force)

        def render(out: Console) -> None:
            for w in written:
                out.print(f"wrote {w}")
            out.print('next: pgferry env check && pgferry migrate new "create users"')

        st.emit({"ok": True, "directory": str(directory.resolve()), "written": written}, render)

    @app.command("demo")
    def demo(
        ctx: typer.Context,
        directory: Annotated[
            Path, typer.Option("--dir", help="Where to build the demo project.")
        ] = Path(".pgferry/demo"),
        json_: JsonOpt = False,
    ) -> None:
        """Run the whole story end to end on the embedded server."""
        from pgferry import demo as demo_mod

        st = state(ctx, json_)
        result = demo_mod.run(directory, st)
        st.emit({"ok": True, **result}, lambda out: out.print("[bold green]demo finished[/]"))

    embedded_app = typer.Typer(help="The embedded PostgreSQL server under .pgferry/.",
                               no_args_is_help=True)
    app.add_typer(embedded_app, name="embedded")

    @embedded_app.command("status")
    def status(ctx: typer.Context, json_: JsonOpt = False) -> None:
        """Is the embedded server running, and where is its data?"""
        st = state(ctx, json_)
        cfg = load_config(st.config_path, required=False)
        running = embedded.is_running(cfg.embedded_dir)
        idle = cfg.embedded.idle_stop

        def render(out: Console) -> None:
            out.print(f"embedded server {'running' if running else 'stopped'}: {cfg.embedded_dir}"
                      f" (stops after {idle} without a client; [embedded] idle_stop)")

        st.emit({"ok": True, "running": running, "dir": str(cfg.embedded_dir),
                 "idle_stop": idle}, render)

    @embedded_app.command("stop")
    def stop(ctx: typer.Context, json_: JsonOpt = False) -> None:
        """Stop the embedded server (it starts again on the next command that needs it)."""
        st = state(ctx, json_)
        cfg = load_config(st.config_path, required=False)
        stopped = embedded.stop(cfg.embedded_dir)
        st.emit({"ok": True, "stopped": stopped},
                lambda out: out.print("stopped" if stopped else "was not running"))

    @embedded_app.command("url")
    def url_cmd(ctx: typer.Context, env: EnvOpt = None, json_: JsonOpt = False) -> None:
        """Print the URL of an environment on the embedded server (starts it if needed)."""
        st = state(ctx, json_)
        t = _embedded_target(st, env)
        u = embedded.url(t.dsn)
        st.emit({"ok": True, "env": t.name, "url": u}, lambda out: out.print(u, markup=False))

    @embedded_app.command(
        "psql", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def psql_cmd(ctx: typer.Context, env: EnvOpt = None) -> None:
        """Open the embedded server's own psql on an environment; more arguments go to psql."""
        import subprocess

        st = state(ctx)
        t = _embedded_target(st, env)
        rc = subprocess.call([str(embedded.psql()), *ctx.args, embedded.url(t.dsn)])
        raise typer.Exit(rc)

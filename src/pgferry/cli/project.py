"""``pgferry init``, ``pgferry demo`` and ``pgferry embedded status|stop``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pgferry import scaffold
from pgferry.cli.common import JsonOpt, state
from pgferry.config import load_config
from pgferry.pg import embedded


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

        def render(out: Console) -> None:
            out.print(f"embedded server {'running' if running else 'stopped'}: {cfg.embedded_dir}")

        st.emit({"ok": True, "running": running, "dir": str(cfg.embedded_dir)}, render)

    @embedded_app.command("stop")
    def stop(ctx: typer.Context, json_: JsonOpt = False) -> None:
        """Stop the embedded server (it starts again on the next command that needs it)."""
        st = state(ctx, json_)
        cfg = load_config(st.config_path, required=False)
        stopped = embedded.stop(cfg.embedded_dir)
        st.emit({"ok": True, "stopped": stopped},
                lambda out: out.print("stopped" if stopped else "was not running"))

"""The ``pgferry`` command: global options, sub-commands, and error-to-exit-code mapping."""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from pgferry import __version__
from pgferry.cli.common import State, dumps
from pgferry.errors import PgferryError
from pgferry.redaction import redact, redact_tree  # only re: cheap enough for every start

#: the root app's settings, also given to each lazily built sub-app (which would otherwise
#: inherit them from the root)
_SETTINGS: dict[str, Any] = {
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
}

# Sub-command -> the module whose ``register(app)`` defines it. A command's module
# (and what it imports: psycopg, pydantic, pglast ...) is imported only when that
# command runs, so ``pgferry lint`` never pays for psycopg, nor ``sync`` for pglast.
COMMANDS: dict[str, str] = {  # in the order --help lists them: the story's order
    "init": "pgferry.cli.project",
    "demo": "pgferry.demo",  # the story drives the command line: it sits above it
    "env": "pgferry.cli.env",
    "migrate": "pgferry.cli.migrate",
    "backfill": "pgferry.cli.backfill",
    "lint": "pgferry.cli.lint",
    "sync": "pgferry.cli.sync",
    "verify": "pgferry.cli.sync",
    "health": "pgferry.cli.health",
    "backup": "pgferry.cli.backup",
    "journal": "pgferry.cli.journal",
    "embedded": "pgferry.cli.project",
    "serve": "pgferry.cli.service",
    "worker": "pgferry.cli.service",
    "release": "pgferry.cli.service",
    "token": "pgferry.cli.service",
}


class LazyGroup(TyperGroup):
    """The root group: lists every command, imports a command's module on first use."""

    _loaded: dict[str, Any] = {}

    def list_commands(self, ctx: Any) -> list[str]:  # noqa: ARG002 - click's signature
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        if module not in self._loaded:
            sub = typer.Typer(**_SETTINGS)
            importlib.import_module(module).register(sub)
            self._loaded[module] = typer.main.get_group(sub)
        return self._loaded[module].get_command(ctx, cmd_name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # `pgferry sync revert RUN_ID`: sync takes SOURCE TARGET, so revert is not a
        # sub-command of a group; it is resolved here, before sync would read "revert" as
        # its SOURCE (an environment cannot be called "revert", see config/loading.py)
        if len(args) >= 2 and args[0] == "sync" and args[1] == "revert":
            return "sync revert", self.revert_command(), args[2:]
        return super().resolve_command(ctx, args)

    def revert_command(self) -> Any:
        key = "pgferry.cli.sync:revert"
        if key not in self._loaded:
            sub = typer.Typer(**_SETTINGS)
            importlib.import_module("pgferry.cli.sync").register_revert(sub)
            self._loaded[key] = typer.main.get_group(sub)
        return self._loaded[key].get_command(None, "revert")

    @property
    def all_commands(self) -> dict[str, Any]:
        """Every command, imported (for docs and tests)."""
        return {name: self.get_command(None, name) for name in COMMANDS}


app = typer.Typer(
    cls=LazyGroup,
    name="pgferry",
    help="Move schema and data between PostgreSQL environments, without downtime, and prove it.",
    no_args_is_help=True,
    **_SETTINGS,
)


def _version(value: bool) -> None:
    if value:
        print(f"pgferry {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", envvar="PGFERRY_CONFIG", help="Path to pgferry.toml."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[  # noqa: ARG001 - eager: its callback prints the version and exits
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    ctx.obj = State(config_path=config, json=json_, debug=debug)


#: the root's options, accepted before and after the command name
GLOBAL_FLAGS = ("--json", "--debug")
GLOBAL_VALUES = ("--config",)


def _takes_value(cmd: Any, token: str) -> bool:
    """True when ``token`` is an option of ``cmd`` that takes the next argument as its value."""
    for p in getattr(cmd, "params", ()):
        if token in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ())):
            return not getattr(p, "is_flag", False) and not getattr(p, "count", False)
    return False


def hoist_globals(args: list[str]) -> list[str]:
    """``args`` with ``--config PATH``, ``--debug`` and ``--json`` written after the command
    name moved before it, where the root parses them: one grammar for every command.

    The command's own options are respected (an option's value is never taken for a global
    option); after ``--``, and for pass-through commands (``embedded psql``), nothing moves.
    """
    front: list[str] = []
    rest: list[str] = []
    cmd: Any = typer.main.get_command(app)
    i = 0
    while i < len(args):
        a = args[i]
        name = a.split("=", 1)[0]
        if a == "--":
            rest += args[i:]
            break
        if name in GLOBAL_VALUES:
            take = 1 if "=" in a else 2
            front += args[i : i + take]
            i += take
            continue
        if a in GLOBAL_FLAGS and (
            cmd is None
            or getattr(cmd, "commands", None) is not None
            or not any(a in p.opts for p in cmd.params)
        ):
            front.append(a)
            i += 1
            continue
        if a == "-c" and not rest:  # the root's short --config, before the command only
            front += args[i : i + 2]
            i += 2
            continue
        rest.append(a)
        if a.startswith("-"):
            if cmd is not None and "=" not in a and _takes_value(cmd, a) and i + 1 < len(args):
                rest.append(args[i + 1])
                i += 1
        elif cmd is not None and hasattr(cmd, "get_command"):
            cmd = cmd.get_command(None, a)  # a sub-command (None: unknown, click says so)
            if cmd is not None and (getattr(cmd, "context_settings", None) or {}).get(
                "ignore_unknown_options"
            ):
                rest += args[i + 1 :]  # a pass-through command: the rest is its own
                break
        i += 1
    return front + rest


def _failed(e: PgferryError, want_json: bool, debug: bool) -> int:
    """One line on stderr (and the error as the one JSON object under --json); its code."""
    if debug:
        traceback.print_exc()
    if want_json:
        print(dumps(redact_tree({"ok": False, **e.to_dict()})))
    print(f"error: {redact(e.message)}", file=sys.stderr)
    return e.exit_code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; PgferryError becomes one line on stderr and its exit code."""
    args = sys.argv[1:] if argv is None else argv
    try:
        args = hoist_globals(args)
    except Exception:  # noqa: BLE001 (never in the way: click reports bad usage itself)
        pass
    want_json = "--json" in args
    debug = "--debug" in args
    try:
        # standalone_mode=False: click returns the code of typer.Exit instead of exiting
        rc = app(args=args, prog_name="pgferry", standalone_mode=False)
        if rc == 130:  # typer turns Ctrl-C into exit code 130; DESIGN: interrupted is 3
            print("error: interrupted", file=sys.stderr)
            return 3
        return rc if isinstance(rc, int) else 0
    except PgferryError as e:
        return _failed(e, want_json, debug)
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 4
    except TyperException as e:  # usage errors: typer's own click prints them
        show = getattr(e, "show", None)
        if show is not None:
            show()
        else:
            print(f"error: {e.format_message()}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2) or 2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 3
    except Exception as e:  # noqa: BLE001 - the last line of defence: one sentence, no traceback
        if debug:
            traceback.print_exc()
        print(
            f"error: {type(e).__name__}: {redact(str(e))} (run with --debug for details)",
            file=sys.stderr,
        )
        return 3

"""The root command imports each command's module on first use: the table must be complete."""

from __future__ import annotations

import importlib
import subprocess
import sys

import typer

from pgferry.cli.app import COMMANDS


def _defined_by(module: str) -> set[str]:
    sub = typer.Typer()
    importlib.import_module(module).register(sub)
    return set(typer.main.get_group(sub).commands)


def test_every_command_a_module_defines_is_listed_and_nothing_else() -> None:
    for module in set(COMMANDS.values()):
        listed = {name for name, m in COMMANDS.items() if m == module}
        assert _defined_by(module) == listed, module


def test_version_loads_no_driver_parser_or_engine() -> None:
    code = (
        "import sys\n"
        "from pgferry.cli.app import main\n"
        "rc = main(['--version'])\n"
        "heavy = [m for m in ('psycopg', 'pydantic', 'pglast', 'pgferry.sync.engine',"
        " 'pgferry.lint.engine') if m in sys.modules]\n"
        "print(rc, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["pgferry 0.1.0", "0 []"]


def test_a_group_without_a_verb_shows_plain_help_and_exits_2() -> None:
    for group in ("migrate", "env", "embedded"):
        out = subprocess.run(
            [sys.executable, "-m", "pgferry", group], capture_output=True, text=True
        )
        text = out.stdout + out.stderr
        assert out.returncode == 2, (group, text)
        assert f"Usage: pgferry {group} [OPTIONS] COMMAND" in text
        assert "─" not in text  # rich's boxes: the sub-group lost the root's settings

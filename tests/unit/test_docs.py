"""Every CLI command and option is documented in README.md or docs/*.md."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main

from pgferry.cli.app import app

ROOT = Path(__file__).resolve().parents[2]


def _docs() -> str:
    parts = [(ROOT / "README.md").read_text(encoding="utf-8")]
    parts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(parts)


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if hasattr(cmd, "commands"):
        subs = getattr(cmd, "all_commands", cmd.commands)  # the root imports lazily
        for name, sub in subs.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, cmd


def test_every_command_is_documented() -> None:
    docs = _docs()
    root = typer.main.get_command(app)
    missing = [" ".join(p) for p, _ in _commands(root) if f"pgferry {' '.join(p)}" not in docs]
    assert not missing, f"commands missing from README/docs: {missing}"


def test_every_option_is_documented() -> None:
    docs = _docs()
    root = typer.main.get_command(app)
    missing = []
    for path, cmd in _commands(root):
        for param in cmd.params:
            if type(param).__name__.endswith("Option"):
                longs = [o for o in param.opts if o.startswith("--")]
                if longs and not any(o in docs for o in longs) and longs[0] != "--help":
                    missing.append(f"pgferry {' '.join(path)} {longs[0]}")
    assert not missing, f"options missing from README/docs: {missing}"

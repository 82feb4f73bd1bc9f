"""Every sync message with square brackets prints as it is (rich would take it for markup).

Issue 9, item 16: "no primary key and no [sync.tables] key" lost its brackets. Every
string constant of the sync modules that holds a "[" goes through the same printing the
CLI uses (tables, lines, the progress bars' warnings) and must come out whole.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path

from rich.console import Console

from pgferry.cli.progress import SyncBars
from pgferry.cli.sync_render import cells, say
from pgferry.sync import events

SRC = Path(__file__).resolve().parents[2] / "src" / "pgferry"
MODULES = [
    *sorted((SRC / "sync").rglob("*.py")),
    SRC / "cli" / "sync.py",
    SRC / "cli" / "sync_render.py",
    SRC / "commands" / "sync.py",
]


def _templates() -> list[str]:
    out = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                text = "".join(
                    str(v.value) if isinstance(v, ast.Constant) else "X" for v in node.values
                )
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            if "[" in text and "]" in text and "\n" not in text and len(text) > 12:
                out.append(text)
    return out


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=400, highlight=False, color_system=None), buf


def test_there_are_templates_with_brackets() -> None:
    found = _templates()
    assert any("[sync.tables]" in t for t in found)
    assert any("[sync.mask]" in t for t in found)


def test_lines_and_table_cells_keep_brackets() -> None:
    from rich.table import Table

    for text in _templates():
        con, buf = _console()
        say(con, text)
        table = Table()
        table.add_column("c")
        table.add_row(*cells(text))
        con.print(table)
        printed = buf.getvalue()
        assert printed.count(text) == 2, text  # once as a line, once in the table


def test_progress_warnings_keep_brackets() -> None:
    for text in _templates():
        con, buf = _console()
        with SyncBars(con) as bars:
            bars(events.Warning(text, table="public.t"))
        assert f"public.t: {text}" in buf.getvalue(), text

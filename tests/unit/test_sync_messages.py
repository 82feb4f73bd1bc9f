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


def test_plain_lines_keep_brackets_and_count_rows() -> None:
    from pgferry.cli.lines import SyncLines, rows_text

    buf = io.StringIO()
    with SyncLines(buf) as lines:
        for text in _templates():
            lines(events.Warning(text, table="public.t"))
        lines(events.TableStarted("public.one", total_rows=5))
        lines(events.BatchWritten("public.one", 1))
        lines(events.TableFinished("public.one", "ok", duration_s=0.5))
        lines(events.TableStarted("public.two"))
        lines(events.BatchWritten("public.two", 1500))
        lines(events.BatchWritten("public.two", 500))
        lines(events.TableFinished("public.two", "failed", duration_s=0.0))
    out = buf.getvalue().splitlines()
    for text in _templates():
        assert f"warning: public.t: {text}" in out, text
    assert out[-2:] == [
        "public.one: 1 row in 0.50 s, 2 rows/s, ok",
        "public.two: 2,000 rows in 0.00 s, failed",
    ]
    assert (rows_text(0), rows_text(1), rows_text(1234)) == ("0 rows", "1 row", "1,234 rows")


def test_a_bar_ends_at_1_row_not_1_rows() -> None:
    con, buf = _console()
    with SyncBars(con) as bars:
        bars(events.TableStarted("public.one", total_rows=1))
        bars(events.BatchWritten("public.one", 1))
        bars(events.TableFinished("public.one", "ok", duration_s=0.1))
    assert " 1 row " in buf.getvalue() and "1 rows" not in buf.getvalue(), buf.getvalue()

"""What docs/architecture.md promises and import-linter cannot see."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "pgferry"


def _classes() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                found[node.name].append(str(path.relative_to(SRC)))
    return found


def test_no_two_classes_share_a_name() -> None:
    twice = {name: where for name, where in _classes().items() if len(where) > 1}
    assert not twice, twice


def test_no_single_letter_attributes() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):  # annotated fields (dataclasses)
                bad += [
                    f"{path.name}:{n.lineno} {node.name}.{n.target.id}"
                    for n in node.body
                    if isinstance(n, ast.AnnAssign)
                    and isinstance(n.target, ast.Name)
                    and len(n.target.id) == 1
                ]
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and len(node.attr) == 1
            ):
                bad.append(f"{path.name}:{node.lineno} self.{node.attr}")
    # still there in modules other open work is rewriting (issue 16: sync's differ; issue 11
    # part B: the lint worker pool): they go with that work
    known = {"differ.py self.s", "differ.py self.t", "parallel.py self.n"}
    left = [b for b in bad if f"{b.split(':')[0]} {b.split(' ')[1]}" not in known]
    assert not left, left


def test_commands_import_no_terminal_and_lint_stays_light() -> None:
    code = (
        "import sys\nimport pgferry.commands.lint, pgferry.commands.base\n"
        "print([m for m in ('typer', 'rich', 'click', 'psycopg', 'pydantic')"
        " if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

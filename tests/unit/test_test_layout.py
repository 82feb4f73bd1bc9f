"""The test suite's own layout: helpers come from :mod:`tests.helpers`, never from a test
module or a ``conftest.py`` (a test module that others import runs its tests under other
names, and its helpers change with its tests)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
#: the modules of tests/ that other test code may import
ALLOWED = ("tests.helpers", "tests.servers")


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            out += [(node.lineno, n) for n in names[:1]]
            if node.module == "tests":
                out += [(node.lineno, n) for n in names[1:]]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return out


def test_no_test_module_imports_another_test_module() -> None:
    wrong = []
    for path in sorted(TESTS.rglob("*.py")):
        for line, name in _imports(path):
            if (
                name != "tests"
                and name.startswith("tests.")
                and not any(name == a or name.startswith(a + ".") for a in ALLOWED)
            ):
                wrong.append(f"{path.relative_to(TESTS.parent)}:{line}: {name}")
    assert not wrong, "import helpers from tests.helpers instead:\n" + "\n".join(wrong)

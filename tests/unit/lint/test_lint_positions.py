"""Line and column of a byte offset: the same answer from the small-file scan and the
big-file line index, in ASCII and multibyte text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgferry.lint.engine import Linter
from pgferry.lint.model import FileInfo


def naive(text: str, offset: int) -> tuple[int, int]:
    data = text.encode("utf-8")
    offset = max(0, min(offset, len(data)))
    before = data[:offset].decode("utf-8", "replace")
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def info(text: str) -> FileInfo:
    return FileInfo("x.sql", text, text.encode("utf-8"))


@given(st.text(alphabet="ab\né€ \t", max_size=80), st.integers(-5, 400))
def test_small_files(text: str, offset: int) -> None:
    assert info(text).position(offset) == naive(text, offset)


@pytest.mark.parametrize("line", ["SELECT 1;", "SELECT 'é€';"])
def test_big_files_use_the_line_index(line: str) -> None:
    text = (line + "\n") * 9000  # > 64 KiB
    fi = info(text)
    size = len(fi.data)
    for offset in (0, 1, 9, 10, 11, size // 2, size // 2 + 3, size - 1, size, size + 7):
        assert fi.position(offset) == naive(text, offset)
    assert fi._bols is not None  # the index was built (and reused for each lookup)


def test_a_finding_deep_in_a_big_file() -> None:
    text = "SELECT 'é';\n" * 7000 + "  CREATE INDEX i ON t (a);\n"
    [f] = [
        f
        for f in Linter().lint_text("big.sql", text)
        if f.rule == "require-concurrent-index-creation"
    ]
    assert (f.line, f.column) == (7001, 3)

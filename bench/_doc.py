"""What the benchmarks share for their output: a section of docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(title: str, section: str, doc: Path = DOC) -> None:
    """Replace the ``## title`` section of ``doc`` with ``section`` (append when absent)."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    pat = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pat.search(text):
        text = pat.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def finish(title: str, section: str, write: bool) -> int:
    """Print a bench's section, write it into docs/benchmarks.md when asked; exit code 0."""
    print()
    print(section)
    if write:
        write_section(title, section)
        print(f"wrote the {title} section of {DOC}")
    return 0

"""The lint benchmark's history corpus stays what the bench says it is: deterministic,
SQL that parses, and a catalog whose history leaves exactly the last files pending."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import lint_history


def test_history_corpus_and_its_catalog(cli: Callable[..., Any], tmp_path: Path) -> None:
    files, catalog = lint_history.write(tmp_path / "hist", count=60, pending=6)
    again, _ = lint_history.write(tmp_path / "again", count=60, pending=6)
    assert [p.read_bytes() for p in files] == [p.read_bytes() for p in again]
    (tmp_path / "pgferry.toml").write_text("")
    ci = cli("lint", "--catalog", catalog.name, "--format", "json", "hist", cwd=tmp_path)
    assert ci.code in (0, 1), ci.err
    # the last 6 versioned files, the new repeatable and the one changed since it ran
    assert (ci.json["files"], ci.json["skipped"]) == (8, 55)
    every = cli(
        "lint", "--catalog", catalog.name, "--format", "json", "--all", "hist", cwd=tmp_path
    )
    assert (every.json["files"], every.json["skipped"]) == (63, 0)
    # the corpus has hazards on old tables, which the catalog sizes
    blocking = [
        f for f in every.json["findings"] if f["rule"] == "require-concurrent-index-creation"
    ]
    assert blocking and all(f["impact"].startswith("builds an index on public.") for f in blocking)

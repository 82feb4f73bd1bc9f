"""The backup benchmark still runs end to end (tiny data; its times are not looked at)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_backup_runs_and_prints_both_ratios() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bench", "backup", "--rows", "2000", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for measure in (
        "| `backup create` / `pg_dump -Fd -j 2` |",
        "| `backup verify --restore-test` / `pg_restore -j 2` into an empty database |",
        "| the same, counting the scratch database's drop",
        "| pgferry start-up alone",
    ):
        assert measure in r.stdout, measure
    assert "wrote the Backup section" not in r.stdout  # only with --write-doc

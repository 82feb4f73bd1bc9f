"""The service benchmark still runs end to end (a few seconds; its times are not looked at)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_service_runs_and_prints_its_table() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "service",
            "--seconds",
            "1",
            "--clients",
            "5",
            "--runs",
            "10",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for route in ("| `GET /api/admin/production-health` |", "| `GET /api/runs` |"):
        assert route in r.stdout, route
    assert "wrote the Service section" not in r.stdout  # only with --write-doc

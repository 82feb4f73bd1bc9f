"""The sync benchmark still runs end to end (tiny data; its times are not looked at)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_sync_runs_and_every_incremental_run_leaves_the_sides_equal() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bench", "sync", "--rows", "2000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    # each incremental run is followed by a verify, which must find the sides equal
    after = [line for line in out.splitlines() if "incremental" in line and "verify after" in line]
    assert len(after) == 4 and all(line.endswith("verify after: exit 0") for line in after), after
    assert "verify after the" not in out  # the bench's own note when verify found differences
    for measure in ("floor 1: hash every row", "floor 2: the source's own writes",
                    "floor 3: a Python process", "floors 1 + 2 + 3", "floors 2 + 3 for the "
                    "watermark round", "peak RSS full sync",
                    "incremental checksum keeping before-images / without",
                    "incremental checksum with conflict detection / without"):
        assert f"| {measure}" in out, measure

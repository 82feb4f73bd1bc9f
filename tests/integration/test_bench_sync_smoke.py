"""The sync benchmark still runs end to end (tiny data; its times are not looked at)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_sync_runs_and_every_incremental_run_leaves_the_sides_equal() -> None:
    # one shape: the wide one, the only one with every round (the extra rounds of issues 9
    # and 18); each shape costs ~15 s of process starts, whatever its rows
    r = subprocess.run(
        [sys.executable, "-m", "bench", "sync", "--shape", "wide", "--rows", "2000"],
        cwd=ROOT,
        # one incremental round a strategy (the bench's three only repeat it)
        env={**os.environ, "PGFERRY_BENCH_ROUNDS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    # each incremental run (checksum, watermark) is followed by a verify, which must find
    # the sides equal
    after = [line for line in out.splitlines() if "verify after:" in line]
    # one round a strategy (PGFERRY_BENCH_ROUNDS)
    assert len(after) == 2 and all(line.endswith("verify after: exit 0") for line in after), after
    assert "verify after the" not in out  # the bench's own note when verify found differences
    for measure in (
        "floor: binary COPY relay",
        "floor: hash every row once",
        "floor: the source's own writes of the 1% (checksum round)",
        "floor: a Python process",
        "pgferry verify (identical) / hash-once floor",
        "peer: reladiff / pgferry verify",
        "pg_dump \\| pg_restore",
        "pgferry incremental watermark",
        "peak RSS of pgferry",
        "incremental checksum keeping before-images / without",
        "incremental checksum with conflict detection / without",
    ):
        assert f"| {measure}" in out or measure in out, measure
    assert "### wide:" in out

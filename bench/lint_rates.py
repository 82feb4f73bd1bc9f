"""Measure the rates catalog-aware lint uses to say how long a lock is held.

Run with ``./run bench lint_rates [--rows N]``. On a fresh embedded server in a
temp dir it builds one table of ``--rows`` rows (default 1,000,000: bigint key,
text, timestamptz, numeric, small jsonb; one secondary index), then times the
three kinds of work a risky migration does while holding its lock:

- index: ``CREATE INDEX`` on a timestamptz column (SHARE lock);
- scan:  ``ADD CONSTRAINT ... CHECK`` (full scan, ACCESS EXCLUSIVE);
- rewrite: ``ADD COLUMN ... DEFAULT gen_random_uuid()`` (rewrite of heap and indexes).

Each rate is the table's total size (``pg_total_relation_size`` before the
step, what the snapshot records) divided by the step's wall time, in MB/s.
``pgferry.lint.impact.RATES_MB_S`` holds the values measured this way.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

from pgferry.pg import embedded

SETUP = """
CREATE TABLE rate_probe (
    id bigint PRIMARY KEY, title text NOT NULL, created_at timestamptz NOT NULL,
    amount numeric(12,2), meta jsonb
);
INSERT INTO rate_probe
SELECT g, 'case number ' || g || ' of the probe table', now() - g * interval '1 minute',
       (g %% 100000) / 100.0, jsonb_build_object('k', g %% 17, 'tag', 'x' || (g %% 5))
FROM generate_series(1, %(rows)s) g
"""

STEPS = [
    ("index", "CREATE INDEX rate_probe_created ON rate_probe (created_at)"),
    ("scan", "ALTER TABLE rate_probe ADD CONSTRAINT rate_probe_amount CHECK (amount >= 0)"),
    ("rewrite", "ALTER TABLE rate_probe ADD COLUMN token uuid DEFAULT gen_random_uuid()"),
]


def measure(dsn: str, rows: int) -> dict[str, tuple[float, int, float]]:
    """{work: (seconds, total bytes before, MB/s)}."""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as c:
        setup = SETUP.split(";")
        c.execute(setup[0])
        c.execute(setup[1], {"rows": int(rows)})
        c.execute("VACUUM ANALYZE rate_probe")
        for work, stmt in STEPS:
            size = c.execute("SELECT pg_total_relation_size('rate_probe')").fetchone()[0]
            t0 = time.perf_counter()
            c.execute(stmt)
            secs = time.perf_counter() - t0
            out[work] = (secs, size, size / 1024 / 1024 / secs)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench lint_rates", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args(list(argv) if argv is not None else None)
    work = Path(tempfile.mkdtemp(prefix="pgfr-", dir="/tmp"))
    try:
        dsn = embedded.superuser_dsn(work / "pg")
        res = measure(dsn, args.rows)
    finally:
        embedded.stop(work / "pg")
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.rows:,} rows")
    print("| work | table size | seconds | MB/s |")
    print("|---|---|---|---|")
    for name, (secs, size, rate) in res.items():
        print(f"| {name} | {size / 1024 / 1024:.0f} MB | {secs:.2f} | {rate:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

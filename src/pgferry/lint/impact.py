"""How long a finding's lock would be held, from the table's size and a measured rate.

Contract: :func:`impact_of` turns (snapshot, table, lock, work) into one sentence,
e.g. ``rewrites public.legal_cases (412 MB, ~2.1M rows) under ACCESS EXCLUSIVE:
blocks reads and writes for roughly 20 s``. Pure; "" when the table is unknown.

The rates below were measured with ``./run bench lint_rates`` on the embedded
PostgreSQL 18 of the dev machine (2 cores, load ~5): tables of 1M and 2M rows
(148-338 MB), timing ``CREATE INDEX`` (index: 127 and 118 MB/s), ``ADD
CONSTRAINT ... CHECK`` (scan, warm cache: 1752 and 1388 MB/s) and ``ADD COLUMN
... DEFAULT gen_random_uuid()`` (rewrite incl. index rebuild and WAL: 14 and
11 MB/s); the constants take the slower run, rounded. A cold cache scans
slower and production hardware differs, so messages say "roughly"; see
docs/lint.md.
"""

from __future__ import annotations

from typing import Any

#: MB of table (heap + indexes) processed per second, measured (see module docstring)
RATES_MB_S = {"rewrite": 12.0, "scan": 1400.0, "index": 120.0}

_BLOCKS = {
    "ACCESS EXCLUSIVE": "blocks reads and writes",
    "EXCLUSIVE": "blocks writes",
    "SHARE ROW EXCLUSIVE": "blocks writes",
    "SHARE": "blocks writes",
    "SHARE UPDATE EXCLUSIVE": "blocks other schema changes and VACUUM",
    "ROW EXCLUSIVE": "holds row locks",
}
_VERB = {"rewrite": "rewrites", "scan": "scans", "index": "builds an index on"}


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return (
                f"{size:.0f} {unit}"
                if unit in ("bytes", "kB") or size >= 10
                else (f"{size:.1f} {unit}")
            )
        size /= 1024
    return f"{n} bytes"  # pragma: no cover


def human_rows(n: int) -> str:
    if n < 0:
        return "rows not counted yet"
    if n >= 1_000_000:
        return f"~{n / 1_000_000:.1f}M rows"
    if n >= 1_000:
        return f"~{n / 1_000:.0f}k rows"
    return f"~{n} rows"


def human_seconds(s: float) -> str:
    if s < 1:
        return "under a second"
    if s < 90:
        return f"roughly {s:.0f} s"
    if s < 5400:
        return f"roughly {s / 60:.0f} min"
    return f"roughly {s / 3600:.1f} h"


def estimate_seconds(total_bytes: int, work: str) -> float:
    rate = RATES_MB_S.get(work)
    if not rate:
        return 0.0
    return total_bytes / (1024 * 1024) / rate


def impact_of(catalog: Any, table: str, lock: str, work: str) -> str:
    """One sentence on the lock, the table's size and how long it would be held."""
    t = catalog.tables.get(table) if catalog is not None else None
    if t is None:
        return f"{table} is not in the target's catalog" if catalog is not None else ""
    size = f"{table} ({human_bytes(t.total_bytes)}, {human_rows(t.rows)})"
    blocks = _BLOCKS.get(lock, "")
    if not work:
        if not lock:
            return ""
        return (
            f"takes {lock} on {size}: {blocks} while it waits and runs"
            if blocks
            else (f"takes {lock} on {size}")
        )
    secs = estimate_seconds(t.total_bytes, work)
    cold = " (longer if the table is not in cache)" if work == "scan" else ""
    return f"{_VERB[work]} {size} under {lock}: {blocks} for {human_seconds(secs)}{cold}"

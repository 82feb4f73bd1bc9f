"""``pgferry demo``'s sync story: dev 2,025 cases / 5,654 updates, prod 0; verify, sync, verify."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgferry.pg import embedded


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    # a short path: the embedded server's unix socket lives under it
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="pgfd-", dir="/tmp"))
    try:
        yield d / "demo"
    finally:
        embedded.stop(d / "demo" / ".pgferry")
        subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.mark.slow
def test_demo_closes_the_gap_with_sync(demo_dir: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "pgferry", "demo", "--dir", str(demo_dir)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    # seeded: dev holds the rows, prod none
    assert "public.legal_cases           dev  2,025   prod      0" in out
    assert "public.regulatory_updates    dev  5,654   prod      0" in out
    verify1, sync, verify2 = (out.index(s) for s in (
        "$ pgferry verify dev prod", "$ pgferry sync dev prod --yes --report",
        "== verify again =="))
    assert verify1 < sync < verify2
    # the first verify shows the gap, the sync closes it, the report is shown and on disk
    assert "problem in" in out[verify1:sync]
    report = (demo_dir / "sync-report.md").read_text(encoding="utf-8")
    assert "| public.legal_cases | checksum | ok | 2,025 |" in report
    assert "| public.regulatory_updates | checksum | ok | 5,654 |" in report
    assert "- **outcome**: ok — the target matches the source (exit 0)" in report
    assert report.splitlines()[0] in out[sync:verify2]
    # progress bars went to stderr, one per table
    assert "2,025 rows" in p.stderr and "5,654 rows" in p.stderr
    assert out.rstrip().endswith("demo finished")
    assert "ok in" in out[verify2:]


@pytest.mark.slow
def test_demo_json_reports_the_figures(demo_dir: Path) -> None:
    import json

    p = subprocess.run([sys.executable, "-m", "pgferry", "--json", "demo", "--dir",
                        str(demo_dir)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout)["results"]["sync"]
    cases, updates = "public.legal_cases", "public.regulatory_updates"
    assert (res["dev_before"][cases], res["dev_before"][updates]) == (2025, 5654)
    assert res["prod_before"] == {"public.data_sources": 0, cases: 0, updates: 0}
    assert res["verify_before"]["only_in_source"] >= 2025 + 5654
    assert res["sync"]["inserted"] >= 2025 + 5654 + 12
    assert res["prod_after"] == {"public.data_sources": 12, cases: 2025, updates: 5654}
    assert res["verify_after"]["differing"] == 0
    assert res["verify_after"]["only_in_source"] == res["verify_after"]["only_in_target"] == 0

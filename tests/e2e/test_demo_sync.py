"""``pgferry demo``'s sync story: dev 2,025 cases / 5,654 updates, prod 0; verify, sync, verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgferry.pg import embedded


@pytest.fixture(scope="module")
def demo_run() -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    """One ``pgferry --json demo`` for the module's tests (each run is a whole demo on a new
    embedded server, ~20 s; the text-mode demo runs in tests/e2e/test_demo.py)."""
    # a short path: the embedded server's unix socket lives under it
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="pgfd-", dir="/tmp"))
    demo_dir = d / "demo"
    try:
        p = subprocess.run(
            [sys.executable, "-m", "pgferry", "--json", "demo", "--dir", str(demo_dir)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "COLUMNS": "160"},
        )
        yield demo_dir, p
    finally:
        embedded.stop(demo_dir / ".pgferry")
        subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.mark.slow
def test_demo_closes_the_gap_with_sync(
    demo_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """Figures, progress bars, report."""
    demo_dir, p = demo_run
    assert p.returncode == 0, p.stderr[-2000:]
    demo = json.loads(p.stdout)
    titles = [s["title"] for s in demo["steps"]]
    i = titles.index("backup prod")  # the backup and zero-downtime steps follow the sync's
    assert titles[i - 10 : i] == [
        "seed dev",
        "verify finds the gap",
        "prod health before the sync",
        "sync dev -> prod",
        "verify again",
        "prod health after the sync",
        "a mistaken sync into prod",
        "sync revert",
        "a conflict stops the sync",
        "--on-conflict target",
    ]
    outs = demo["outputs"]
    j = next(k for k, o in enumerate(outs) if o["command"].startswith("pgferry backup create"))
    commands = [(o["command"], o["exit_code"]) for o in outs][j - 9 : j]
    # verify finds the gap, health degraded, sync, verify clean, health optimal, the
    # mistaken sync, its revert, the sync that stops at a conflict (exit 1), the one that
    # keeps prod's row
    assert [c[1] for c in commands] == [1, 1, 0, 0, 0, 0, 0, 1, 0]
    assert commands[6][0].startswith("pgferry sync revert ")
    assert commands[2][0].startswith("pgferry sync dev prod --yes --report ")
    assert commands[1][0] == commands[4][0] == "pgferry health --env prod"
    before, after = outs[j - 8]["output"], outs[j - 5]["output"]
    assert (before["status"], after["status"]) == ("degraded", "optimal")
    rows = {c["name"]: c for c in before["checks"]}["rows:public.legal_cases"]
    assert rows["message"] == "public.legal_cases has 0 rows, below degraded_below = 1"
    assert {c["name"]: c for c in after["checks"]}["rows:public.legal_cases"]["value"] == "2025"
    assert demo["results"]["health"]["before"]["status"] == "degraded"
    assert demo["results"]["health"]["after"]["status"] == "optimal"
    stopped = outs[j - 2]["output"]
    cases = {t["table"]: t for t in stopped["tables"]}["public.legal_cases"]
    assert cases["status"] == "conflicts" and cases["conflicts"] == 1
    assert cases["conflict_rows"][0]["target_row"]["title"].endswith("(corrected by legal ops)")
    # progress bars (stderr), one per table, with the real row counts
    assert "2,025 rows" in p.stderr and "5,654 rows" in p.stderr
    report = (demo_dir / "sync-report.md").read_text(encoding="utf-8")
    assert "| public.legal_cases | checksum | ok | 2,025 |" in report
    assert "| public.regulatory_updates | checksum | ok | 5,654 |" in report
    assert "- **outcome**: ok — the target matches the source (exit 0)" in report
    res = demo["results"]["sync"]
    cases, updates = "public.legal_cases", "public.regulatory_updates"
    assert (res["dev_before"][cases], res["dev_before"][updates]) == (2025, 5654)
    assert res["prod_before"] == {"public.data_sources": 0, cases: 0, updates: 0}
    assert res["verify_before"]["only_in_source"] >= 2025 + 5654
    assert res["sync"]["inserted"] >= 2025 + 5654 + 12
    assert res["prod_after"] == {"public.data_sources": 12, cases: 2025, updates: 5654}
    assert res["verify_after"]["differing"] == 0
    assert res["verify_after"]["only_in_source"] == res["verify_after"]["only_in_target"] == 0
    # the mistake reached prod (267 summaries blanked: 33 of the first 300 were empty
    # already) and the revert brought them back
    assert res["mistake"]["after"] == res["mistake"]["before"] - 267
    assert res["reverted"] == res["mistake"]["before"]
    assert (
        res["conflict_kept"]
        == res["conflict_stopped"]
        == ("Globex v. Doe (corrected by legal ops)")
    )


@pytest.mark.slow
def test_demo_backs_up_prod_and_test_restores_it(
    demo_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """The backup steps (after the migration and sync steps they need); then, in the same
    run, the zero-downtime rename (issue 17): the contract is held after the expand,
    released after the backfill; migrate test proves the undos."""
    demo_dir, p = demo_run
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout)
    titles = [s["title"] for s in res["steps"]]
    i = titles.index("backup prod")
    assert titles[i : i + 3] == ["backup prod", "test-restore the backup", "list backups"]
    j = next(
        k for k, o in enumerate(res["outputs"]) if o["command"].startswith("pgferry backup create")
    )
    outs = res["outputs"][j : j + 3]
    assert [o["command"] for o in outs] == [
        "pgferry backup create --env prod --tag demo",
        "pgferry backup verify latest --env prod --restore-test",
        "pgferry backup list --env prod",
    ]
    assert [o["exit_code"] for o in outs] == [0, 0, 0]
    b = res["results"]["backup"]
    assert b["rows"] == {
        "public.data_sources": 12,
        "public.legal_cases": 2025,
        "public.regulatory_updates": 5654,
    }
    assert b["restore_test_ok"] is True and b["tables_compared"] == b["tables"]
    listed = outs[2]["output"]["backups"]
    assert [x["state"] for x in listed] == ["restore-tested"] and listed[0]["tag"] == "demo"
    manifest = demo_dir / "backups" / "prod" / b["id"] / "manifest.json"
    assert json.loads(manifest.read_text())["tables"]["public.legal_cases"] == 2025
    # the scratch database of the test restore is dropped from the embedded server
    from tests.helpers.backup import wait_scratch_gone

    wait_scratch_gone(embedded.superuser_dsn(demo_dir / ".pgferry"))

    # the zero-downtime steps close the demo
    titles = [s["title"] for s in res["steps"]]
    # then the last step prints how to start the admin service (it runs no command)
    assert titles[-6:] == [
        "scaffold a rename",
        "expand; the contract is held",
        "backfill",
        "contract released",
        "migrate test",
        "the admin service",
    ]
    outs = res["outputs"][-7:]
    assert [o["command"].split(" --env")[0] for o in outs] == [
        "pgferry migrate new --expand-contract rename legal_cases.jurisdiction to "
        "jurisdiction_code",
        "pgferry migrate number",
        "pgferry migrate up",
        "pgferry migrate status",
        "pgferry backfill run rename_legal_cases_jurisdiction_to_jurisdiction_code",
        "pgferry migrate up",
        "pgferry migrate test",
    ]
    assert [o["exit_code"] for o in outs] == [0] * 7
    up, status = outs[2]["output"], outs[3]["output"]
    assert [a["script"] for a in up["applied"]] == [
        "V13__rename_legal_cases_jurisdiction_to_jurisdiction_code_1_expand.sql"
    ]
    assert [h["version"] for h in up["held"]] == ["14"] and up["held"][0]["ready"] is False
    held = [e for e in status["entries"] if e["state"] == "held"]
    assert [e["version"] for e in held] == ["14"]
    assert held[0]["held_by"].startswith("after backfill: rename_legal_cases_jurisdiction_to_")
    assert outs[4]["output"]["rows"] == 2025 and outs[4]["output"]["status"] == "completed"
    assert [r["version"] for r in outs[5]["output"]["released"]] == ["14"]
    assert outs[6]["output"]["undo_checked"][-2:] == [
        "V13__rename_legal_cases_jurisdiction_to_jurisdiction_code_1_expand.sql",
        "V14__rename_legal_cases_jurisdiction_to_jurisdiction_code_2_contract.sql",
    ]
    z = res["results"]["zdt"]
    assert (z["backfilled"], z["released"], z["current_version"]) == (2025, True, 14)

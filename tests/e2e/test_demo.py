"""`pgferry demo` end to end: a real process builds the example on its own embedded server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgferry import demo
from pgferry.cli.common import State
from pgferry.pg import embedded
from tests.helpers import Result


@pytest.fixture
def demo_dir() -> Iterator[Path]:
    # a short path: the embedded server's socket lives under it
    root = Path(tempfile.mkdtemp(prefix="pgfd-", dir="/tmp")) / "demo"
    try:
        yield root
    finally:
        embedded.stop(root / ".pgferry")
        subprocess.run(["rm", "-rf", str(root.parent)], check=False)


def _state(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as c:
        hist = c.execute(
            "SELECT max(version::int) FILTER (WHERE version IS NOT NULL),"
            " count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success),"
            " count(*) FILTER (WHERE version IS NULL)"
            " FROM public.flyway_schema_history"
        ).fetchone()
        tables = c.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            " AND table_type = 'BASE TABLE' ORDER BY 1, 2"
        ).fetchall()
        journal = c.execute("SELECT command, outcome FROM pgferry.journal ORDER BY id").fetchall()
    return {"history": hist, "tables": tables, "journal": journal}


APP_TABLES = {
    ("public", t)
    for t in (
        "data_sources",
        "legal_cases",
        "regulatory_updates",
        "leads",
        "user_lead_assignments",
        "lead_access_audit",
        "flyway_schema_history",
    )
}


def test_demo_runs_the_migration_story(
    demo_dir: Path, cli: Callable[..., Result], capsys: pytest.CaptureFixture[str]
) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "pgferry", "demo", "--dir", str(demo_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=demo_dir.parent,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "$ pgferry migrate up --env prod --yes" in p.stdout
    assert "prod: applied 13 migrations" in p.stdout
    assert "demo finished" in p.stdout
    assert "$ pgferry health --env prod" in p.stdout
    assert "prod: degraded (" in p.stdout and "prod: optimal (" in p.stdout
    assert "public.legal_cases has 0 rows, below degraded_below = 1" in p.stdout
    # the backup story closes the demo: prod backed up, test-restored, listed
    assert "$ pgferry backup verify latest --env prod --restore-test" in p.stdout
    # prod's 12 tables and pgferry's own (journal, before-images, conflict bases): all of them
    compared = re.search(r"restore test: (\d+) tables' row counts compared", p.stdout)
    assert compared and int(compared[1]) > 12, p.stdout[-3000:]
    assert "$ pgferry backup list --env prod" in p.stdout and "restore-tested" in p.stdout
    # it ends with how to start the service, and one curl for each /api/admin route
    for route in ("production-health", "environment-sync", "professional-migration"):
        assert f"http://127.0.0.1:8765/api/admin/{route}" in p.stdout, route
    assert "token create --name you --role admin" in p.stdout and " serve &" in p.stdout
    assert (demo_dir / "migrations" / "V10__lead_row_level_security.sql").is_file()
    # then a rename in prod, expand -> backfill -> contract: the contract file is held until
    # its backfill completed, and released by --contract (issue 17)
    zdt = "rename legal cases jurisdiction to jurisdiction code"
    assert (
        f"held V14 {zdt} 2 contract (contract): after backfill: "
        "rename_legal_cases_jurisdiction_to_jurisdiction_code has not run in prod" in p.stderr
    )
    assert "held (contract)" in p.stdout
    assert (
        "prod: backfill rename_legal_cases_jurisdiction_to_jurisdiction_code completed: "
        "2,025 rows over 2,025 keys" in p.stdout
    )
    assert f"released V14 {zdt} 2 contract (contract): every guard passed" in p.stderr
    assert "migrate test: 15 migration(s) applied, 3 proven by up, undo, up" in p.stdout

    emb = demo_dir / ".pgferry"
    for env, db in (("dev", "legal_dev"), ("prod", "legal_prod")):
        s = _state(embedded.ensure_database(emb, db))
        # every versioned file (1..12; in prod also the rename's 13 and 14) and the
        # repeatable view, all successful
        want = (14, 15, 0, 1) if env == "prod" else (12, 13, 0, 1)
        assert s["history"] == want, (env, s)
        tables = set(s["tables"])
        assert APP_TABLES <= tables, (env, tables)
        # the migrations' tables live in public, not in pgferry's own schema
        # (pgferry.base_*: what each synced row was after the last sync, for conflicts)
        assert {t for sch, t in tables if sch == "pgferry" and not t.startswith("base_")} <= {
            "journal_log",
            "migration_progress",
            "sync_state",
            "dead_letters",
            "before_images",
            "schema_fingerprint",
            "set_aside",  # index definitions a load set aside (empty while none is)
            "backfill_state",
            "backfill_images",
            "schema_version",
        }, tables
        assert ("migrate up", "ok") in s["journal"], (env, s["journal"])

    # a second run starts fresh: databases dropped and rebuilt, files copied again
    (demo_dir / "migrations" / "V99__stray.sql").write_text("SELECT 1;\n")
    capsys.readouterr()
    st = State(json=True)
    res = demo.run(demo_dir, st, steps=demo.STEPS[:4])
    out = capsys.readouterr()
    assert out.out == ""  # under --json the narration goes to stderr
    assert "demo project:" in out.err
    assert [s["title"] for s in res["steps"]] == [s.title for s in demo.STEPS[:4]]
    ups = [o for o in res["outputs"] if o["command"].startswith("pgferry migrate up")]
    assert [o["exit_code"] for o in ups] == [0, 0]
    assert not (demo_dir / "migrations" / "V99__stray.sql").exists()
    prod = _state(embedded.ensure_database(emb, "legal_prod"))
    assert prod["journal"] == [("migrate up", "ok")]
    assert prod["history"] == (12, 13, 0, 1)


def test_demo_refuses_to_wipe_a_foreign_directory(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work\n")
    r = cli("demo", "--dir", str(target))
    assert r.code == 2 and "was not made by `pgferry demo`" in r.err
    assert (target / "thesis.tex").read_text() == "years of work\n"

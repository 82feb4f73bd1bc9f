"""The ``[[schedule]]`` entries a team writes, run end to end as procrastinate periodic tasks
by a real ``pgferry worker`` process (the server runs with ``--no-worker``): a backup of
protected prod then prune, and an incremental sync dev → staging, both every two seconds.

What is asserted: each schedule makes runs that end well, ``requested_by`` the schedule,
with no approval (the config is the consent); the backup's prune leaves what
``[backup.keep]`` keeps (one: the newest) and prod's journal has each backup and prune;
staging ends with dev's rows; no two runs of one schedule ever overlap; and with the
sync held (the test holds its table's advisory lock in staging) while the cron fires
again and again, the schedule has one run waiting on the lock and at most one more
queued — never one per firing — and both carry out once the lock is let go.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers import Project
from tests.helpers.service import Server, WorkerProc, make_project, seed, tokens

pytestmark = pytest.mark.slow

SCHEDULES = """
[backup.keep]
daily = 1
weekly = 0
monthly = 0
min_count = 1

[[schedule]]
name = "prod-backup"
cron = "* * * * * */2"
operation = "backup"
env = "prod"
prune = true

[[schedule]]
name = "dev-to-staging"
cron = "* * * * * */2"
operation = "sync"
source = "dev"
target = "staging"
mode = "incremental"
tables = ["public.items"]
"""

#: the advisory lock a sync takes on a table (the one test_service_faults holds too)
SYNC_LOCK = "SELECT pg_advisory_lock(x'70677379'::int, hashtext('public.items'))"


def _project(root: Path, make: Callable[..., str]) -> Project:
    from pgferry.commands import migrate_run
    from pgferry.config import load_config

    p = make_project(root, make, SCHEDULES, more=("staging",))
    cfg = load_config(p.config)
    for env in ("dev", "staging", "prod"):
        migrate_run.up(cfg, migrate_run.RunOptions(env=env, yes=True))
    seed(p.dsns["dev"], 300)
    seed(p.dsns["prod"], 100)
    return p


def _runs(c: httpx.Client, schedule: str) -> list[dict[str, Any]]:
    listed = c.get("/api/runs", params={"limit": 500}).json()["runs"]
    return [r for r in listed if r["schedule"] == schedule]


def _finished(c: httpx.Client, schedule: str, n: int, timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        done = [r for r in _runs(c, schedule) if r["finished_at"]]
        if len(done) >= n:
            return done
        assert time.monotonic() < deadline, (schedule, _runs(c, schedule))
        time.sleep(0.3)


def _never_overlap(done: list[dict[str, Any]]) -> None:
    spans = sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in done
    )
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, spans


def _control(p: Project, query: str, args: list[Any]) -> Any:
    with psycopg.connect(p.dsns["control"], autocommit=True) as c:
        row = c.execute(query, args).fetchone()
    return row[0] if row else None


def test_backup_then_prune_and_incremental_sync_schedules_end_to_end_one_copy_each(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    p = _project(tmp_path / "proj", make_db)
    tok = tokens(p, viewer="viewer")
    srv = Server(p, args=("--no-worker",)).start()
    hold = psycopg.connect(p.dsns["staging"], autocommit=True)
    w = WorkerProc(p).start()
    try:
        c = srv.client(tok["viewer"])
        # 1. the sync's first run waits on the lock the test holds; the cron goes on firing
        hold.execute(SYNC_LOCK)
        deadline = time.monotonic() + 60
        while not [r for r in _runs(c, "dev-to-staging") if r["state"] == "running"]:
            assert time.monotonic() < deadline, _runs(c, "dev-to-staging")
            time.sleep(0.2)
        held_since = _control(p, "SELECT now()", [])
        # until three more firings have come (the database's clock), at every look: one
        # run of the schedule running, at most one more queued, never one per firing
        while _control(p, "SELECT now() < %s + interval '7 s'", [held_since]):
            mine = _runs(c, "dev-to-staging")
            assert len([r for r in mine if r["state"] == "running"]) == 1, mine
            assert len([r for r in mine if r["state"] == "queued"]) <= 1, mine
            assert len(mine) <= 2, mine
            time.sleep(0.3)
        queued_jobs = _control(
            p,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'pgferry.schedule'"
            " AND args ->> 'name' = %s AND status IN ('todo', 'doing')",
            ["dev-to-staging"],
        )
        assert queued_jobs <= 2, f"{queued_jobs} jobs of the schedule queued or running"
        held = [r["id"] for r in _runs(c, "dev-to-staging")]
        hold.close()  # let go: the held run and the one queued carry out, each once
        synced = _finished(c, "dev-to-staging", 3)
        backups = _finished(c, "prod-backup", 3)
    finally:
        w.stop()
        hold.close()
        srv.stop()
    assert set(held) <= {r["id"] for r in synced}
    for runs, kind in ((synced, "sync"), (backups, "backup_create")):
        assert all(
            r["kind"] == kind
            and r["state"] == "succeeded"
            and r["requested_by"] == f"schedule:{r['schedule']}"
            and r["approved_by"] is None
            and r["attempts"] == 1
            for r in runs
        ), runs
        _never_overlap(runs)
    assert {r["env"] for r in synced} == {"staging"} and {r["env"] for r in backups} == {"prod"}
    with psycopg.connect(p.dsns["staging"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*), sum(id) FROM items").fetchone() == (300, 45150)
    # each backup pruned what [backup.keep] does not keep: one is left, the newest
    left = sorted(x.name for x in (p.root / "backups" / "prod").iterdir())
    assert len(left) == 1, left
    # the newest backup run the worker finished before it stopped (the cron may have fired
    # again after the three above were seen finished)
    result = _control(
        p,
        "SELECT result FROM pgferry_control.runs WHERE schedule = %s AND state = 'succeeded'"
        " ORDER BY finished_at DESC LIMIT 1",
        ["prod-backup"],
    )
    assert result["id"] == left[0] and result["prune"]["kept"] == [left[0]], result
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        journal = conn.execute(
            "SELECT command, outcome FROM pgferry.journal WHERE command LIKE 'backup%'"
        ).fetchall()
    assert journal.count(("backup create", "ok")) >= 3, journal
    assert journal.count(("backup prune", "ok")) >= 3, journal

"""``pgferry serve --no-worker`` and ``pgferry worker`` as separate real processes: the
schedules run by the worker (one copy at a time), and a worker killed (SIGKILL) in the
middle of a run that cannot safely resume (a restore): the run is marked failed with the
reason by the next worker, lands in the dead letters, and a retry carries it out."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from tests.helpers import Project, wait_for
from tests.helpers.service import (
    Server,
    WorkerProc,
    make_project,
    seed,
    tokens,
    wait_run,
)

pytestmark = pytest.mark.slow

SCHEDULE = """
[[schedule]]
name = "health-dev"
cron = "* * * * * */2"
operation = "health"
env = "dev"
"""


@pytest.fixture(scope="module")
def setup(
    make_db_module: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Project, Server, dict[str, str]]]:
    from pgferry.commands import backup, migrate_run
    from pgferry.config import load_config

    make = make_db_module
    p = make_project(tmp_path_factory.mktemp("svw") / "proj", make, SCHEDULE)
    p.config.write_text(p.config.read_text().replace("protected = true\n", ""))
    cfg = load_config(p.config)
    for env in ("dev", "prod"):
        migrate_run.up(cfg, migrate_run.RunOptions(env=env, yes=True))
    seed(p.dsns["prod"], 1000)
    backup.create(cfg, backup.CreateOptions("prod", tag="before"))
    toks = tokens(p, olga="operator")
    srv = Server(p, args=("--no-worker",)).start()
    try:
        yield p, srv, toks
    finally:
        srv.stop()


def test_schedules_run_in_the_worker_one_copy_at_a_time(
    setup: tuple[Project, Server, dict[str, str]],
) -> None:
    p, srv, tok = setup
    c = srv.client(tok["olga"])
    w = WorkerProc(p).start()
    try:
        deadline = time.monotonic() + 60
        done: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(done) < 2:
            runs = c.get("/api/runs", params={"kind": "health", "limit": 500}).json()["runs"]
            done = [r for r in runs if r["schedule"] == "health-dev" and r["finished_at"]]
            time.sleep(0.5)
    finally:
        w.stop()
    assert len(done) >= 2, done
    assert all(
        r["requested_by"] == "schedule:health-dev"
        and r["env"] == "dev"
        and r["state"] in ("succeeded", "problem")
        for r in done
    ), done
    spans = sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in done
    )
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, spans


def test_worker_killed_mid_restore_marks_it_failed_then_a_retry_restores(
    setup: tuple[Project, Server, dict[str, str]],
) -> None:
    p, srv, tok = setup
    c = srv.client(tok["olga"])
    w = WorkerProc(p).start()
    # another session holds a lock on items: the restore waits on it, mid-run
    hold = psycopg.connect(p.dsns["prod"])
    hold.execute("LOCK TABLE items IN ACCESS SHARE MODE")
    try:
        r = c.post("/api/runs", json={"kind": "backup_restore", "arguments": {"env": "prod"}})
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        wait_run(c, rid, states=("running",), timeout=60)
        # the emergency backup first, then the restore waits on the lock
        wait_for(
            p.dsns["prod"],
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE"
            " datname = current_database() AND wait_event_type = 'Lock'",
            what="the restore waiting on the lock",
        )
        w.kill()
        # the killed worker's pg_restore is an orphan: end its session as an operator would
        with psycopg.connect(p.dsns["prod"], autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND pid <> %s",
                [hold.info.backend_pid],
            )
        w = WorkerProc(p).start()  # the next worker finds the stalled job (3 s silence)
        failed = wait_run(c, rid, timeout=90)
    finally:
        hold.rollback()
        hold.close()
    try:
        assert failed["state"] == "failed" and "not resumed" in failed["error"], failed
        dead = c.get("/api/dead-letters").json()["runs"]
        assert rid in [d["id"] for d in dead]
        assert c.post(f"/api/runs/{rid}/retry").status_code == 202
        again = wait_run(c, rid, timeout=90)
    finally:
        w.stop()
    assert again["state"] == "succeeded" and again["attempts"] == 2, again
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1000,)

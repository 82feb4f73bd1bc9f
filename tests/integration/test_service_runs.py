"""Runs a team starts over HTTP, carried to their end by the in-process worker of a real
``pgferry serve`` (uvicorn on 127.0.0.1) on real databases. One server for the module.

What is asserted: a backup of production over the API (no approval: it writes nothing
to the environment) with its events streamed; two runs on one environment never overlap
(the procrastinate lock per environment); a blackout window refuses a write at once (403,
journaled in the environment); the release saga approved once and run step by step, then
a release whose sync fails and is compensated newest first (``sync revert`` of the rows
it committed, ``migrate undo``); the professional migration's ``data``
(``migratedCount``, ``errors``, ``report``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from tests.helpers import Project
from tests.helpers.service import Server, make_project, seed, sse, tokens, wait_run

pytestmark = pytest.mark.slow

BLACKOUT = """
[[blackout]]
from = 2000-01-01
to = 2999-01-01
envs = ["qa"]
reason = "the auditors are in"
"""


# an environment whose server is gone (nothing listens on port 1); connection retries short
GONE = """
[environments.gone]
url = "host=127.0.0.1 port=1 dbname=gone user=gone connect_timeout=1"

[sync]
retry = "1s"
"""


@pytest.fixture(scope="module")
def service(
    make_db_module: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Project, Server, dict[str, str]]]:
    from pgferry.commands import migrate_run
    from pgferry.config import load_config

    make = make_db_module
    p = make_project(tmp_path_factory.mktemp("svr") / "proj", make, more=("qa",))
    cfg = load_config(p.config)
    for env in ("dev", "prod", "qa"):
        migrate_run.up(cfg, migrate_run.RunOptions(env=env, yes=True))
    text = p.config.read_text().replace("[service]\n", "[service]\nbreaker_failures = 1\n")
    p.config.write_text(text + BLACKOUT + GONE)
    seed(p.dsns["dev"], 300)
    toks = tokens(p, olga="operator", bob="approver")
    srv = Server(p).start()
    try:
        yield p, srv, toks
    finally:
        srv.stop()


def _prod(p: Project, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(p.dsns["prod"], autocommit=True) as c:
        return c.execute(query).fetchall()


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_backup_of_production_runs_at_once_streams_and_is_listed(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    _, srv, tok = service
    olga = srv.client(tok["olga"])
    r = olga.post(
        "/api/runs", json={"kind": "backup_create", "arguments": {"env": "prod", "tag": "api"}}
    )
    assert r.status_code == 202 and r.json()["state"] in ("queued", "running"), r.text
    rid = r.json()["id"]
    assert r.json()["links"]["events"] == f"/api/runs/{rid}/events"
    events = sse(olga, rid)  # follows the run live until it ends
    assert events[-1][0] == "batch:complete" and events[-1][1]["state"] == "succeeded"
    types = [d["type"] for _, d in events]
    assert "run_step" in types and len(types) >= 3
    run = olga.get(f"/api/runs/{rid}").json()["run"]
    assert run["state"] == "succeeded" and run["approved_by"] is None
    listed = olga.get("/api/backups", params={"env": "prod"}).json()
    assert run["result"]["id"] in [b["id"] for b in listed["backups"]], listed


def test_runs_on_one_environment_never_overlap(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    _, srv, tok = service
    olga = srv.client(tok["olga"])
    ids = [
        olga.post("/api/runs", json={"kind": "backup_create", "arguments": {"env": "dev"}}).json()[
            "id"
        ]
        for _ in range(3)
    ]
    done = [wait_run(olga, i) for i in ids]
    assert all(d["state"] == "succeeded" for d in done), done
    spans = sorted((_at(d["started_at"]), _at(d["finished_at"])) for d in done)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, spans  # one at a time: the lock of environment dev


def test_a_blackout_window_refuses_a_write_at_once_and_journals_it(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    p, srv, tok = service
    olga = srv.client(tok["olga"])
    r = olga.post(
        "/api/admin/environment-sync", json={"mode": "full", "source": "dev", "target": "qa"}
    )
    assert r.status_code == 403 and "blackout" in r.json()["message"], r.text
    assert (
        olga.post(
            "/api/admin/environment-sync",
            json={  # reading is fine
                "mode": "verify",
                "source": "dev",
                "target": "qa",
            },
        ).status_code
        == 202
    )
    with psycopg.connect(p.dsns["qa"], autocommit=True) as c:
        row = c.execute(
            "SELECT outcome, arguments FROM pgferry.journal WHERE command = 'sync'"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row is not None and row[0] == "refused" and row[1]["requested_by"] == "olga"


def test_release_saga_then_a_failed_release_compensated_then_professional_migration(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    p, srv, tok = service
    olga, bob = srv.client(tok["olga"]), srv.client(tok["bob"])
    # 1. a release: backup, V2, the rows, verify, health; one approval for the whole plan
    p.write("V2__tags.sql", "CREATE TABLE tags (id bigint PRIMARY KEY);\n")
    r = olga.post("/api/releases", json={"source": "dev", "tables": ["public.items"]})
    assert r.status_code == 202, r.text
    run = r.json()["run"]
    assert run["state"] == "awaiting_approval" and run["env"] == "prod"
    assert [s["step"] for s in run["plan"]["steps"]] == [
        "backup",
        "migrate",
        "sync",
        "verify",
        "health",
    ]
    assert bob.post(f"/api/runs/{run['id']}/approve").status_code == 200
    done = wait_run(bob, run["id"], timeout=120)
    assert done["state"] == "succeeded", done
    assert [(s["step"], s["state"]) for s in done["result"]["steps"]] == [
        ("backup", "done"),
        ("migrate", "done"),
        ("sync", "done"),
        ("verify", "done"),
        ("health", "done"),
    ]
    assert _prod(p, "SELECT count(*) FROM items") == [(300,)]
    # 2. a release whose sync fails (V3's check refuses half the new rows: dead letters,
    # the other half committed): undone newest first, the failed sync's own rows first
    p.write(
        "V3__short.sql",
        "ALTER TABLE items ADD CONSTRAINT v_short CHECK (id <= 350) NOT VALID;\n",
    )
    p.write("U3__short.sql", "ALTER TABLE items DROP CONSTRAINT v_short;\n")
    seed(p.dsns["dev"], 400)
    r = olga.post("/api/releases", json={"source": "dev", "tables": ["public.items"]})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    assert bob.post(f"/api/runs/{rid}/approve").status_code == 200
    failed = wait_run(bob, rid, timeout=120)
    assert failed["state"] == "failed" and failed["error"].startswith("sync"), failed
    steps = {s["step"]: s for s in failed["result"]["steps"]}
    assert steps["sync"]["state"] == "failed"
    assert steps["sync"]["result"]["totals"]["inserted"] == 50
    assert steps["sync"]["compensation"]["action"] == "sync revert"
    assert steps["migrate"]["state"] == "compensated"
    assert steps["migrate"]["compensation"]["action"] == "migrate undo"
    assert steps["backup"]["compensation"]["action"] == "none"
    assert _prod(p, "SELECT count(*) FROM pg_constraint WHERE conname = 'v_short'") == [(0,)]
    assert _prod(p, "SELECT count(*) FROM items") == [(300,)]
    # 3. the professional migration: migrate up (nothing pending), then dev's new rows
    (p.root / "migrations" / "V3__short.sql").unlink()
    (p.root / "migrations" / "U3__short.sql").unlink()
    r = olga.post(
        "/api/admin/professional-migration",
        params={"wait": 30},
        json={"sync": {"source": "dev", "tables": ["public.items"]}},
    )
    assert r.status_code == 200 and r.json()["state"] == "awaiting_approval", r.text
    rid = r.json()["id"]
    assert bob.post(f"/api/runs/{rid}/approve").status_code == 200
    done = wait_run(bob, rid, timeout=120)
    assert done["state"] == "succeeded", done
    data = olga.get(f"/api/runs/{rid}").json()["run"]["data"]
    assert data["migratedCount"] == 100 and data["errors"] == [], data
    assert data["duration"] > 0 and "public.items" in data["report"]
    assert _prod(p, "SELECT count(*) FROM items") == [(400,)]


def test_an_unreachable_environment_opens_its_circuit_breaker_then_calls_fail_fast(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    _, srv, tok = service
    olga = srv.client(tok["olga"])
    r = olga.post(
        "/api/runs", json={"kind": "verify", "arguments": {"source": "dev", "target": "gone"}}
    )
    first = wait_run(olga, r.json()["id"], timeout=60)
    assert first["state"] == "failed" and "cannot connect" in first["error"], first
    envs = {e["name"]: e for e in olga.get("/api/environments").json()["environments"]}
    assert envs["gone"]["breaker"]["state"] == "open", envs["gone"]
    assert envs["gone"]["breaker"]["failures"] >= 1 and envs["dev"]["breaker"]["state"] == "closed"
    t0 = time.monotonic()
    r = olga.post(
        "/api/runs", json={"kind": "verify", "arguments": {"source": "dev", "target": "gone"}}
    )
    second = wait_run(olga, r.json()["id"], timeout=30)
    assert second["state"] == "failed" and "fail fast" in second["error"], second
    assert time.monotonic() - t0 < 10  # no connection tried
    health = olga.get("/api/admin/production-health", params={"env": "gone"}).json()
    assert health["status"] == "critical" and health["breaker"]["state"] == "open"
    assert health["checks"][0]["name"] == "circuit_breaker"
    metrics = olga.get("/metrics").text
    assert 'pgferry_circuit_breaker_open{env="gone"} 1.0' in metrics

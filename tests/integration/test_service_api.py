"""The admin service over HTTP, against a real ``pgferry serve`` process (uvicorn on
127.0.0.1, a free port) and real databases; httpx is the client. One server for the module.

What is asserted: JSON everywhere (404, 401, 403, 422 naming the field), tokens and roles
(401/403 journaled with the caller's address, a limit on failures), Idempotency-Key (one
run; 422 for another body), four eyes (the requester approving is 403, a plan that changed
is 409, a mistyped plan_hash is 409 and not called a change, a rejection keeps its reason),
SSE replayed from the start with the issue's event names, cancel, the dead letters and
retry, /metrics, and 200 concurrent GETs of production-health costing the database one
health run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers import Project
from tests.helpers.service import (
    SECRET,
    Server,
    make_project,
    seed,
    sse,
    tokens,
    wait_run,
)

# one server per module and xdist worker: the tests do not depend on one another's order
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(
    make_db_module: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Project, Server, dict[str, str]]]:
    from pgferry.commands import migrate_run
    from pgferry.config import load_config

    make = make_db_module
    p = make_project(tmp_path_factory.mktemp("svc") / "proj", make, more=("qa",))
    cfg = load_config(p.config)
    for env in ("dev", "prod", "qa"):
        migrate_run.up(cfg, migrate_run.RunOptions(env=env, yes=True))
    seed(p.dsns["dev"], 500)
    toks = tokens(
        p, viewer="viewer", alice="approver", bob="approver", olga="operator", root="admin"
    )
    srv = Server(p).start()
    try:
        yield p, srv, toks
    finally:
        srv.stop()


@pytest.fixture
def srv(service: tuple[Project, Server, dict[str, str]]) -> Server:
    return service[1]


@pytest.fixture
def tok(service: tuple[Project, Server, dict[str, str]]) -> dict[str, str]:
    return service[2]


def _journal(p: Project) -> list[dict[str, Any]]:
    with psycopg.connect(p.dsns["control"], autocommit=True) as c:
        cur = c.execute(
            "SELECT command, outcome, arguments, details FROM pgferry.journal ORDER BY id"
        )
        return [
            dict(zip(["command", "outcome", "arguments", "details"], r, strict=True))
            for r in cur.fetchall()
        ]


def test_liveness_needs_no_token_and_unknown_paths_are_json_404(srv: Server) -> None:
    c = srv.client()
    r = c.get("/api/health")
    assert r.status_code == 200 and r.json()["worker"] == "running"
    r = c.get("/api/no/such/thing")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "NotFound"
    assert c.get("/docs").status_code == 200  # OpenAPI


def _outward_address() -> str | None:
    """This machine's address on its first non-loopback interface (no packet is sent)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
        except OSError:
            return None
        addr = str(s.getsockname()[0])
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def test_serve_binds_to_loopback_by_default(srv: Server) -> None:
    # the helper starts `pgferry serve --port N` with no --host: the default
    import socket

    assert httpx.get(srv.url + "/api/health", timeout=5).status_code == 200
    addr = _outward_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex((addr, srv.port)) != 0, f"pgferry serve answers on {addr}"


def test_tokens_roles_and_refusals_are_json_and_journaled(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    p, srv, tok = service
    anon = srv.client()
    r = anon.get("/api/runs")
    assert r.status_code == 401 and r.json()["error"] == "AuthError"
    r = srv.client(tok["viewer"]).post(
        "/api/admin/environment-sync", json={"mode": "verify", "source": "dev", "target": "prod"}
    )
    assert r.status_code == 403 and "viewer" in r.json()["message"]
    rows = _journal(p)
    refused = [x for x in rows if x["command"] in ("http 401", "http 403")]
    assert {x["command"] for x in refused} >= {"http 401", "http 403"}
    assert all(x["arguments"]["address"] == "127.0.0.1" for x in refused)
    assert all(x["outcome"] == "refused" for x in refused)


def test_validation_errors_are_422_naming_the_field(srv: Server, tok: dict[str, str]) -> None:
    c = srv.client(tok["olga"])
    r = c.post(
        "/api/admin/environment-sync",
        content=b'{"mode": "full", "source": ',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["field"] == "body", r.text
    r = c.post(
        "/api/admin/environment-sync", json={"mode": "sideways", "source": "dev", "target": "prod"}
    )
    assert r.status_code == 422 and r.json()["field"] == "mode", r.text
    r = c.post(
        "/api/admin/environment-sync", json={"mode": "full", "source": "dev", "target": "staging"}
    )
    assert r.status_code == 422 and r.json()["field"] == "target", r.text
    assert "staging" in r.json()["message"]
    r = c.post("/api/runs", json={"kind": "sync", "arguments": {"source": "dev"}})
    assert r.status_code == 422 and r.json()["field"] == "arguments.target", r.text


def test_same_idempotency_key_is_one_run_and_another_body_is_422(
    srv: Server, tok: dict[str, str]
) -> None:
    c = srv.client(tok["olga"])
    body = {"mode": "verify", "source": "dev", "target": "prod", "tables": ["public.items"]}
    h = {"Idempotency-Key": "verify-once-1"}
    first, second = (c.post("/api/admin/environment-sync", json=body, headers=h) for _ in range(2))
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    listed = c.get("/api/runs", params={"kind": "verify", "limit": 500}).json()["runs"]
    assert sum(1 for r in listed if r["id"] == first.json()["id"]) == 1
    other = c.post("/api/admin/environment-sync", json={**body, "tables": []}, headers=h)
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    run = wait_run(c, first.json()["id"])
    assert run["state"] == "problem"  # prod is empty: verify finds the gap (exit 1)


def test_four_eyes_requester_403_plan_changed_409_then_approved_run(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    p, srv, tok = service
    alice, bob = srv.client(tok["alice"]), srv.client(tok["bob"])
    p.write("V2__note.sql", "ALTER TABLE items ADD COLUMN note text;\n")
    p.write("U2__note.sql", "ALTER TABLE items DROP COLUMN note;\n")
    r = alice.post("/api/runs", json={"kind": "migrate_up", "arguments": {"env": "prod"}})
    assert r.status_code == 202, r.text
    run = r.json()["run"]
    assert run["state"] == "awaiting_approval" and run["plan_hash"]
    assert [s["script"] for s in run["plan"]["steps"]] == ["V2__note.sql"]
    assert run["plan"]["steps"][0]["statements"][0]["sql"].startswith("ALTER TABLE items")
    rid, shown = run["id"], run["plan_hash"]
    r = alice.post(f"/api/runs/{rid}/approve")
    assert r.status_code == 403 and "second person" in r.json()["message"]
    # a new migration file appears: the plan bob looked at is not the plan any more
    p.write("V3__flag.sql", "ALTER TABLE items ADD COLUMN flag boolean;\n")
    p.write("U3__flag.sql", "ALTER TABLE items DROP COLUMN flag;\n")
    r = bob.post(f"/api/runs/{rid}/approve", json={"plan_hash": shown})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "PlanChanged" and r.json()["exit_code"] == 4
    assert "changed since it was shown" in r.json()["message"]
    assert r.json()["details"]["plan_hash"] != shown
    now = bob.get(f"/api/runs/{rid}").json()["run"]
    assert now["state"] == "awaiting_approval" and now["approved_by"] is None
    assert [s["script"] for s in now["plan"]["steps"]] == ["V2__note.sql", "V3__flag.sql"]
    r = bob.post(f"/api/runs/{rid}/approve", json={"plan_hash": now["plan_hash"]})
    assert r.status_code == 200 and r.json()["run"]["approved_by"] == "bob", r.text
    done = wait_run(bob, rid)
    assert done["state"] == "succeeded", done
    assert done["result"]["current_version"] == "3"
    audit = [x for x in _journal(p) if x["command"] == "approve"]
    assert [x["outcome"] for x in audit[-2:]] == ["refused", "ok"]
    assert "changed since it was shown" in audit[-2]["details"]["error"], audit
    # prod's own journal: the migration, and on whose word it ran (the worker writes that
    # row once the run is marked finished, so it may come a moment after the state)
    deadline = time.monotonic() + 10
    with psycopg.connect(
        p.dsns["prod"].replace(f" password={SECRET}", ""), autocommit=True
    ) as conn:
        while True:
            rows = conn.execute(
                "SELECT command, outcome, arguments FROM pgferry.journal"
                " WHERE command IN ('migrate up', 'service run') AND"
                " (arguments->>'run' = %s OR command = 'migrate up')"
                " ORDER BY id DESC LIMIT 2",
                [rid],
            ).fetchall()
            if (rows and rows[0][0] == "service run") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert [(c, o) for c, o, _ in rows] == [("service run", "ok"), ("migrate up", "ok")]
    assert rows[0][2]["requested_by"] == "alice" and rows[0][2]["approved_by"] == "bob"


def test_approved_sync_into_prod_streams_its_events_replayed_from_the_start(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    p, srv, tok = service
    olga, bob = srv.client(tok["olga"]), srv.client(tok["bob"])
    r = olga.post(
        "/api/admin/environment-sync",
        json={"mode": "incremental", "source": "dev", "target": "prod", "tables": ["public.items"]},
    )
    assert r.status_code == 202, r.text
    run = r.json()["run"]
    assert run["state"] == "awaiting_approval"
    table = run["plan"]["tables"][0]
    assert table["table"] == "public.items" and table["would_insert"] == 500
    rid = run["id"]
    assert bob.post(f"/api/runs/{rid}/approve").status_code == 200
    done = wait_run(bob, rid)
    assert done["state"] == "succeeded", done
    events = sse(bob, rid)
    names = [n for n, _ in events]
    assert names[-1] == "batch:complete" and set(names[:-1]) == {"batch:progress"}
    types = [d["type"] for _, d in events]
    assert types[0] == "run_step"  # replayed from the start: awaiting approval first
    assert {
        "run_started",
        "table_started",
        "batch_written",
        "table_finished",
        "run_finished",
    } <= set(types)
    percents = [d["percent"] for _, d in events if "percent" in d]  # for progress bars
    assert percents == sorted(percents) and percents[-1] == 100.0 and 0 < len(percents)
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (500,)


def test_rejection_keeps_its_reason(srv: Server, tok: dict[str, str]) -> None:
    olga, alice = srv.client(tok["olga"]), srv.client(tok["alice"])
    # (a waiting run: a full sync into protected prod)
    r = olga.post(
        "/api/runs",
        json={"kind": "sync", "arguments": {"source": "dev", "target": "prod", "mode": "full"}},
    )
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    assert r.json()["state"] == "awaiting_approval"
    assert alice.post(f"/api/runs/{rid}/reject", json={"reason": " "}).status_code == 422
    assert olga.post(f"/api/runs/{rid}/reject", json={"reason": "no"}).status_code == 403
    r = alice.post(f"/api/runs/{rid}/reject", json={"reason": "not during the sale"})
    assert r.status_code == 200
    run = alice.get(f"/api/runs/{rid}").json()["run"]
    assert run["state"] == "rejected" and run["reason"] == "not during the sale"
    assert sse(alice, rid)[-1][0] == "batch:error"


def test_cancel_a_waiting_run_and_retry_a_failed_one(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    """Each cancel and retry, and each refused one, is in the control journal: who, which
    run, from which state."""
    p, srv, tok = service
    olga = srv.client(tok["olga"])
    r = olga.post(
        "/api/runs",
        json={"kind": "backup_restore", "arguments": {"env": "prod", "backup_id": "latest"}},
    )
    assert r.status_code in (400, 422), r.text  # no backup of prod yet: said before queueing
    # (a waiting run: a full sync into protected prod)
    r = olga.post(
        "/api/runs",
        json={"kind": "sync", "arguments": {"source": "dev", "target": "prod", "mode": "full"}},
    )
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    r = olga.post(f"/api/runs/{rid}/cancel")
    assert r.status_code == 200 and r.json()["run"]["state"] == "cancelled"
    assert olga.post(f"/api/runs/{rid}/cancel").status_code == 409
    # a run that fails for good: verify of a table dev does not have
    r = olga.post(
        "/api/runs",
        json={
            "kind": "verify",
            "arguments": {"source": "dev", "target": "prod", "tables": ["public.nope"]},
        },
    )
    failed = wait_run(olga, r.json()["id"])
    assert failed["state"] == "failed" and failed["error"]
    dead = olga.get("/api/dead-letters").json()["runs"]
    assert failed["id"] in [d["id"] for d in dead]
    r = olga.post(f"/api/runs/{failed['id']}/retry")
    assert r.status_code == 202 and r.json()["state"] in ("queued", "running")
    again = wait_run(olga, failed["id"])
    assert again["state"] == "failed" and again["attempts"] == 2
    r = olga.post(f"/api/runs/{rid}/retry")  # a cancelled run, too (it waits for approval)
    assert r.status_code == 202 and r.json()["state"] in ("queued", "awaiting_approval"), r.text
    assert olga.post(f"/api/runs/{again['id']}/cancel").status_code == 409  # it ended
    assert olga.post(f"/api/runs/{rid}/cancel").status_code == 200
    mine = [
        (x["command"], x["outcome"], x["details"].get("run"), x["details"].get("state"))
        for x in _journal(p)
        if x["command"] in ("cancel", "retry") and x["details"].get("run") in (rid, failed["id"])
    ]
    assert mine == [
        ("cancel", "ok", rid, "awaiting_approval"),
        ("cancel", "refused", rid, None),
        ("retry", "ok", failed["id"], "failed"),
        ("retry", "ok", rid, "cancelled"),
        ("cancel", "refused", failed["id"], None),
        ("cancel", "ok", rid, mine[-1][3]),
    ], mine
    assert mine[-1][3] in ("queued", "awaiting_approval")
    assert all(x["arguments"]["caller"] == "olga" for x in _journal(p) if x["command"] == "cancel")


def test_environments_and_reads_hold_no_password(srv: Server, tok: dict[str, str]) -> None:
    c = srv.client(tok["viewer"])
    envs = c.get("/api/environments").json()["environments"]
    assert {e["name"]: e["protected"] for e in envs} == {"dev": False, "prod": True, "qa": False}
    assert all(e["breaker"]["state"] == "closed" for e in envs)
    assert next(e for e in envs if e["name"] == "prod")["production"] is True
    for path in (
        "/api/environments",
        "/api/migrations?env=prod",
        "/api/backups?env=prod",
        "/api/journal?env=prod",
        "/api/runs",
        "/api/audit",
    ):
        r = c.get(path)
        assert r.status_code == 200, (path, r.text)
        assert SECRET not in r.text, path
    assert c.get("/api/migrations?env=prod").json()["env"] == "prod"


def test_metrics_need_a_token_and_expose_health_and_runs(srv: Server, tok: dict[str, str]) -> None:
    assert srv.client().get("/metrics").status_code == 401
    r = srv.client(tok["olga"]).post(
        "/api/runs",
        params={"wait": 60},
        json={"kind": "verify", "arguments": {"source": "dev", "target": "qa"}},
    )
    assert r.status_code == 200 and r.json()["run"]["state"] == "problem", r.text
    text = srv.client(tok["viewer"]).get("/metrics").text
    assert 'pgferry_health_status{env="prod"}' in text
    assert "pgferry_service_runs{" in text and "pgferry_circuit_breaker_open{" in text
    assert "pgferry_service_run_duration_seconds_count{" in text


def _sessions(admin: str, dbname: str) -> int:
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("SELECT pg_stat_force_next_flush()")
        row = c.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", [dbname]
        ).fetchone()
    assert row is not None
    return int(row[0])


def _db(dsn: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])


def test_200_concurrent_production_health_cost_one_health_run(
    service: tuple[Project, Server, dict[str, str]], pg_admin_dsn: str
) -> None:
    """Counted on the server: pg_stat_database.sessions of the environment's database. One
    health run opens a known number of sessions (measured on dev, cold); 200 concurrent
    requests on qa's cold cache must open no more than that (the cache interval is 60 s).
    (qa stands for production here: prod's cache is warm from the other tests.)"""
    p, srv, tok = service
    c = srv.client(tok["viewer"])

    def settle(db: str) -> int:
        time.sleep(1.5)  # the closed sessions' statistics reach the shared counters
        return _sessions(pg_admin_dsn, db)

    dev, prod = _db(p.dsns["dev"]), _db(p.dsns["qa"])
    before = settle(dev)
    r = c.get("/api/admin/production-health", params={"env": "dev"})
    assert r.status_code == 200 and r.json()["cached"] is False
    one_run = settle(dev) - before
    assert one_run >= 1

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=srv.url,
            timeout=60,
            headers={"Authorization": f"Bearer {tok['viewer']}"},
            limits=httpx.Limits(max_connections=200),
        ) as ac:
            return await asyncio.gather(
                *(ac.get("/api/admin/production-health", params={"env": "qa"}) for _ in range(200))
            )

    before = settle(prod)
    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 200
    body = answers[0].json()
    assert set(body) >= {"status", "checks", "tables", "timestamp"}
    assert body["env"] == "qa" and isinstance(body["checks"], list)
    assert sum(1 for a in answers if a.json()["cached"] is False) == 1
    assert settle(prod) - before <= one_run


def test_token_management_by_admin_only(
    service: tuple[Project, Server, dict[str, str]], tmp_path: Path
) -> None:
    p, srv, tok = service
    assert srv.client(tok["alice"]).get("/api/tokens").status_code == 403
    root = srv.client(tok["root"])
    made = root.post("/api/tokens", json={"name": "ci-bot", "role": "operator"})
    assert made.status_code == 201 and made.json()["token"].startswith("pgf_")
    listed = root.get("/api/tokens").json()["tokens"]
    assert "ci-bot" in [t["name"] for t in listed]
    assert all("token" not in t and "hash" not in t for t in listed)
    bot = srv.client(made.json()["token"])
    assert bot.get("/api/runs").status_code == 200
    assert root.delete("/api/tokens/ci-bot").status_code == 200
    # refused within a second or so (found tokens are cached for one second)
    deadline = time.monotonic() + 3
    while bot.get("/api/runs").status_code != 401:
        assert time.monotonic() < deadline, "a revoked token still works"
        time.sleep(0.05)
    # the CLI prints a token once and lists none
    r = p.run("token", "list", "--json")
    assert r.code == 0 and "pgf_" not in r.out


def test_no_secret_in_any_answer_event_or_log(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    p, srv, tok = service
    c = srv.client(tok["viewer"])
    for run in c.get("/api/runs", params={"limit": 500}).json()["runs"]:
        assert SECRET not in c.get(f"/api/runs/{run['id']}").text
    with psycopg.connect(p.dsns["control"], autocommit=True) as conn:
        stored = conn.execute(
            "SELECT string_agg(data::text, '') FROM pgferry_control.run_events"
        ).fetchone()
    assert stored is not None and SECRET not in (stored[0] or "")
    assert SECRET not in srv.log()


def test_a_plan_hash_that_is_not_the_shown_plans_is_409_and_not_a_plan_change(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    p, srv, tok = service
    alice, bob = srv.client(tok["alice"]), srv.client(tok["bob"])
    r = alice.post("/api/runs", json={"kind": "migrate_up", "arguments": {"env": "prod"}})
    assert r.status_code == 202, r.text
    run = r.json()["run"]
    rid, shown = run["id"], run["plan_hash"]
    assert run["state"] == "awaiting_approval" and shown
    # bob mistypes the hash he looked at: the plan did not change, his hash is wrong
    typo = shown[:-1] + ("0" if shown[-1] != "0" else "1")
    r = bob.post(f"/api/runs/{rid}/approve", json={"plan_hash": typo})
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["error"] == "PlanHashMismatch" and body["exit_code"] == 4, body
    assert body["message"].startswith(f"the plan_hash sent ({typo}) is not the hash"), body
    assert f"({shown})" in body["message"], body
    assert "has not changed since it was shown" in body["message"], body
    assert body["details"] == {"plan_hash": shown, "sent_plan_hash": typo}
    now = bob.get(f"/api/runs/{rid}").json()["run"]
    assert now["state"] == "awaiting_approval" and now["approved_by"] is None
    assert now["plan_hash"] == shown  # the run waits with the plan it showed
    refused = [x for x in _journal(p) if x["command"] == "approve"][-1]
    assert refused["outcome"] == "refused", refused  # in the control journal, as others are
    assert refused["details"]["error"].startswith(f"the plan_hash sent ({typo})"), refused
    # with the hash of the plan shown, the same approver's approval goes through
    r = bob.post(f"/api/runs/{rid}/approve", json={"plan_hash": shown})
    assert r.status_code == 200 and r.json()["run"]["approved_by"] == "bob", r.text
    assert wait_run(bob, rid)["state"] == "succeeded"

"""The admin service's promises under attack, against real ``pgferry serve`` (and worker)
processes and real databases: what a caller sends (a forwarded-for header, another spelling
of a name, a schedule's Idempotency-Key, a body without a token) cannot stand in for a
second person's approval, hide the caller or stop a schedule; and races held open with row
locks (a cancel as the worker starts the run, two approvers at once) end as the answers
said.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.helpers import Project, wait_for
from tests.helpers.service import Server, make_project, seed, tokens, wait_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(
    make_db_module: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Project, Server, dict[str, str]]]:
    from pgferry.commands import migrate_run
    from pgferry.config import load_config

    p = make_project(tmp_path_factory.mktemp("sec") / "proj", make_db_module)
    cfg = load_config(p.config)
    for env in ("dev", "prod"):
        migrate_run.up(cfg, migrate_run.RunOptions(env=env, yes=True))
    seed(p.dsns["dev"], 50)
    toks = tokens(p, olga="operator", bob="approver", root="admin")
    srv = Server(p).start()
    try:
        yield p, srv, toks
    finally:
        srv.stop()


def _prod_rows(p: Project) -> int:
    with psycopg.connect(p.dsns["prod"], autocommit=True) as c:
        row = c.execute("SELECT count(*) FROM items").fetchone()
    assert row is not None
    return int(row[0])


def test_a_forwarded_for_header_is_no_command_line_consent(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    """``requested_from = 'cli'`` is how a ``pgferry release --yes`` run carries its
    consent; an HTTP caller naming itself ``cli`` in X-Forwarded-For (trusted from
    127.0.0.1) must not get it: cancelled and retried, its run still waits for approval."""
    p, srv, tok = service
    olga = srv.client(tok["olga"])
    r = olga.post(
        "/api/runs",
        json={"kind": "sync", "arguments": {"source": "dev", "target": "prod", "mode": "full"}},
        headers={"X-Forwarded-For": "cli"},
    )
    assert r.status_code == 202 and r.json()["state"] == "awaiting_approval", r.text
    rid = r.json()["id"]
    assert olga.post(f"/api/runs/{rid}/cancel").status_code == 200
    assert olga.post(f"/api/runs/{rid}/retry").status_code == 202
    run = wait_run(olga, rid, states=("awaiting_approval", "succeeded", "problem", "failed"))
    assert run["state"] == "awaiting_approval", run
    assert run["approved_by"] is None
    assert _prod_rows(p) == 0


def test_a_forwarded_for_header_neither_hides_the_caller_nor_escapes_the_failure_limit(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    """Every caller of a service bound to 127.0.0.1 is local: a header it sends names no
    other address. Wrong tokens, each 'from' another address, are counted against the
    real one (``auth_failures = 5``) and journaled with it. (A server of its own: the
    limit is per process, and would block the module's other tests.)"""
    p, _, _ = service
    own = Server(p).start()
    try:
        c = own.client("pgf_wrong")
        codes = [
            c.get("/api/runs", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code
            for i in range(1, 8)
        ]
    finally:
        own.stop()
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429], codes
    with psycopg.connect(p.dsns["control"], autocommit=True) as conn:
        addrs = {
            r[0]
            for r in conn.execute(
                "SELECT arguments->>'address' FROM pgferry.journal WHERE command = 'http 401'"
            )
        }
    assert addrs == {"127.0.0.1"}, addrs


def test_the_requester_cannot_approve_under_another_spelling_of_their_name(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    """Four eyes compare people, not spellings: a token named "Bob" or "bob " is not made
    while "bob" is live (422 naming the name), and one made before that rule (here: put in
    by SQL) cannot approve bob's run (403)."""
    import hashlib

    p, srv, tok = service
    root, bob = srv.client(tok["root"]), srv.client(tok["bob"])
    for name in ("Bob", "bob ", " BOB"):
        r = root.post("/api/tokens", json={"name": name, "role": "approver"})
        assert r.status_code == 422 and r.json()["field"] == "name", (name, r.text)
    secret = "pgf_an_old_token_of_bob_in_capitals_0000000000"
    with psycopg.connect(p.dsns["control"], autocommit=True) as c:
        c.execute(
            "INSERT INTO pgferry_control.tokens (name, role, hash) VALUES ('Bob ', 'approver', %s)",
            [hashlib.sha256(secret.encode()).hexdigest()],
        )
    r = bob.post(
        "/api/runs",
        json={"kind": "sync", "arguments": {"source": "dev", "target": "prod", "mode": "full"}},
    )
    assert r.status_code == 202 and r.json()["state"] == "awaiting_approval", r.text
    rid = r.json()["id"]
    r = srv.client(secret).post(f"/api/runs/{rid}/approve")
    assert r.status_code == 403 and "second person" in r.json()["message"], r.text
    run = bob.get(f"/api/runs/{rid}").json()["run"]
    assert run["state"] == "awaiting_approval" and run["approved_by"] is None
    assert bob.post(f"/api/runs/{rid}/cancel").status_code == 200


def test_a_write_without_a_token_is_401_whatever_its_body(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    """The token is judged before the body is read: a POST with no token and a body that is
    not JSON is 401 (journaled with the address), not a 422 that tells an anonymous caller
    about the route's body and leaves no trace."""
    p, srv, _ = service
    anon = srv.client()
    r = anon.post(
        "/api/runs/nosuch/approve",
        content=b'{"plan_hash": ',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 401 and r.json()["error"] == "AuthError", r.text
    with psycopg.connect(p.dsns["control"], autocommit=True) as conn:
        row = conn.execute(
            "SELECT arguments->>'address', details->>'method' FROM pgferry.journal"
            " WHERE command = 'http 401' AND details->>'path' = '/api/runs/nosuch/approve'"
        ).fetchone()
    assert row == ("127.0.0.1", "POST"), row


def test_a_body_past_the_limit_is_413_before_it_is_held(
    service: tuple[Project, Server, dict[str, str]],
) -> None:
    """The dashboard's login reads a body before any token is known: one that says it is
    bigger than the service accepts is 413 at once (any path); one that does not say
    (chunked) is stopped at the limit, with or without a token; the server goes on."""
    from pgferry.server.body_limit import MAX_BODY

    _, srv, tok = service
    anon, olga = srv.client(), srv.client(tok["olga"])
    big = b"x" * (MAX_BODY + 1)
    r = anon.post("/api/sessions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "BodyTooLarge", r.text
    assert r.json()["message"] == (
        f"the request body is {MAX_BODY + 1:,} bytes; the service accepts at most "
        f"{MAX_BODY:,} bytes"
    )

    def chunked() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    for client, path, kind in (
        (anon, "/login", "application/x-www-form-urlencoded"),
        (olga, "/api/runs", "application/json"),
    ):
        r = client.post(path, content=chunked(), headers={"content-type": kind})
        assert r.status_code == 413, (path, r.text)
        assert f"over {MAX_BODY:,} bytes" in r.json()["message"], r.text
    r = olga.post("/api/runs", json={"kind": "health", "arguments": {"env": "dev"}})
    assert r.status_code == 202, r.text  # a body under the limit, as before


#: sessions of the control database waiting on a lock, whose statement holds this text
WAITING = (
    "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock' AND query LIKE %s"
)


def test_a_run_cancelled_as_its_worker_picks_it_up_stays_cancelled(
    make_db: Callable[..., str], tmp_path: Path
) -> None:
    """The cancel of a queued run lands just as the worker has read the run and is about to
    start it: a first sync into qa holds the environment (the test holds qa's table), a
    second waits queued behind it; the test holds the second's row while its cancel, then
    the worker's start of it, queue up on the row. The cancel said 'cancelled' (200): the
    run must end cancelled and never start (not be started over it, nor left running)."""
    import threading

    from pgferry.commands import migrate_run
    from pgferry.config import load_config
    from tests.helpers.service import run_events

    p = make_project(tmp_path / "proj", make_db, more=("qa",))
    cfg = load_config(p.config)
    for env in ("dev", "qa"):
        migrate_run.up(cfg, migrate_run.RunOptions(env=env, yes=True))
    seed(p.dsns["dev"], 50)
    srv = Server(p).start()
    try:
        olga = srv.client(tokens(p, olga="operator")["olga"])
        sync = {"kind": "sync", "arguments": {"source": "dev", "target": "qa", "mode": "full"}}
        answers: list[httpx.Response] = []
        with (
            psycopg.connect(p.dsns["qa"]) as table,
            psycopg.connect(p.dsns["control"]) as row,
        ):
            table.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
            first = olga.post("/api/runs", json=sync).json()["id"]
            wait_for(p.dsns["qa"], WAITING, ["%items%"], timeout=30)
            r = olga.post("/api/runs", json=sync)
            assert r.status_code == 202 and r.json()["state"] == "queued", r.text
            rid = r.json()["id"]
            row.execute("SELECT 1 FROM pgferry_control.runs WHERE id = %s FOR UPDATE", [rid])
            cancel = threading.Thread(
                target=lambda: answers.append(olga.post(f"/api/runs/{rid}/cancel"))
            )
            cancel.start()
            # the cancel's update waits (it sets cancel_requested); then the first sync
            # ends and the worker's start of the second (it counts the attempt) waits
            wait_for(p.dsns["control"], WAITING, ['%"cancel_requested" = %'], timeout=20)
            table.rollback()
            wait_for(p.dsns["control"], WAITING, ['%"attempts"%'], timeout=60)
            time.sleep(0.5)
            row.commit()
        cancel.join(20)
        assert answers and answers[0].status_code == 200, answers
        assert answers[0].json()["run"]["state"] == "cancelled"
        assert wait_run(olga, first)["state"] == "succeeded"
        time.sleep(3)  # the worker has had its chance to start it
        run = olga.get(f"/api/runs/{rid}").json()["run"]
        types = [e["type"] for e in run_events(p, rid)]
        assert run["state"] == "cancelled" and "run_started" not in types, (run, types)
    finally:
        srv.stop()


def test_a_plan_changed_under_a_racing_approval_does_not_ride_on_it(
    make_db: Callable[..., str], tmp_path: Path
) -> None:
    """Two approvers at once: bob approves the plan he saw (V2); meanwhile V3 appears and
    root's approval of the same run finds the plan changed. The test holds the run's row
    while bob's approval, then root's refusal, queue up on it. Bob's approval is of V2
    alone: V3 must not run on it (the run waits for an approval of the new plan)."""
    import threading

    from pgferry.commands import migrate_run
    from pgferry.config import load_config

    p = make_project(tmp_path / "proj", make_db)
    migrate_run.up(load_config(p.config), migrate_run.RunOptions(env="prod", yes=True))
    toks = tokens(p, olga="operator", bob="approver", root="admin")
    srv = Server(p).start()
    try:
        olga, bob, root = (srv.client(toks[n]) for n in ("olga", "bob", "root"))
        p.write("V2__a.sql", "CREATE TABLE a (id int PRIMARY KEY);\n")
        r = olga.post("/api/runs", json={"kind": "migrate_up", "arguments": {"env": "prod"}})
        assert r.status_code == 202 and r.json()["state"] == "awaiting_approval", r.text
        rid, shown = r.json()["id"], r.json()["run"]["plan_hash"]
        answers: dict[str, httpx.Response] = {}

        def approve(name: str, c: httpx.Client) -> threading.Thread:
            t = threading.Thread(
                target=lambda: answers.__setitem__(
                    name, c.post(f"/api/runs/{rid}/approve", json={"plan_hash": shown})
                )
            )
            t.start()
            return t

        with psycopg.connect(p.dsns["control"]) as row:
            row.execute("SELECT 1 FROM pgferry_control.runs WHERE id = %s FOR UPDATE", [rid])
            first = approve("bob", bob)
            wait_for(p.dsns["control"], WAITING, ['%"approved_at" = now()%'], timeout=30)
            p.write("V3__b.sql", "CREATE TABLE b (id int PRIMARY KEY);\n")
            second = approve("root", root)
            wait_for(p.dsns["control"], WAITING, ['%"plan" = %'], timeout=30)
            row.commit()
        first.join(30)
        second.join(30)
        assert answers["bob"].status_code == 200, answers["bob"].text
        assert answers["root"].status_code == 409, answers["root"].text
        run = wait_run(bob, rid, states=("awaiting_approval", "succeeded", "failed"))
        with psycopg.connect(p.dsns["prod"], autocommit=True) as c:
            made = c.execute("SELECT to_regclass('b') IS NOT NULL").fetchone()
        assert made == (False,), f"V3 ran on an approval of V2 alone: {run}"
        assert run["state"] == "awaiting_approval", run
    finally:
        srv.stop()


HEALTH_EVERY_2S = """
[[schedule]]
name = "health-dev"
cron = "* * * * * */2"
operation = "health"
env = "dev"
"""


def test_a_schedules_idempotency_keys_are_not_for_callers(
    make_db: Callable[..., str], tmp_path: Path
) -> None:
    """A schedule's run is made with the key ``schedule:NAME:TIMESTAMP`` (its cron tick): a
    caller who sent those keys first (the ticks are known in advance) made the schedule's
    ticks find another request under them and fail, so the scheduled runs did not happen.
    Such a key is 422 naming Idempotency-Key, and the schedule keeps running."""
    from pgferry.commands import migrate_run
    from pgferry.config import load_config

    p = make_project(tmp_path / "proj", make_db, extra=HEALTH_EVERY_2S)
    migrate_run.up(load_config(p.config), migrate_run.RunOptions(env="dev", yes=True))
    olga = tokens(p, olga="operator")["olga"]
    srv = Server(p).start()
    try:
        c = srv.client(olga)
        now = int(time.time())
        ticks = [t for t in range(now + 3, now + 8) if t % 2 == 0]  # two or three ticks
        codes = [
            c.post(
                "/api/runs",
                json={"kind": "verify", "arguments": {"source": "dev", "target": "dev"}},
                headers={"Idempotency-Key": f"schedule:health-dev:{t}"},
            ).status_code
            for t in ticks
        ]
        time.sleep(max(0.0, ticks[-1] + 2 - time.time()))
        with psycopg.connect(p.dsns["control"], autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pgferry_control.runs WHERE schedule = 'health-dev'"
                " AND idempotency_key = ANY(%s)",
                [[f"schedule:health-dev:{t}" for t in ticks]],
            ).fetchone()
        assert row is not None and row[0] >= len(ticks) - 1, (row, ticks, codes)
        assert codes == [422] * len(ticks), codes
    finally:
        srv.stop()

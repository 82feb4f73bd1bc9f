"""``GET /api/runs`` is answered from kept answers only while no run changed: against a real
``pgferry serve --no-worker`` process and its real control database.

What is asserted: a run created or changed is in the very next listing, whoever changed
it — the server itself (a POST), this test's process through pgferry's own code
(:mod:`pgferry.jobs.runs`, as a ``pgferry worker`` or ``pgferry release`` elsewhere
writes), or SQL typed into the control database — also while other clients keep the
listing busy; a filtered listing follows too; every role reads the same fresh runs and
a wrong token is refused however warm the kept answers are; the short way past FastAPI's
routing answers the very bytes the route does; with the control database
refusing connections the answer is 503, never a kept one, and fresh again once it is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgferry.config import load_config
from pgferry.jobs import runs
from pgferry.jobs.control import Control
from tests.helpers import Project
from tests.helpers.service import Server, make_project, tokens

pytestmark = pytest.mark.slow

Setup = tuple[Project, Server, dict[str, str], Control]


@pytest.fixture(scope="module")
def setup(
    make_db_module: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    p = make_project(tmp_path_factory.mktemp("svcache") / "proj", make_db_module)
    toks = tokens(p, viewer="viewer", olga="operator", root="admin")
    srv = Server(p, args=("--no-worker",)).start()  # runs stay as they are written
    ctl = Control(load_config(p.config))
    try:
        yield p, srv, toks, ctl
    finally:
        ctl.close()
        srv.stop()


def _listed(c: Any, **params: Any) -> list[dict[str, Any]]:
    r = c.get("/api/runs", params=params)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["runs"]
    return out


def _by_hand(p: Project, query: str, args: list[Any]) -> None:
    with psycopg.connect(p.dsns["control"], autocommit=True) as c:
        c.execute(query, args)


def _new_run(ctl: Control, who: str = "elsewhere") -> runs.ServiceRun:
    run, _ = runs.create(
        ctl,
        kind="verify",
        env="dev",
        arguments={"source": "dev", "target": "prod", "tables": []},
        requested_by=who,
        state="queued",
    )
    return run


def test_a_run_made_or_changed_anywhere_is_in_the_very_next_listing(setup: Setup) -> None:
    p, srv, tok, ctl = setup
    c, olga = srv.client(tok["viewer"]), srv.client(tok["olga"])
    before = _listed(c)
    assert _listed(c) == before  # nothing changed: the same answer
    # made by the server itself
    r = olga.post("/api/runs", json={"kind": "health", "arguments": {"env": "dev"}})
    assert r.status_code == 202, r.text
    assert _listed(c)[0]["id"] == r.json()["id"]
    # made and changed by another process, through pgferry's own code
    run = _new_run(ctl)
    assert _listed(c)[0]["id"] == run.id
    assert _listed(c, state="queued")[0]["id"] == run.id
    runs.update(ctl, run.id, state="running", started_at="now()")
    assert _listed(c)[0]["state"] == "running"
    assert run.id not in [x["id"] for x in _listed(c, state="queued")]
    runs.update(ctl, run.id, state="succeeded", exit_code=0, finished_at="now()")
    top = _listed(c)[0]
    assert (top["id"], top["state"], top["exit_code"]) == (run.id, "succeeded", 0)
    # changed and removed by SQL typed into the control database
    _by_hand(
        p,
        "UPDATE pgferry_control.runs SET state = 'failed', error = 'by hand' WHERE id = %s",
        [run.id],
    )
    assert (_listed(c)[0]["state"], _listed(c)[0]["error"]) == ("failed", "by hand")
    assert _listed(c, state="failed", env="dev")[0]["id"] == run.id
    _by_hand(p, "DELETE FROM pgferry_control.runs WHERE id = %s", [run.id])
    assert run.id not in [x["id"] for x in _listed(c)]
    assert run.id not in [x["id"] for x in _listed(c, state="failed", env="dev")]


def test_reads_its_writes_while_other_clients_keep_the_listing_busy(setup: Setup) -> None:
    _, srv, tok, ctl = setup
    run = _new_run(ctl, "busy")
    stop = threading.Event()
    errors: list[str] = []

    def hammer() -> None:
        with srv.client(tok["viewer"]) as h:
            while not stop.is_set():
                r = h.get("/api/runs", params={"limit": 5})
                if r.status_code != 200:
                    errors.append(r.text)

    others = [threading.Thread(target=hammer) for _ in range(6)]
    for t in others:
        t.start()
    try:
        c = srv.client(tok["viewer"])
        for attempt in range(1, 41):
            runs.update(ctl, run.id, attempts=attempt)
            top = _listed(c, limit=5)[0]
            assert (top["id"], top["attempts"]) == (run.id, attempt)
    finally:
        stop.set()
        for t in others:
            t.join(30)
    assert not errors, errors[:3]


def test_every_role_reads_the_fresh_runs_and_a_wrong_token_never_a_kept_answer(
    setup: Setup,
) -> None:
    _, srv, tok, ctl = setup
    viewer, admin = srv.client(tok["viewer"]), srv.client(tok["root"])
    assert _listed(viewer) == _listed(admin)  # both answers kept now
    run = _new_run(ctl, "roles")
    for c in (viewer, admin, viewer):
        assert _listed(c)[0]["id"] == run.id
    assert _listed(viewer) == _listed(admin)
    for who in (srv.client("pgf_wrong"), srv.client()):
        r = who.get("/api/runs")
        assert r.status_code == 401 and "runs" not in r.json(), r.text


def test_the_short_way_and_the_route_answer_the_same_bytes(setup: Setup) -> None:
    # a known token with a plain query is answered before FastAPI's routing; a query the
    # route has to judge goes to it (an unknown parameter: ignored there, as FastAPI does)
    _, srv, tok, ctl = setup
    _new_run(ctl, "bytes")
    c = srv.client(tok["viewer"])
    short = c.get("/api/runs", params={"limit": 3, "env": "dev"})
    routed = c.get("/api/runs", params={"limit": 3, "env": "dev", "page": "x"})
    assert short.status_code == routed.status_code == 200
    assert short.content == routed.content
    assert short.headers["content-type"] == routed.headers["content-type"]
    for bad in ("0", "501", "x", "-1"):
        r = c.get("/api/runs", params={"limit": bad})
        assert r.status_code == 422 and r.json()["field"] == "limit", r.text
    # production's health, once its report is in the cache: the same bytes both ways too
    first = c.get("/api/admin/production-health")
    assert first.status_code == 200, first.text
    short = c.get("/api/admin/production-health")
    routed = c.get("/api/admin/production-health", params={"page": "x"})
    assert short.status_code == routed.status_code == 200
    assert short.json()["cached"] is True and short.content == routed.content
    r = c.get("/api/admin/production-health", params={"env": "nowhere"})
    assert r.status_code == 422 and r.json()["field"] == "env", r.text


def test_no_kept_answer_while_the_control_database_refuses_then_fresh_again(
    setup: Setup, pg_admin_dsn: str
) -> None:
    _, srv, tok, ctl = setup
    c = srv.client(tok["viewer"])
    kept = _listed(c)
    name = psycopg.conninfo.conninfo_to_dict(ctl.dsn)["dbname"]
    assert isinstance(name, str)
    db = sql.Identifier(name)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        try:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(db))
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                " AND pid <> pg_backend_pid()",
                [name],
            )
            r = c.get("/api/runs")
            assert r.status_code == 503 and r.json()["error"] == "Unreachable", r.text
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(db))
    ctl.close()  # this process's pooled connections were ended too
    run = _new_run(ctl, "after")
    deadline = time.monotonic() + 30
    while (r := c.get("/api/runs")).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.1)  # the server's pool replaces its ended connections
    assert r.status_code == 200, r.text
    now = r.json()["runs"]
    assert now[0]["id"] == run.id and now[1:] == kept[: len(now) - 1]

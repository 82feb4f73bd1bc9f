"""Health under real faults: a stopped server, a role without pg_read_all_stats, a session
holding a lock, a table emptied, a table the role may not read."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as q

from pgferry.pg import embedded
from tests.helpers import ROLE, Project, Result, sql, wait_for, write_project
from tests.helpers.health import SCHEMA, checks, health, samples

TABLE = '[health.tables."public.cases"]\noptimal = 3\ndegraded_below = 1\n'


@pytest.fixture
def prod(tmp_path: Path, make_db: Callable[..., str]) -> Project:
    p = write_project(
        tmp_path / "p",
        {"prod": make_db("prod")},
        protected=(),
        extra='[health]\ncache_interval = "0s"\n' + TABLE,
    )
    sql(p.dsns["prod"], SCHEMA)
    sql(p.dsns["prod"], "INSERT INTO cases (title) SELECT 'c' || g FROM generate_series(1, 5) g")
    return p


@pytest.mark.slow
def test_server_stopped_is_critical_within_the_timeout_without_a_traceback(tmp_path: Path) -> None:
    """prod lives on its own embedded server, which is stopped between two runs."""
    root = Path(tempfile.mkdtemp(prefix="pghd-", dir="/tmp"))
    try:
        su = embedded.superuser_dsn(root)
        with psycopg.connect(su, autocommit=True) as c:
            embedded.ensure_role(c, ROLE)
            c.execute(q.SQL("CREATE DATABASE hdown OWNER {}").format(q.Identifier(ROLE)))
        # (a timeout of 1 s, not the default 3 s: each run below waits for all of it)
        p = write_project(
            tmp_path / "p",
            {"prod": embedded.role_dsn(su, ROLE, "hdown")},
            protected=(),
            extra='[health]\ntimeout = "1s"\n',
        )
        r = p.run("health", "--env", "prod", "--json")
        assert r.json["checks"][0]["status"] == "optimal", r.out + r.err
        embedded.stop(root)
        for args in (("--json",), (), ("--format", "prometheus")):
            t0 = time.monotonic()
            r = p.run("health", "--env", "prod", *args)
            took = time.monotonic() - t0
            assert r.code == 1, r.out + r.err
            assert "Traceback" not in r.err + r.out and r.err == "", r.err
            print(args, f"{took:.2f} s in all")
            if args == ("--json",):
                first = r.json["checks"][0]
                assert (r.json["status"], first["name"], first["status"]) == (
                    "critical",
                    "reachability",
                    "critical",
                )
                assert first["message"].startswith("prod did not answer: cannot connect to ")
                assert "password" not in first["message"]
                assert r.json["duration_ms"] <= 1000 + 1000, r.json["duration_ms"]
                assert {c["status"] for c in r.json["checks"][1:]} == {"unknown"}
            elif args == ():
                assert r.out.startswith("prod: critical (")
                assert "check that the server is running" in r.out
            else:
                assert samples(r.out)["pgferry_health_status"] == [({"env": "prod"}, 3.0)]
                assert "pgferry_db_latency_seconds{" not in r.out
    finally:
        embedded.stop(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stats_role(pg_admin_dsn: str) -> Iterator[str]:
    """A login role that is a member of pg_read_all_stats (dropped afterwards)."""
    name = f"pgf_stats_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        c.execute(
            q.SQL("CREATE ROLE {} LOGIN IN ROLE pg_read_all_stats").format(q.Identifier(name))
        )
    yield name
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        c.execute(q.SQL("DROP ROLE {}").format(q.Identifier(name)))


def test_a_role_without_pg_read_all_stats_gets_unknown_with_the_grant(
    prod: Project, pg_admin_dsn: str, stats_role: str, cli: Callable[..., Result]
) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(prod.dsns["prod"])["dbname"]
    other = psycopg.connect(embedded.role_dsn(pg_admin_dsn, "postgres", str(dbname)))
    try:
        other.execute("SELECT 1")  # a session of another role, idle in its transaction
        c = checks(health(cli, prod, "prod", "--json"))
        for name in ("long_transactions", "idle_in_transaction"):
            assert c[name]["status"] == "unknown", c[name]
            assert "session(s) of other roles are hidden from pgferry_test" in c[name]["message"]
            assert c[name]["fix"].startswith("GRANT pg_read_all_stats TO pgferry_test")
        assert c["blocked_sessions"]["status"] == "optimal"  # pg_locks needs no privilege
        p2 = write_project(
            prod.root.parent / "p2",
            {"prod": embedded.role_dsn(pg_admin_dsn, stats_role, str(dbname))},
            protected=(),
        )
        wait_for(
            pg_admin_dsn,
            "SELECT clock_timestamp() - state_change >= interval '1 s'"
            " FROM pg_stat_activity WHERE pid = %s",
            [other.info.backend_pid],
            what="the other session idle in its transaction for a second",
        )
        c = checks(health(cli, p2, "prod", "--json"))
        for name in ("long_transactions", "idle_in_transaction"):
            assert c[name]["status"] == "optimal", c[name]
            assert c[name]["value"].endswith(" s"), c[name]  # it sees the other session
    finally:
        other.close()


def _hold(dsn: str, started: threading.Event, release: threading.Event, pid: list[int]) -> None:
    with psycopg.connect(dsn) as c:
        pid.append(c.info.backend_pid)
        c.execute("UPDATE cases SET title = 'held' WHERE id = 1")
        started.set()
        release.wait(60)
        c.rollback()


def test_a_session_holding_a_lock_makes_blocked_sessions_degraded_naming_it(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    # the realistic default (30 s) for dev; 2 s for prod, so the test need not wait 40 s
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "prod": make_db("prod")},
        protected=(),
        extra='[health]\ncache_interval = "0s"\n[health.environments.prod]\nblocked_warn = "2s"\n',
    )
    sql(p.dsns["prod"], SCHEMA)
    sql(p.dsns["prod"], "INSERT INTO cases (title) VALUES ('a')")
    started, release, holder = threading.Event(), threading.Event(), []  # type: ignore[var-annotated]
    t = threading.Thread(target=_hold, args=(p.dsns["prod"], started, release, holder))
    t.start()
    waiter = psycopg.connect(p.dsns["prod"], autocommit=True)
    w = threading.Thread(
        target=lambda: waiter.execute("UPDATE cases SET title = 'waiting' WHERE id = 1")
    )
    try:
        assert started.wait(30)
        w.start()
        _wait_for_waiter(p.dsns["prod"])
        c = checks(health(cli, p, "prod", "--json"))["blocked_sessions"]
        assert c["status"] == "optimal", c  # not 2 s yet
        wait_for(
            p.dsns["prod"],
            "SELECT count(*) FROM pg_locks WHERE NOT granted"
            " AND clock_timestamp() - waitstart >= interval '2 s'",
            what="the UPDATE waiting for 2 s",
        )  # as the check reads it
        r = health(cli, p, "prod", "--json")
        c = checks(r)["blocked_sessions"]
        assert r.code == 1 and c["status"] == "degraded", c
        assert f"for a lock held by pid {holder[0]}" in c["message"], c
        assert f"pg_terminate_backend({holder[0]})" in c["fix"]
        assert "UPDATE cases SET title = 'waiting'" in c["message"]
        assert c["threshold"] == "waiting > 2s"
        r = health(cli, p, "prod")
        assert f"for a lock held by pid {holder[0]}" in r.out
    finally:
        release.set()
        t.join(30)
        w.join(30)
        waiter.close()


def _wait_for_waiter(dsn: str) -> None:
    deadline = time.monotonic() + 30
    with psycopg.connect(dsn, autocommit=True) as c:
        while not c.execute("SELECT 1 FROM pg_locks WHERE NOT granted").fetchone():
            assert time.monotonic() < deadline, "the second UPDATE never waited"
            time.sleep(0.05)


def test_a_table_emptied_is_degraded_naming_the_table_and_the_threshold(
    prod: Project, cli: Callable[..., Result]
) -> None:
    assert health(cli, prod).code == 0
    sql(prod.dsns["prod"], "DELETE FROM cases")
    r = health(cli, prod)
    assert r.code == 1
    assert r.out.startswith("prod: degraded (")
    assert "public.cases has 0 rows, below degraded_below = 1" in r.out
    r = health(cli, prod, "prod", "--json")
    c = checks(r)["rows:public.cases"]
    assert (r.json["status"], c["status"], c["value"]) == ("degraded", "degraded", "0")
    assert c["threshold"] == "optimal >= 3, degraded < 1"
    m = samples(health(cli, prod, "prod", "--format", "prometheus").out)
    assert ({"env": "prod", "table": "public.cases"}, 0.0) in m["pgferry_table_rows"]
    assert ({"env": "prod", "check": "rows:public.cases"}, 2.0) in m["pgferry_check_status"]


def test_a_table_the_role_cannot_read_is_unknown_with_the_grant(
    prod: Project, cli: Callable[..., Result]
) -> None:
    sql(prod.dsns["prod"], "REVOKE SELECT ON cases FROM pgferry_test")
    c = checks(health(cli, prod, "prod", "--json"))["rows:public.cases"]
    assert c["status"] == "unknown", c
    assert "permission denied" in c["message"]
    assert c["fix"] == "GRANT SELECT ON public.cases TO pgferry_test"


def test_a_count_past_statement_timeout_is_unknown_and_estimate_is_free(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(
        tmp_path / "p",
        {"prod": make_db("prod")},
        protected=(),
        extra=(
            '[health]\ncache_interval = "0s"\nstatement_timeout = "100ms"\n'
            '[health.tables."public.slow"]\ndegraded_below = 1\n'
            '[health.tables."public.cases"]\ndegraded_below = 1\nestimate = true\n'
        ),
    )
    sql(p.dsns["prod"], SCHEMA)
    sql(p.dsns["prod"], "CREATE VIEW slow AS SELECT 1 AS x FROM pg_sleep(0.5)")
    sql(p.dsns["prod"], "INSERT INTO cases (title) SELECT 'c' || g FROM generate_series(1, 50) g;")
    c = checks(health(cli, p, "prod", "--json"))
    assert c["rows:public.slow"]["status"] == "unknown", c["rows:public.slow"]
    assert "statement timeout" in c["rows:public.slow"]["message"]
    assert 'estimate = true in [health.tables."public.slow"]' in c["rows:public.slow"]["fix"]
    assert c["rows:public.cases"]["status"] == "unknown"  # never analyzed: no estimate
    assert "run ANALYZE" in c["rows:public.cases"]["message"]
    sql(p.dsns["prod"], "ANALYZE cases")
    rows = checks(health(cli, p, "prod", "--json"))["rows:public.cases"]
    assert (rows["status"], rows["value"]) == ("optimal", "~50"), rows

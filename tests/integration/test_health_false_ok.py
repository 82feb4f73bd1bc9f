"""Health must not say "fine" (or "0 rows") when the truth is unknown or bad: rows hidden by
row-level security, a journal the role may not read, a refused sync between failures, an open
circuit breaker on /metrics, PostgreSQL 13's reltuples and pg_locks, sequences behind integer
defaults, dead letters and backups dated by another machine's clock, a sibling database near
wraparound, a forgotten prepared transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import psycopg
import pytest

from pgferry import journal
from pgferry.config import load_config
from pgferry.pg import embedded
from pgferry.pg.connect import resolve_env
from tests.helpers import Project, Result, sql, wait_for, write_project
from tests.helpers.health import SCHEMA, checks, failed_syncs, fake_backup, health, samples
from tests.helpers.service import Server, make_project, tokens

TABLE = '[health.tables."public.cases"]\noptimal = 3\ndegraded_below = 1\n'
EXTRA = '[health]\ncache_interval = "0s"\n' + TABLE


@pytest.fixture
def monitor(login_role: str) -> str:
    """A login role that is neither the owner nor a superuser (dropped afterwards)."""
    return login_role


def _as(p: Project, pg_admin_dsn: str, role: str, env: str = "prod") -> Project:
    """The same project, with ``env`` reached as ``role``."""
    db = str(psycopg.conninfo.conninfo_to_dict(p.dsns[env])["dbname"])
    return write_project(
        p.root.parent / f"as-{role}",
        {**p.dsns, env: embedded.role_dsn(pg_admin_dsn, role, db)},
        protected=(),
        extra=EXTRA,
    )


def test_rows_hidden_by_row_level_security_are_unknown_not_zero(
    tmp_path: Path,
    make_db: Callable[..., str],
    pg_admin_dsn: str,
    monitor: str,
    cli: Callable[..., Result],
) -> None:
    p = write_project(tmp_path / "p", {"prod": make_db("prod")}, protected=(), extra=EXTRA)
    sql(p.dsns["prod"], SCHEMA)
    sql(p.dsns["prod"], "INSERT INTO cases (title) SELECT 'c' || g FROM generate_series(1, 5) g")
    sql(p.dsns["prod"], f"GRANT SELECT ON cases TO {monitor}")
    sql(p.dsns["prod"], "ALTER TABLE cases ENABLE ROW LEVEL SECURITY")  # no policy for monitor
    mon = _as(p, pg_admin_dsn, monitor)
    r = health(cli, mon, "prod", "--json")
    c = checks(r)["rows:public.cases"]
    assert c["status"] == "unknown", c  # it has 5 rows; the role sees none
    assert "row-level security" in c["message"], c
    assert monitor in c["fix"], c
    m = samples(health(cli, mon, "prod", "--format", "prometheus").out)
    assert "pgferry_table_rows" not in m or not m["pgferry_table_rows"], m
    # the owner (RLS not forced) still counts them
    c = checks(health(cli, p, "prod", "--json"))["rows:public.cases"]
    assert (c["status"], c["value"]) == ("optimal", "5"), c
    # the dashboard's rows chart: not a bar of "0 rows"
    from pgferry.health import service as health_service
    from pgferry.server.dashboard import charts, views

    cfg = load_config(mon.config)
    rep = health_service.run(cfg, "prod", now=datetime.now(UTC), use_cache=False)
    seen = {"checks": [c.to_dict() for c in rep.checks], "tables": {"public.cases": None}}
    assert {t: r.rows for t, r in rep.facts.tables.items()} == seen["tables"]
    svg = charts.grouped_bars(
        views.row_bars(cast(Any, SimpleNamespace(cfg=cfg)), {"prod": seen}), label="r"
    )
    assert "public.cases in prod: not counted" in svg and "0 rows" not in svg, svg
    # forced on the owner too, with a policy that hides some rows: still not a count
    sql(p.dsns["prod"], "ALTER TABLE cases FORCE ROW LEVEL SECURITY")
    sql(p.dsns["prod"], "CREATE POLICY newest ON cases USING (id > 3)")
    c = checks(health(cli, p, "prod", "--json"))["rows:public.cases"]
    assert c["status"] == "unknown", c


def test_a_journal_the_role_cannot_read_is_unknown_not_no_sync(
    tmp_path: Path,
    make_db: Callable[..., str],
    pg_admin_dsn: str,
    monitor: str,
    cli: Callable[..., Result],
) -> None:
    p = write_project(tmp_path / "p", {"prod": make_db("prod")}, protected=(), extra=EXTRA)
    sql(p.dsns["prod"], SCHEMA)
    sql(p.dsns["prod"], "INSERT INTO cases (title) SELECT 'c' || g FROM generate_series(1, 5) g")
    sql(p.dsns["prod"], f"GRANT SELECT ON cases TO {monitor}")
    target = resolve_env(load_config(p.config), "prod")
    failed_syncs(target)
    c = checks(health(cli, p, "prod", "--json"))["sync"]
    assert c["status"] == "degraded" and "(4 in a row)" in c["message"], c  # as the owner
    mon = _as(p, pg_admin_dsn, monitor)
    r = health(cli, mon, "prod", "--json")
    c = checks(r)
    for name in ("sync", "dead_letters"):
        assert c[name]["status"] == "unknown", c[name]
        assert c[name]["message"] == "could not run: permission denied for schema pgferry"
    m = samples(health(cli, mon, "prod", "--format", "prometheus").out)
    assert not m.get("pgferry_dead_letters"), m["pgferry_dead_letters"]
    assert not m.get("pgferry_sync_consecutive_failures"), m


def test_a_refused_sync_does_not_hide_the_failures_before_it(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """A sync refused by policy (a blackout window) did not run: the syncs that failed
    before it are still failing, as pgferry_sync_consecutive_failures says."""
    p = write_project(tmp_path / "p", {"prod": make_db("prod")}, protected=(), extra=EXTRA)
    sql(p.dsns["prod"], SCHEMA)
    sql(p.dsns["prod"], "INSERT INTO cases (title) SELECT 'c' || g FROM generate_series(1, 5) g")
    target = resolve_env(load_config(p.config), "prod")
    args = {"source": "dev", "target": "prod"}
    journal.append(target, "sync", outcome="ok", exit_code=0, arguments=args, details={})
    failed_syncs(target)
    journal.append(
        target,
        "sync",
        outcome="refused",
        exit_code=4,
        arguments=args,
        details={"error": "prod is in a blackout window"},
    )
    r = health(cli, p, "prod", "--json")
    c = checks(r)["sync"]
    assert (r.code, c["status"]) == (1, "degraded"), c
    assert "(4 in a row)" in c["message"], c
    m = samples(health(cli, p, "prod", "--format", "prometheus").out)
    assert m["pgferry_sync_consecutive_failures"] == [({"source": "dev", "target": "prod"}, 4.0)]
    # a sync stopped by bad input (exit 2) did not sync either: the metric counts it, so does
    # the check
    journal.append(
        target,
        "sync",
        outcome="bad_input",
        exit_code=2,
        arguments=args,
        details={"error": "public.nope is not a table of dev"},
    )
    c = checks(health(cli, p, "prod", "--json"))["sync"]
    assert c["status"] == "degraded" and "(5 in a row)" in c["message"], c
    m = samples(health(cli, p, "prod", "--format", "prometheus").out)
    assert m["pgferry_sync_consecutive_failures"] == [({"source": "dev", "target": "prod"}, 5.0)]


def test_metrics_of_a_production_behind_an_open_breaker_say_critical_not_nothing(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    """Production stops answering: its breaker opens after one failure, and /metrics must
    go on saying critical (PgferryHealthCritical fires after 2 min), not drop the series."""
    p = make_project(tmp_path / "p", make_db)
    text = p.config.read_text().replace(
        "[service]\n", '[service]\nproduction = "gone"\nbreaker_failures = 1\n'
    )
    p.config.write_text(
        text + '[environments.gone]\nurl = "host=127.0.0.1 port=1 dbname=gone user=gone"\n'
    )
    tok = tokens(p, viewer="viewer")
    srv = Server(p).start()
    try:
        c = srv.client(tok["viewer"])
        for scrape in range(3):  # the first finds it down and opens the breaker
            m = samples(c.get("/metrics").text)
            assert m["pgferry_health_status"] == [({"env": "gone"}, 3.0)], (scrape, m)
            assert ({"env": "gone", "check": "reachability"}, 3.0) in m["pgferry_check_status"]
        assert m["pgferry_circuit_breaker_open"] == [
            ({"env": n}, 1.0 if n == "gone" else 0.0) for n in ("dev", "gone", "prod")
        ], m["pgferry_circuit_breaker_open"]
        assert "fail fast" in c.get("/api/admin/production-health").text
    finally:
        srv.stop()


def test_an_estimate_on_postgresql_13_of_a_table_never_analyzed_is_unknown_not_zero(
    tmp_path: Path, make_db13: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """Before PostgreSQL 14 pg_class.reltuples is 0, not -1, until the first VACUUM or
    ANALYZE: 50 rows read as '~0'."""
    p = write_project(
        tmp_path / "p",
        {"prod": make_db13("prod")},
        protected=(),
        extra='[health]\ncache_interval = "0s"\n'
        '[health.tables."public.cases"]\ndegraded_below = 1\nestimate = true\n',
    )
    sql(p.dsns["prod"], SCHEMA)
    sql(p.dsns["prod"], "INSERT INTO cases (title) SELECT 'c' || g FROM generate_series(1, 50) g")
    r = health(cli, p, "prod", "--json")
    c = checks(r)["rows:public.cases"]
    assert c["status"] == "unknown" and "run ANALYZE" in c["message"], c
    m = samples(health(cli, p, "prod", "--format", "prometheus").out)
    assert not m.get("pgferry_table_rows"), m["pgferry_table_rows"]
    sql(p.dsns["prod"], "ANALYZE cases")
    c = checks(health(cli, p, "prod", "--json"))["rows:public.cases"]
    assert (c["status"], c["value"]) == ("optimal", "~50"), c
    sql(p.dsns["prod"], "DELETE FROM cases")
    sql(p.dsns["prod"], "VACUUM cases")  # emptied and vacuumed: a real 0 is still a 0
    wait_for(
        p.dsns["prod"],
        "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'cases'",
        what="the statistics collector to show the VACUUM",
    )
    c = checks(health(cli, p, "prod", "--json"))["rows:public.cases"]
    assert (c["status"], c["value"]) == ("degraded", "~0"), c


def test_a_sequence_feeding_an_integer_column_by_default_only_is_bounded_by_it(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """A bigint sequence a column uses as its DEFAULT without being OWNED BY it (created by
    hand, or shared by two tables) runs out where the integer column does."""
    p = write_project(tmp_path / "p", {"prod": make_db("prod")}, protected=(), extra=EXTRA)
    sql(
        p.dsns["prod"],
        "CREATE SEQUENCE ticket_no; CREATE TABLE tickets"
        " (id integer PRIMARY KEY DEFAULT nextval('ticket_no'), t text);"
        " SELECT setval('ticket_no', 2100000000); INSERT INTO tickets (t) VALUES ('a')",
    )
    c = checks(health(cli, p, "prod", "--json"))["sequences"]
    assert c["status"] == "critical", c  # 97.8% of 2,147,483,647
    assert "public.ticket_no" in c["message"] and "of 2,147,483,647" in c["message"], c
    # counting down, into an integer column: it ends at -2,147,483,648
    sql(
        p.dsns["prod"],
        "DROP TABLE tickets; DROP SEQUENCE ticket_no; CREATE SEQUENCE down INCREMENT -1;"
        " CREATE TABLE refunds (id integer PRIMARY KEY DEFAULT nextval('down'), t text);"
        " SELECT setval('down', -2100000000); INSERT INTO refunds (t) VALUES ('a')",
    )
    c = checks(health(cli, p, "prod", "--json"))["sequences"]
    assert c["status"] == "critical", c
    assert "public.down" in c["message"] and "of -2,147,483,648" in c["message"], c


def test_blocked_sessions_on_postgresql_13_are_timed_or_unknown(
    tmp_path: Path, make_db13: Callable[..., str], pg13_admin_dsn: str, cli: Callable[..., Result]
) -> None:
    """PostgreSQL 13 has no pg_locks.waitstart: the check could not run at all ('column
    l.waitstart does not exist'). It times its own role's waiters from pg_stat_activity, and
    says unknown for another role's, which it may not time."""
    p = write_project(
        tmp_path / "p",
        {"prod": make_db13("prod")},
        protected=(),
        extra=EXTRA + '[health.environments.prod]\nblocked_warn = "2s"\n',
    )
    sql(p.dsns["prod"], SCHEMA)
    sql(p.dsns["prod"], "INSERT INTO cases (title) VALUES ('a')")
    db = str(psycopg.conninfo.conninfo_to_dict(p.dsns["prod"])["dbname"])
    holder = psycopg.connect(p.dsns["prod"])
    holder.execute("UPDATE cases SET title = 'held' WHERE id = 1")
    waiters: list[psycopg.Connection[Any]] = []
    try:
        own = _wait_for_lock(p.dsns["prod"], holder, waiters)
        c = checks(health(cli, p, "prod", "--json"))["blocked_sessions"]
        assert c["status"] == "optimal", c  # its own role's waiter: timed, not 2 s yet
        wait_for(
            holder.info.dsn,
            "SELECT clock_timestamp() - state_change > interval '2.2 s'"
            " FROM pg_stat_activity WHERE pid = %s",
            [own.info.backend_pid],
            what="the UPDATE waiting 2 s",
        )
        c = checks(health(cli, p, "prod", "--json"))["blocked_sessions"]
        assert c["status"] == "degraded", c
        assert f"held by pid {holder.info.backend_pid}" in c["message"], c
        own.cancel_safe()  # now only a superuser's session waits
        _wait_for_lock(psycopg.conninfo.make_conninfo(pg13_admin_dsn, dbname=db), holder, waiters)
        c = checks(health(cli, p, "prod", "--json"))["blocked_sessions"]
        assert c["status"] == "unknown", c
        assert "1 session(s) of other roles wait for a lock" in c["message"], c
        assert c["fix"].startswith("GRANT pg_read_all_stats TO pgferry_test"), c
    finally:
        holder.close()
        for w in waiters:
            w.close()


def _wait_for_lock(
    dsn: str, holder: psycopg.Connection[Any], waiters: list[psycopg.Connection[Any]]
) -> psycopg.Connection[Any]:
    """A session of ``dsn`` whose UPDATE waits for the row ``holder`` locked."""
    w = psycopg.connect(dsn, autocommit=True)
    waiters.append(w)

    def update() -> None:
        with suppress(psycopg.Error):  # cancelled, or the holder went away
            w.execute("UPDATE cases SET title = 'w' WHERE id = 1")

    threading.Thread(target=update, daemon=True).start()
    wait_for(
        holder.info.dsn,
        "SELECT count(*) = 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE NOT l.granted AND a.pid = %s",
        [w.info.backend_pid],
        what="the UPDATE waiting",
    )
    return w


def test_a_dead_letter_after_a_clean_sync_counts_whatever_the_syncing_clock_says(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """The clean sync's finished_at is the syncing machine's clock; the dead letter's at is
    the server's. A sync host 10 minutes fast made a dead letter written after the clean
    sync look older than it, so it was not counted."""
    p = write_project(tmp_path / "p", {"prod": make_db("prod")}, protected=(), extra=EXTRA)
    sql(p.dsns["prod"], SCHEMA)
    sql(p.dsns["prod"], "INSERT INTO cases (title) SELECT 'c' || g FROM generate_series(1, 5) g")
    target = resolve_env(load_config(p.config), "prod")
    fast = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    journal.append(
        target,
        "sync",
        outcome="ok",
        exit_code=0,
        arguments={"source": "dev", "target": "prod", "run_id": "a"},
        details={
            "run_id": "a",
            "finished_at": fast,
            "tables": [{"table": "public.cases", "status": "ok", "inserted": 5}],
        },
    )
    sql(
        p.dsns["prod"],
        "INSERT INTO pgferry.dead_letters (run_id, source, table_name, key, row_data, error)"
        " VALUES ('b', 'dev', 'public.cases', '{\"id\": 6}', '{}', 'violates no_refused')",
    )
    c = checks(health(cli, p, "prod", "--json"))["dead_letters"]
    assert c["status"] == "degraded" and "public.cases (1)" in c["message"], c


def test_wraparound_counts_the_oldest_database_of_the_server(
    tmp_path: Path, make_db: Callable[..., str], pg_admin_dsn: str, cli: Callable[..., Result]
) -> None:
    """Wraparound stops writes to the whole server: a neglected sibling database nearing it
    is prod's problem too, though prod's own age is small."""
    p = write_project(tmp_path / "p", {"prod": make_db("prod")}, protected=(), extra=EXTRA)
    sibling = make_db("sibling")
    db = psycopg.conninfo.conninfo_to_dict(p.dsns["prod"])["dbname"]
    other = str(psycopg.conninfo.conninfo_to_dict(sibling)["dbname"])
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        for _ in range(300):  # 300 transaction IDs go by
            conn.execute("SELECT txid_current()")
    with psycopg.connect(
        psycopg.conninfo.make_conninfo(pg_admin_dsn, dbname=db), autocommit=True
    ) as conn:
        conn.execute("VACUUM (FREEZE)")  # prod is frozen now: its own age is about 0
        prod_age, sib_age = conn.execute(
            "SELECT (SELECT age(datfrozenxid) FROM pg_database WHERE datname = %s),"
            " (SELECT age(datfrozenxid) FROM pg_database WHERE datname = %s)",
            [db, other],
        ).fetchone() or (0, 0)
    assert prod_age < 100 <= 300 <= sib_age, (prod_age, sib_age)
    p.config.write_text(
        p.config.read_text()
        + "[health.environments.prod]\nwraparound_warn = 200\nwraparound_critical = 100000\n"
    )
    c = checks(health(cli, p, "prod", "--json"))["wraparound"]
    assert c["status"] == "degraded", c
    # sibling, or another as old (postgres, template1): not prod, whose age is about 0
    assert c["message"].startswith("database ") and f"database {db}'" not in c["message"], c
    assert "stops writes to every database of the server" in c["message"], c


def test_a_backup_or_sync_dated_in_the_future_is_unknown_not_fresh(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """A backup made, or a sync run, on a machine whose clock is 3 days fast looked fresh
    for 3 more days after the last real one, however stale it was."""
    p = write_project(
        tmp_path / "p",
        {"prod": make_db("prod")},
        protected=(),
        extra=EXTRA + '[health.environments.prod]\nsync_max_age = "1h"\n',
    )
    now = datetime.now(UTC).replace(microsecond=0)
    ahead = now + timedelta(days=3)
    fake_backup(p.root, "prod", "20261206T0000Z", ahead, tested=ahead)
    target = resolve_env(load_config(p.config), "prod")
    journal.append(
        target,
        "sync",
        outcome="ok",
        exit_code=0,
        arguments={"source": "dev", "target": "prod"},
        details={"finished_at": ahead.isoformat(), "tables": []},
    )
    c = checks(health(cli, p, "prod", "--json"))
    for name in ("backups", "restore_test", "sync"):
        assert c[name]["status"] == "unknown", c[name]
        assert "is dated 3.0 d in the future" in c[name]["message"], c[name]


def test_a_forgotten_prepared_transaction_is_a_long_transaction(
    tmp_path: Path, make_db15: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """A prepared transaction belongs to no session, so pg_stat_activity does not show it;
    it holds its locks and the xmin horizon until someone ends it."""
    p = write_project(
        tmp_path / "p",
        {"prod": make_db15("prod")},
        protected=(),
        extra=EXTRA + '[health.environments.prod]\nlong_transaction_warn = "1s"\n',
    )
    sql(p.dsns["prod"], SCHEMA)
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO cases (title) VALUES ('half')")
        conn.execute("PREPARE TRANSACTION 'forgotten'")
    try:
        wait_for(
            p.dsns["prod"],
            "SELECT clock_timestamp() - prepared > interval '1.2 s' FROM pg_prepared_xacts",
            what="the prepared transaction 1 s old",
        )
        c = checks(health(cli, p, "prod", "--json"))["long_transactions"]
        assert c["status"] == "degraded", c
        assert "prepared transaction 'forgotten' (pgferry_test)" in c["message"], c
        assert "ROLLBACK PREPARED 'forgotten'" in c["fix"], c
    finally:
        sql(p.dsns["prod"], "ROLLBACK PREPARED 'forgotten'")


def test_a_database_whose_sessions_start_read_only_is_critical(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """A provider's read-only mode (a full disk) sets default_transaction_read_only: every
    read still works, the application's writes fail, and health said optimal, exit 0."""
    p = write_project(tmp_path / "p", {"prod": make_db("prod")}, protected=(), extra=EXTRA)
    sql(p.dsns["prod"], SCHEMA)
    db = psycopg.conninfo.conninfo_to_dict(p.dsns["prod"])["dbname"]
    assert checks(health(cli, p, "prod", "--json"))["writable"]["status"] == "optimal"
    sql(p.dsns["prod"], f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
    r = health(cli, p, "prod", "--json")
    assert (r.code, r.json["status"]) == (1, "critical"), r.out
    c = checks(r)["writable"]
    assert (c["status"], c["value"]) == ("critical", "read-only"), c
    assert "default_transaction_read_only = on" in c["message"], c


def test_a_replication_slot_nobody_reads_is_seen_before_the_disk_fills(
    tmp_path: Path, make_db: Callable[..., str], pg_admin_dsn: str, cli: Callable[..., Result]
) -> None:
    """A slot whose consumer is gone (a CDC tool removed, a replica dropped) keeps every
    WAL segment since: the disk fills until the database stops taking writes, and health
    said optimal all the way. Seen by the application's own role, not a superuser."""
    p = write_project(tmp_path / "p", {"prod": make_db("prod")}, protected=(), extra=EXTRA)
    sql(p.dsns["prod"], SCHEMA)
    p.config.write_text(
        p.config.read_text()
        + "[health.environments.prod]\nslot_wal_warn_mb = 4\nslot_wal_critical_mb = 100000\n"
    )
    slot = f"gone_{tmp_path.name[-12:].replace('-', '_')}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_create_physical_replication_slot(%s, true)", [slot])
        try:
            sql(
                p.dsns["prod"],
                "CREATE TABLE walgen AS SELECT g, repeat('x', 200) AS v"
                " FROM generate_series(1, 40000) g; DROP TABLE walgen",
            )
            r = health(cli, p, "prod", "--json")
            c = checks(r)["replication_slots"]
            assert c["status"] == "degraded", c
            assert f"slot {slot} (inactive: its consumer is gone) keeps" in c["message"], c
            assert f"pg_drop_replication_slot('{slot}')" in c["fix"], c
        finally:
            admin.execute("SELECT pg_drop_replication_slot(%s)", [slot])

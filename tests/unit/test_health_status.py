"""The pure status rules: facts + thresholds (+ now) -> one status per check and overall."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from pgferry.config import HealthTableConfig, HealthThresholds
from pgferry.health.facts import (
    Backups,
    Drift,
    HealthFacts,
    Migrations,
    SequenceUse,
    Session,
    Slot,
    SlowStatement,
    Sync,
    SyncRun,
    TableRows,
    Waiter,
)
from pgferry.health.rules import Status
from pgferry.health.status import LEVELS, HealthCheck, evaluate, overall

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TH = HealthThresholds(
    tables={"public.legal_cases": HealthTableConfig(optimal=2000, degraded_below=1)}
)


def facts(**kw: object) -> HealthFacts:
    """A healthy, reachable environment; keywords change one part."""
    base: dict[str, object] = dict(
        env="prod",
        checked_at=NOW,
        reachable=True,
        latency_s=0.002,
        role="app",
        read_all_stats=True,
        server_version=180000,
        max_connections=100,
        backends=5,
        xid_age=1000,
        mxid_age=10,
        statements=[],
        migrations=Migrations(current="12"),
        drift=Drift(recorded_at=NOW - timedelta(days=1), version="12"),
        sync=Sync(runs=[SyncRun("dev", "ok", NOW - timedelta(hours=1), 1.0, "r1")]),
        backups=Backups("backups/prod", True, 3, NOW - timedelta(hours=2), NOW - timedelta(days=1)),
        tables={"public.legal_cases": TableRows(2025)},
    )
    base.update(kw)
    return HealthFacts(**base)  # type: ignore[arg-type]


def by(f: HealthFacts, th: HealthThresholds = TH) -> dict[str, HealthCheck]:
    return {c.name: c for c in evaluate(f, th, NOW).checks}


def test_all_well_is_optimal_with_every_check_named() -> None:
    rep = evaluate(facts(), TH, NOW)
    assert rep.status == "optimal", [(c.name, c.status, c.message) for c in rep.checks]
    names = [c.name for c in rep.checks]
    assert names == [
        "reachability",
        "writable",
        "connections",
        "long_transactions",
        "idle_in_transaction",
        "blocked_sessions",
        "wraparound",
        "replication_slots",
        "sequences",
        "invalid_indexes",
        "tables_without_pk",
        "slow_statements",
        "migrations",
        "schema_drift",
        "backups",
        "restore_test",
        "sync",
        "dead_letters",
        "rows:public.legal_cases",
    ]
    assert all(c.status == "optimal" for c in rep.checks)


def test_unreachable_is_critical_and_the_rest_unknown_with_the_reason() -> None:
    f = HealthFacts(
        env="prod",
        checked_at=NOW,
        reachable=False,
        error="cannot connect to host=/tmp/x: No such file or directory",
    )
    rep = evaluate(f, TH, NOW)
    assert rep.status == "critical"
    first, *rest = rep.checks
    assert (first.name, first.status) == ("reachability", "critical")
    assert "No such file or directory" in first.message
    assert first.fix
    assert rest and all(c.status == "unknown" for c in rest)
    assert "the database did not answer" in rest[0].message


def test_an_empty_threshold_table_is_degraded_naming_table_and_threshold() -> None:
    rep = evaluate(facts(tables={"public.legal_cases": TableRows(0)}), TH, NOW)
    c = {c.name: c for c in rep.checks}["rows:public.legal_cases"]
    assert rep.status == "degraded" and c.status == "degraded"
    assert "public.legal_cases" in c.message and "0 rows" in c.message
    assert "degraded_below = 1" in c.message
    assert c.value == "0" and c.threshold == "optimal >= 2000, degraded < 1"


def test_data_thresholds_between_degraded_and_optimal_are_healthy() -> None:
    th = HealthThresholds(tables={"public.t": HealthTableConfig(optimal=100, critical_below=10)})
    f = facts(tables={"public.t": TableRows(50)})
    assert evaluate(f, th, NOW).status == "healthy"
    assert by(facts(tables={"public.t": TableRows(5)}), th)["rows:public.t"].status == "critical"
    est = by(facts(tables={"public.t": TableRows(500, estimated=True)}), th)["rows:public.t"]
    assert est.status == "optimal" and est.value == "~500"
    gone = by(facts(tables={"public.t": TableRows(None, missing=True)}), th)["rows:public.t"]
    assert gone.status == "degraded" and "does not exist" in gone.message
    slow = by(
        facts(
            tables={
                "public.t": TableRows(None, error="canceling statement due to statement timeout")
            }
        ),
        th,
    )["rows:public.t"]
    assert slow.status == "unknown" and "estimate = true" in slow.fix


def test_blocked_session_names_the_blocking_pid() -> None:
    w = Waiter(pid=4242, blocking=[777], waited_s=41.0, query="UPDATE t SET x = 1")
    c = by(facts(waiters=[w]))["blocked_sessions"]
    assert c.status == "degraded" and "777" in c.message and "4242" in c.message
    assert "pg_terminate_backend(777)" in c.fix or "777" in c.fix
    assert by(facts(waiters=[Waiter(4242, [777], 5.0, "")]))["blocked_sessions"].status == "optimal"
    fast = HealthThresholds(blocked_warn="2s")
    assert (
        by(facts(waiters=[Waiter(4242, [777], 5.0, "")]), fast)["blocked_sessions"].status
        == "degraded"
    )


def test_hidden_sessions_without_pg_read_all_stats_are_unknown_with_the_grant() -> None:
    f = facts(read_all_stats=False, hidden_sessions=3, role="monitor")
    c = by(f)
    for name in ("long_transactions", "idle_in_transaction"):
        assert c[name].status == "unknown", name
        assert "GRANT pg_read_all_stats TO monitor" in c[name].fix
    # what it can see is still judged: an old transaction of its own is critical anyway
    old = Session(1, "monitor", "psql", "active", 3600.0, 3600.0, "SELECT 1")
    assert (
        by(facts(read_all_stats=False, hidden_sessions=3, role="monitor", sessions=[old]))[
            "long_transactions"
        ].status
        == "critical"
    )
    assert (
        by(facts(read_all_stats=False, hidden_sessions=0))["long_transactions"].status == "optimal"
    )


def test_server_thresholds() -> None:
    c = by(facts(latency_s=0.35))
    assert c["reachability"].status == "degraded" and "350 ms" in c["reachability"].message
    assert by(facts(backends=91))["connections"].status == "degraded"
    assert by(facts(backends=96))["connections"].status == "critical"
    idle = Session(9, "app", "web", "idle in transaction", 70.0, 70.0, "UPDATE t ...")
    assert by(facts(sessions=[idle]))["idle_in_transaction"].status == "degraded"
    assert by(facts(xid_age=1_350_000_000))["wraparound"].status == "degraded"
    assert by(facts(mxid_age=1_450_000_000))["wraparound"].status == "critical"
    seq = SequenceUse("public.t_id_seq", 96.0, 2_061_584_302, 2_147_483_647)
    assert by(facts(sequences=[seq]))["sequences"].status == "critical"
    assert "public.t_id_seq" in by(facts(sequences=[seq]))["sequences"].message
    assert by(facts(invalid_indexes=["public.i"]))["invalid_indexes"].status == "degraded"
    assert by(facts(tables_without_pk=["public.log"]))["tables_without_pk"].status == "degraded"


def test_slow_statements_unknown_without_the_extension() -> None:
    c = by(facts(statements=None))["slow_statements"]
    assert c.status == "unknown" and "pg_stat_statements" in c.message
    assert "CREATE EXTENSION pg_stat_statements" in c.fix
    slow = SlowStatement("SELECT * FROM big", calls=40, mean_ms=250.0, total_ms=10_000.0)
    c = by(facts(statements=[slow]))["slow_statements"]
    assert c.status == "degraded" and "40 calls" in c.message and "SELECT * FROM big" in c.message


def test_migrations_and_drift() -> None:
    assert (
        by(facts(migrations=Migrations("12", failed=["V13__x.sql"])))["migrations"].status
        == "critical"
    )
    c = by(facts(migrations=Migrations("11", pending=["V12__y.sql"])))["migrations"]
    assert c.status == "degraded" and c.value == "1 pending"
    assert "pgferry migrate up --env prod" in c.fix
    assert (
        by(facts(migrations=Migrations("12", mismatched=["V3__z.sql"])))["migrations"].status
        == "degraded"
    )
    none = by(facts(drift=Drift(recorded_at=None)))["schema_drift"]
    assert none.status == "unknown" and "migrate up" in none.fix
    drift = by(
        facts(drift=Drift(NOW, "12", changed=["table public.leads"], added=["index public.x"]))
    )["schema_drift"]
    assert drift.status == "degraded" and "table public.leads" in drift.message


def test_backups_restore_tests_and_sync() -> None:
    assert by(facts(backups=Backups("backups/prod", False)))["backups"].status == "unknown"
    stale = by(
        facts(
            backups=Backups(
                "backups/prod", True, 1, NOW - timedelta(hours=30), NOW - timedelta(days=1)
            )
        )
    )
    assert stale["backups"].status == "degraded" and "26h" in stale["backups"].message
    never = by(facts(backups=Backups("backups/prod", True, 1, NOW, None)))
    assert never["restore_test"].status == "degraded"
    runs = [SyncRun("dev", "failed", NOW - timedelta(minutes=i), 1.0, f"r{i}") for i in range(4)]
    c = by(facts(sync=Sync(runs=runs + [SyncRun("dev", "ok", NOW - timedelta(days=1), 1, "x")])))
    assert c["sync"].status == "degraded" and "4 in a row" in c["sync"].message
    assert by(facts(sync=Sync()))["sync"].status == "optimal"
    aged = HealthThresholds(sync_max_age="1h")
    assert (
        by(facts(sync=Sync(runs=[SyncRun("dev", "ok", NOW - timedelta(hours=2), 1, "r")])), aged)[
            "sync"
        ].status
        == "degraded"
    )
    dl = by(facts(sync=Sync(dead_letters=3, dead_letter_tables={"public.orders": 3})))
    assert dl["dead_letters"].status == "degraded" and "public.orders" in dl["dead_letters"].message


def test_a_check_that_could_not_run_is_unknown_never_ok() -> None:
    c = by(facts(failures={"sequences": "permission denied for table pg_sequences"}, sequences=[]))[
        "sequences"
    ]
    assert c.status == "unknown" and "permission denied" in c.message


LEVEL = st.sampled_from(list(LEVELS))


@given(st.lists(st.tuples(LEVEL, st.booleans()), min_size=1, max_size=8))
def test_overall_follows_the_issue_s_rules(parts: list[tuple[Status, bool]]) -> None:
    checks = [
        HealthCheck(f"c{i}", s, kind="data" if data else "server")
        for i, (s, data) in enumerate(parts)
    ]
    got = overall(checks)
    statuses = [c.status for c in checks]
    if "critical" in statuses:
        assert got == "critical"
    elif "degraded" in statuses:
        assert got == "degraded"
    elif all(c.status == "optimal" for c in checks if c.kind == "data"):
        assert got == "optimal"
    else:
        assert got == "healthy"


def test_a_standby_or_a_read_only_database_is_critical() -> None:
    """Every read works on a database that takes no writes: only this check sees it."""
    standby = by(facts(in_recovery=True))["writable"]
    assert (standby.status, standby.value) == ("critical", "standby")
    read_only = by(facts(read_only=True))["writable"]
    assert (read_only.status, read_only.value) == ("critical", "read-only")
    assert "default_transaction_read_only = on" in read_only.message
    assert evaluate(facts(read_only=True), TH, NOW).status == "critical"


def test_a_slot_that_keeps_wal_degrades_then_is_critical_and_a_lost_one_degrades() -> None:
    """An abandoned slot keeps every WAL segment since its consumer left: the disk fills."""
    gb = 1_073_741_824
    one = Slot("cdc", "logical", False, 2 * gb, "reserved")
    c = by(facts(slots=[one]))["replication_slots"]
    assert (c.status, c.value) == ("degraded", "2,048 MB (cdc)")
    assert "inactive: its consumer is gone" in c.message
    assert by(facts(slots=[replace(one, retained_bytes=20 * gb)]))["replication_slots"].status == (
        "critical"
    )
    lost = by(facts(slots=[replace(one, retained_bytes=0, wal_status="lost")]))
    assert lost["replication_slots"].status == "degraded"
    assert by(facts(slots=[replace(one, retained_bytes=1000)]))["replication_slots"].status == (
        "optimal"
    )

"""``pgferry health`` on a real server: checks, exit codes, drift, sync, backups, cache."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgferry.config import load_config
from pgferry.health import service
from pgferry.pg.connect import resolve_env
from tests.helpers import Project, Result, sql, write_project
from tests.helpers.backup import wait_scratch_gone
from tests.helpers.health import SCHEMA, checks, failed_syncs, fake_backup, health, samples

EXTRA = """
[health]
cache_interval = "0s"

[health.tables."public.cases"]
optimal = 3
degraded_below = 1
"""
METRICS = {
    "pgferry_health_status",
    "pgferry_check_status",
    "pgferry_table_rows",
    "pgferry_db_latency_seconds",
    "pgferry_backup_last_success_timestamp_seconds",
    "pgferry_backup_last_restore_test_timestamp_seconds",
    "pgferry_sync_last_success_timestamp_seconds",
    "pgferry_sync_rows_total",
    "pgferry_migrations_pending",
    "pgferry_dead_letters",
    "pgferry_run_duration_seconds",
}


@pytest.fixture
def proj(tmp_path: Path, make_db: Callable[..., str]) -> Project:
    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, extra=EXTRA)
    p.write("V1__cases.sql", SCHEMA)
    return p


def test_statuses_exit_codes_and_formats(proj: Project, cli: Callable[..., Result]) -> None:
    r = health(cli, proj, "prod", "--json")
    assert r.code == 1, r.err
    c = checks(r)
    assert r.json["status"] == "degraded"
    assert c["migrations"]["status"] == "degraded" and c["migrations"]["value"] == "1 pending"
    assert c["rows:public.cases"]["message"] == "public.cases does not exist in prod"
    assert c["slow_statements"]["status"] == "unknown"  # no pg_stat_statements here
    assert c["schema_drift"]["status"] == "unknown"
    assert cli("--config", str(proj.config), "migrate", "up", "--env", "prod", "--yes").code == 0
    sql(proj.dsns["prod"], "INSERT INTO cases (title) SELECT 'c' || g FROM generate_series(1, 3) g")
    r = health(cli, proj)
    assert r.code == 0, r.out + r.err
    assert r.out.startswith("prod: optimal (19 checks in ")
    assert re.search(r"^rows:public.cases +optimal +3 +optimal >= 3, degraded < 1 ", r.out, re.M)
    assert "Traceback" not in r.err
    sql(proj.dsns["prod"], "DELETE FROM cases WHERE id = 1")
    r = health(cli, proj, "prod", "--format", "json")
    assert (r.code, r.json["status"]) == (0, "healthy")
    assert (
        checks(r)["rows:public.cases"]["message"] == "public.cases has 2 rows, short of optimal = 3"
    )
    r = health(cli, proj, "prod", "--format", "prometheus")
    assert r.code == 0
    m = samples(r.out)
    assert METRICS <= set(m), METRICS - set(m)
    assert m["pgferry_health_status"] == [({"env": "prod"}, 1.0)]
    assert ({"env": "prod", "table": "public.cases"}, 2.0) in m["pgferry_table_rows"]
    assert ({"env": "prod", "check": "slow_statements"}, -1.0) in m["pgferry_check_status"]
    assert m["pgferry_migrations_pending"] == [({"env": "prod"}, 0.0)]
    out = proj.root / "metrics" / "prod.prom"
    out.parent.mkdir()
    r = health(cli, proj, "prod", "--format", "prometheus", "--output", str(out))
    assert r.code == 0 and r.out == "" and "pgferry_health_status" in out.read_text()
    assert health(cli, proj, "prod", "--format", "yaml").code == 2
    r = health(cli, proj, "prod", "--json", "--format", "prometheus")
    assert r.code == 2 and r.json["message"] == (
        "--json and --format prometheus ask for two different outputs; pass one of them"
    )
    assert health(cli, proj, "qa").code == 2


def test_schema_drift_names_the_object_until_a_migration_makes_it(
    proj: Project, cli: Callable[..., Result]
) -> None:
    up = ("--config", str(proj.config), "migrate", "up", "--env", "dev")
    assert cli(*up).code == 0
    assert checks(health(cli, proj, "dev", "--json"))["schema_drift"]["status"] == "optimal"
    sql(
        proj.dsns["dev"],
        "ALTER TABLE cases ADD COLUMN note text; CREATE INDEX cases_title ON cases (title)",
    )
    c = checks(health(cli, proj, "dev", "--json"))["schema_drift"]
    assert c["status"] == "degraded", c
    assert "table public.cases changed" in c["message"]
    assert "index public.cases_title added" in c["message"]
    sql(proj.dsns["dev"], "INSERT INTO cases (title) VALUES ('data is not schema')")
    proj.write(
        "V2__note.sql",
        "ALTER TABLE cases ADD COLUMN IF NOT EXISTS note text;\n"
        "CREATE INDEX IF NOT EXISTS cases_title ON cases (title);\n",
    )
    assert cli(*up).code == 0
    c = checks(health(cli, proj, "dev", "--json"))["schema_drift"]
    assert c["status"] == "optimal" and "(version 2)" in c["message"], c


def test_disabled_triggers_collations_privileges_and_table_options_are_drift(
    proj: Project, cli: Callable[..., Result]
) -> None:
    # an import script's DISABLE TRIGGER left so (the audit trail stops), a hotfix that
    # changed a column's collation (its order), a REVOKE, autovacuum turned off: none was
    # in the fingerprint, so health said "the schema is what the migrations made"
    proj.write(
        "V2__audit.sql",
        """
        CREATE TABLE cases_audit (id bigint, at timestamptz DEFAULT now());
        CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN INSERT INTO cases_audit VALUES (NEW.id); RETURN NEW; END $$;
        CREATE TRIGGER cases_audit AFTER INSERT ON cases FOR EACH ROW EXECUTE FUNCTION audit();
        ALTER TABLE cases ADD COLUMN code text COLLATE "C";
        GRANT SELECT ON cases_audit TO PUBLIC;
        """,
    )
    assert cli("--config", str(proj.config), "migrate", "up", "--env", "dev").code == 0

    def drift() -> dict[str, str]:
        return checks(health(cli, proj, "dev", "--json"))["schema_drift"]

    assert drift()["status"] == "optimal"
    # each change by hand is drift, named; undone, it is not
    for change, named, undo in (
        (
            "ALTER TABLE cases DISABLE TRIGGER cases_audit",
            "disabled trigger public.cases.cases_audit added",
            "ALTER TABLE cases ENABLE TRIGGER cases_audit",
        ),
        (
            'ALTER TABLE cases ALTER code TYPE text COLLATE "default"',
            "column collation public.cases.code removed",
            'ALTER TABLE cases ALTER code TYPE text COLLATE "C"',
        ),
        (  # a REVOKE by hand, autovacuum turned off by hand
            "REVOKE SELECT ON cases_audit FROM PUBLIC;"
            "ALTER TABLE cases SET (autovacuum_enabled = false)",
            "privileges public.cases_audit changed, table options public.cases added",
            "GRANT SELECT ON cases_audit TO PUBLIC; ALTER TABLE cases RESET (autovacuum_enabled)",
        ),
    ):
        sql(proj.dsns["dev"], change)
        c = drift()
        assert c["status"] == "degraded" and c["message"].endswith(named), c
        sql(proj.dsns["dev"], undo)
        assert drift()["status"] == "optimal", change
    # a fingerprint recorded before these kinds (no layout in it) says nothing of them: a
    # trigger disabled then is not drift now (it was unknown), the rest still is
    sql(proj.dsns["dev"], "ALTER TABLE cases DISABLE TRIGGER cases_audit")
    sql(
        proj.dsns["dev"],
        """
        UPDATE pgferry.schema_fingerprint SET objects = (
            SELECT jsonb_object_agg(key, value) FROM jsonb_each(objects)
            WHERE key <> 'fingerprint layout' AND key NOT LIKE 'column collation %'
              AND key NOT LIKE 'privileges %'
        )""",
    )
    assert drift()["status"] == "optimal"
    sql(proj.dsns["dev"], "CREATE INDEX cases_code ON cases (code)")
    c = drift()
    assert c["status"] == "degraded" and c["message"].endswith("index public.cases_code added"), c


def test_sync_outcomes_dead_letters_and_their_metrics(
    proj: Project, cli: Callable[..., Result]
) -> None:
    for env in ("dev", "prod"):
        sql(proj.dsns[env], SCHEMA)
    sql(proj.dsns["dev"], "INSERT INTO cases (title) VALUES ('a'), ('b'), ('refused')")
    sql(proj.dsns["prod"], "ALTER TABLE cases ADD CONSTRAINT no_refused CHECK (title <> 'refused')")
    sync = ("--config", str(proj.config), "sync", "dev", "prod", "--yes")
    assert cli(*sync).code == 1  # one dead letter
    r = health(cli, proj, "prod", "--json")
    c = checks(r)
    assert c["dead_letters"]["status"] == "degraded"
    assert "public.cases (1)" in c["dead_letters"]["message"]
    assert c["sync"]["status"] == "optimal" and c["sync"]["value"].startswith("problem ")
    m = samples(health(cli, proj, "prod", "--format", "prometheus").out)
    assert m["pgferry_dead_letters"] == [({"env": "prod"}, 1.0)]
    assert ({"env": "prod", "table": "public.cases", "result": "inserted"}, 2.0) in m[
        "pgferry_sync_rows_total"
    ]
    last = m["pgferry_sync_last_success_timestamp_seconds"]
    assert [lbl for lbl, _ in last] == [{"source": "dev", "target": "prod"}]
    assert abs(last[0][1] - datetime.now(UTC).timestamp()) < 120
    sql(proj.dsns["prod"], "ALTER TABLE cases DROP CONSTRAINT no_refused")
    assert cli(*sync).code == 0
    c = checks(health(cli, proj, "prod", "--json"))
    assert c["dead_letters"]["status"] == "optimal", c["dead_letters"]  # a clean sync since
    target = resolve_env(load_config(proj.config), "prod")
    failed_syncs(target)
    one = checks(health(cli, proj, "prod", "--json"))["sync"]
    assert one["status"] == "degraded" and "(4 in a row)" in one["message"], one
    m = samples(health(cli, proj, "prod", "--format", "prometheus").out)
    assert m["pgferry_sync_consecutive_failures"] == [({"source": "dev", "target": "prod"}, 4.0)]


def test_backups_from_the_catalog(proj: Project, cli: Callable[..., Result]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    fake_backup(
        proj.root,
        "prod",
        "20261120T0000Z",
        now - timedelta(hours=30),
        tested=now - timedelta(days=9),
    )
    c = checks(health(cli, proj, "prod", "--json"))
    assert c["backups"]["status"] == "degraded" and "30.0 h old" in c["backups"]["message"]
    assert c["restore_test"]["status"] == "degraded"
    fake_backup(
        proj.root,
        "prod",
        "20261122T0000Z",
        now - timedelta(hours=1),
        tested=now - timedelta(minutes=30),
    )
    fake_backup(proj.root, "prod", "20261122T0100Z", now, manifest=False)  # still running
    r = health(cli, proj, "prod", "--json")
    c = checks(r)
    assert (c["backups"]["status"], c["restore_test"]["status"]) == ("optimal", "optimal")
    assert c["backups"]["value"] == "3600 s" or c["backups"]["value"].endswith(" min")
    m = samples(health(cli, proj, "prod", "--format", "prometheus").out)
    assert m["pgferry_backup_last_success_timestamp_seconds"] == [
        ({"env": "prod"}, (now - timedelta(hours=1)).timestamp())
    ]
    assert m["pgferry_backup_last_restore_test_timestamp_seconds"] == [
        ({"env": "prod"}, (now - timedelta(minutes=30)).timestamp())
    ]
    assert checks(health(cli, proj, "dev", "--json"))["backups"]["status"] == "unknown"
    # a damaged manifest is not a complete backup, and breaks nothing
    fake_backup(proj.root, "prod", "20261122T0200Z", now)
    (proj.root / "backups/prod/20261122T0200Z/manifest.json").write_text(
        '{"id": "x", "finished_at": "yesterday"}'
    )
    assert checks(health(cli, proj, "prod", "--json"))["backups"]["status"] == "optimal"


def test_backups_taken_by_pgferryfake_backup(
    proj: Project, cli: Callable[..., Result], createdb_role: str, pg_admin_dsn: str
) -> None:
    """The health check reads what `pgferry backup` writes: a fresh backup is optimal, its
    restore test is missing until `backup verify --restore-test`, and [backup] min_size and
    max_age are the figures it judges by."""
    assert cli("backup", "create", "--env", "prod", "--config", str(proj.config)).code == 0
    c = checks(health(cli, proj, "prod", "--json"))
    assert c["backups"]["status"] == "optimal", c["backups"]
    assert (c["restore_test"]["status"], c["restore_test"]["value"]) == ("degraded", "never")
    r = cli(
        "backup",
        "verify",
        "latest",
        "--env",
        "prod",
        "--restore-test",
        "--config",
        str(proj.config),
    )
    assert r.code == 0, r.out
    wait_scratch_gone(pg_admin_dsn)
    c = checks(health(cli, proj, "prod", "--json"))
    assert c["restore_test"]["status"] == "optimal", c["restore_test"]
    text = proj.config.read_text()
    proj.config.write_text(text + '\n[backup]\nmin_size = "1GiB"\nmax_age = "1s"\n')
    one = checks(health(cli, proj, "prod", "--json"))["backups"]
    assert one["status"] == "degraded" and "below [backup] min_size" in one["message"], one
    proj.config.write_text(text + '\n[backup]\nmax_age = "1s"\n')
    # two seconds on, by the health service's clock (no sleep): the backup is too old
    later = datetime.now(UTC) + timedelta(seconds=2)
    aged = service.run(load_config(proj.config), "prod", now=later, use_cache=False)
    b = aged.check("backups")
    assert b.status == "degraded" and "above backup_max_age (1s)" in b.message, b


def test_the_service_answers_from_its_cache_within_the_interval(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    p = write_project(
        tmp_path / "p",
        {"prod": make_db("prod")},
        protected=(),
        extra='[health.tables."public.cases"]\ndegraded_below = 1\n',
    )
    sql(p.dsns["prod"], SCHEMA)
    sql(p.dsns["prod"], "INSERT INTO cases (title) VALUES ('a')")
    cfg = load_config(p.config)
    t0 = datetime.now(UTC)
    first = service.run(cfg, "prod", now=t0)
    assert first.check("rows:public.cases").status == "optimal" and not first.cached
    sql(p.dsns["prod"], "DELETE FROM cases")
    again = service.run(cfg, "prod", now=t0 + timedelta(seconds=14))
    assert again.cached and again.status == first.status and again.checked_at == t0
    fresh = service.run(cfg, "prod", now=t0 + timedelta(seconds=15))
    assert not fresh.cached and fresh.check("rows:public.cases").status == "degraded"
    assert (
        service.run(cfg, "prod", now=t0 + timedelta(seconds=16), use_cache=False).status
        == "degraded"
    )

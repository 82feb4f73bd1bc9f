"""`pgferry migrate test` and `pgferry migrate bench` on a scratch database (issue 17)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgferry.pg import embedded
from tests.helpers import ROLE, Project, Result, write_project

V1 = "CREATE TABLE leads (id bigint PRIMARY KEY, email text NOT NULL, score int);\n"
V2 = "ALTER TABLE leads ADD COLUMN source text;\nCREATE INDEX leads_score ON leads (score);\n"
U2 = "DROP INDEX leads_score;\nALTER TABLE leads DROP COLUMN source;\n"


def _scratch_left(p: Project, admin: str) -> list[str]:
    with psycopg.connect(admin, autocommit=True) as c:
        return [
            r[0]
            for r in c.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'pgferry\\_migratetest\\_%'"
            )
        ]


def test_migrate_test_proves_undo_files_and_runs_assertions(
    zproj: Project, createdb_role: str, pg_admin_dsn: str, cli: Callable[..., Result]
) -> None:
    p = zproj
    cfg = ("--config", str(p.config), "migrate", "test", "-e", "dev")
    p.write("V1__leads.sql", V1)
    p.write("V2__lead_source.sql", V2)
    p.write("U2__lead_source.sql", U2)
    tests = p.root / "tests"
    tests.mkdir()
    (tests / "leads.sql").write_text(
        "-- a row means a failure\n"
        "SELECT column_name FROM information_schema.columns\n"
        " WHERE table_name = 'leads' AND column_name = 'email' AND is_nullable = 'YES';\n"
        "INSERT INTO leads VALUES (1, 'a@x', 5, 'web');\n"
        "SELECT id FROM leads WHERE score > 10;\n"
    )
    r = cli(*cfg)
    assert r.code == 0, r.err
    assert "ok  V2__lead_source.sql: up, undo (U2__lead_source.sql), up: same schema" in r.err
    assert "ok  tests/leads.sql: 3 statement(s)" in r.err
    assert (
        "2 migration(s) applied, 1 proven by up, undo, up (1 without an undo file); "
        "1 assertion file(s) passed" in r.out
    )
    # the assertion files ran in a transaction that was rolled back, on a scratch database
    # that is gone again; dev itself was never touched
    assert _scratch_left(p, pg_admin_dsn) == []
    with psycopg.connect(p.dsns["dev"]) as c:
        assert c.execute("SELECT to_regclass('leads')").fetchone() == (None,)

    # an undo that forgets the index: exit 1 naming the undo file and what it left behind
    p.write("U2__lead_source.sql", "ALTER TABLE leads DROP COLUMN source;\n")
    r = cli(*cfg)
    assert r.code == 1
    assert (
        "U2__lead_source.sql does not restore what V2__lead_source.sql changed: left "
        "behind: index public.leads_score" in r.err
    )
    p.write(
        "U2__lead_source.sql",
        "DROP INDEX leads_score;\nALTER TABLE leads DROP COLUMN "
        "source;\nALTER TABLE leads ADD COLUMN note text;\n",
    )
    r = cli(*cfg)
    assert r.code == 1 and "left behind: column public.leads.note" in r.err
    p.write("U2__lead_source.sql", U2)

    # an assertion that returns a row: exit 1 naming the first failing file and line
    (tests / "leads.sql").write_text(
        "INSERT INTO leads VALUES (1, 'a@x', 50, 'web');\n"
        "SELECT id, score FROM leads WHERE score > 10;\n"
    )
    (tests / "more.sql").write_text("SELECT 1 AS never_reached;\n")
    r = cli(*cfg, "--json")
    assert r.code == 1
    assert (
        r.json["message"] == "tests/leads.sql:2: the assertion returned 1 row(s): (id=1, score=50)"
    )
    assert _scratch_left(p, pg_admin_dsn) == []

    # a migration that fails on an empty database is a finding too
    p.write("V3__bad.sql", "ALTER TABLE nope ADD COLUMN x int;\n")
    (tests / "leads.sql").unlink()
    (tests / "more.sql").unlink()
    r = cli(*cfg)
    assert (
        r.code == 1
        and 'V3__bad.sql:1 (statement 1): relation "nope" does not exist' in r.err
        and "(on an empty scratch database)" in r.err
    )


def test_migrate_bench_reports_percentiles_and_gates_on_p95(
    zproj: Project, createdb_role: str, cli: Callable[..., Result], tmp_path: Path
) -> None:
    p = zproj
    p.write("V1__leads.sql", V1)
    script = tmp_path / "insert.sql"
    script.write_text(
        "\\set id random(1, 100000000)\n"
        "INSERT INTO leads VALUES (:id, 'x', 1) ON CONFLICT DO NOTHING;\n"
    )
    seed = tmp_path / "seed.sql"
    seed.write_text("INSERT INTO leads SELECT g, 'seed', 0 FROM generate_series(1, 100) g;\n")
    base = (
        "--config",
        str(p.config),
        "migrate",
        "bench",
        str(script),
        "-e",
        "dev",
        "--clients",
        "2",
        "--transactions",
        "100",
        "--seed",
        str(seed),
    )
    r = cli(*base, "--p95", "5s", "--json")
    assert r.code == 0, r.err
    res = r.json
    assert res["transactions"] == 200 and res["migrations"] == 1
    assert 0 < res["latency_ms"]["p50"] <= res["latency_ms"]["p95"] <= res["latency_ms"]["p99"]
    r = cli(*base, "--p95", "1us")
    assert r.code == 1 and "insert.sql: p95" in r.err and "is above --p95 1us" in r.err
    script.write_text("SELECT * FROM no_such_table;\n")
    r = cli(*base)
    assert r.code == 3 and "pgbench failed on insert.sql" in r.err


TAP = """SELECT plan(3);
SELECT has_table('leads');
SELECT col_not_null('leads', 'email');
SELECT col_is_null('leads', 'score');
SELECT * FROM finish();
"""
PGTAP_CONTROL = Path("/usr/share/postgresql/15/extension/pgtap.control")


def test_a_pgtap_file_without_pgtap_on_the_server_is_bad_input(
    zproj: Project, createdb_role: str, cli: Callable[..., Result]
) -> None:
    """The embedded server has no pgTAP: a file in pgTAP's style is refused, not passed."""
    zproj.write("V1__leads.sql", V1)
    (zproj.root / "tests").mkdir()
    (zproj.root / "tests" / "tap.sql").write_text(TAP)
    r = cli("--config", str(zproj.config), "migrate", "test", "-e", "dev")
    assert r.code == 2, r.err
    assert (
        "tests/tap.sql uses pgTAP (plan/no_plan), but the server has no pgtap extension" in r.err
        and len(r.err.strip().splitlines()) == 1
    )


@pytest.fixture
def pgtap_dsn() -> Iterator[str]:
    """A database on a PostgreSQL 15 server (Debian's) whose template offers pgTAP, as a
    hosted database does where the extension is allowed; the role is not a superuser."""
    from tests import servers

    reason = servers.fetch(15)
    if reason is not None:
        pytest.skip(f"PostgreSQL 15 cannot be had here: {reason}; apt install postgresql-15")
    if not PGTAP_CONTROL.is_file():
        pytest.skip(
            "pgTAP is not installed for PostgreSQL 15: apt install postgresql-15-pgtap "
            "(.ci/run installs it when it runs as root with apt)"
        )
    root, admin = servers.start(15)
    try:
        with psycopg.connect(admin, autocommit=True) as c:
            embedded.ensure_role(c, ROLE)
            c.execute(sql.SQL("ALTER ROLE {} CREATEDB").format(sql.Identifier(ROLE)))
        # in template1: the scratch database of `migrate test` is made from it
        with psycopg.connect(
            embedded.role_dsn(admin, "postgres", "template1"), autocommit=True
        ) as c:
            c.execute("CREATE EXTENSION pgtap")
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE dev OWNER {}").format(sql.Identifier(ROLE)))
        yield embedded.role_dsn(admin, ROLE, "dev")
    finally:
        servers.stop(root, 15)


def test_migrate_test_runs_pgtap_files(
    tmp_path: Path, pgtap_dsn: str, cli: Callable[..., Result]
) -> None:
    p = write_project(tmp_path / "proj", {"dev": pgtap_dsn})
    p.write("V1__leads.sql", V1)
    tests = p.root / "tests"
    tests.mkdir()
    (tests / "tap.sql").write_text(TAP)
    cfg = ("--config", str(p.config), "migrate", "test", "-e", "dev")
    r = cli(*cfg, "--json")
    assert r.code == 0, r.err
    assert r.json["tests"] == [
        {"file": "tests/tap.sql", "ok": True, "statements": 5, "pgtap": True}
    ]
    assert "ok  tests/tap.sql: 5 statement(s) (pgTAP)" in cli(*cfg).err

    # a failing test: exit 1 with pgTAP's own `not ok` line
    (tests / "tap.sql").write_text(
        TAP.replace("col_is_null('leads', 'score')", "col_is_null('leads', 'email')")
    )
    r = cli(*cfg)
    assert r.code == 1
    assert "tests/tap.sql: pgTAP: not ok 3 - Column leads.email should allow NULL" in r.err

    # a plan the file does not meet
    (tests / "tap.sql").write_text(TAP.replace("plan(3)", "plan(4)"))
    r = cli(*cfg)
    assert r.code == 1
    assert "tests/tap.sql: pgTAP: # Looks like you planned 4 tests but ran 3" in r.err

"""migrate plan/up/undo on a real server (in-process CLI; faults: test_migrate_faults)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pgferry.migrate.files import flyway_checksum
from tests.helpers import Project, Result, q, write_project

Cli = Callable[..., Result]


def history(dsn: str) -> list[tuple[Any, ...]]:
    return q(
        dsn,
        "SELECT installed_rank, version, description, type, script, checksum,"
        " installed_by, success FROM flyway_schema_history ORDER BY installed_rank",
    )


def run(cli: Cli, p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), "migrate", *args)


def test_up_writes_flyway_rows_and_journals(project: Project, cli: Cli) -> None:
    project.write(
        "V1__create_cases.sql",
        "CREATE TABLE legal_cases (id int PRIMARY KEY,"
        " title text);\r\nINSERT INTO legal_cases VALUES (1, '100% done');\r\n",
    )
    project.write("V1.1__add_col.sql", "ALTER TABLE legal_cases ADD COLUMN court text;")
    project.write(
        "R__case_view.sql",
        "CREATE OR REPLACE VIEW case_titles AS SELECT id, title FROM legal_cases;",
    )
    dev = project.dsns["dev"]
    r = run(cli, project, "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert [a["script"] for a in r.json["applied"]] == [
        "V1__create_cases.sql",
        "V1.1__add_col.sql",
        "R__case_view.sql",
    ]
    assert r.json["current_version"] == "1.1"
    assert "applied V1 create cases (transaction) in" in r.err  # one line per file on stderr
    sums = {p.name: flyway_checksum(p.read_bytes()) for p in project.migrations.iterdir()}
    assert history(dev) == [
        (
            1,
            "1",
            "create cases",
            "SQL",
            "V1__create_cases.sql",
            sums["V1__create_cases.sql"],
            "pgferry_test",
            True,
        ),
        (
            2,
            "1.1",
            "add col",
            "SQL",
            "V1.1__add_col.sql",
            sums["V1.1__add_col.sql"],
            "pgferry_test",
            True,
        ),
        (
            3,
            None,
            "case view",
            "SQL",
            "R__case_view.sql",
            sums["R__case_view.sql"],
            "pgferry_test",
            True,
        ),
    ]
    assert q(dev, "SELECT title, court FROM case_titles JOIN legal_cases USING (id, title)") == [
        ("100% done", None)
    ]
    # nothing pending: a second run applies nothing; a changed repeatable runs again
    assert run(cli, project, "up", "-e", "dev", "--json").json["applied"] == []
    project.write(
        "R__case_view.sql",
        "CREATE OR REPLACE VIEW case_titles AS SELECT id, title, court FROM legal_cases;",
    )
    r = run(cli, project, "up", "-e", "dev", "--json")
    assert [a["script"] for a in r.json["applied"]] == ["R__case_view.sql"]
    j = q(dev, "SELECT command, outcome, details FROM pgferry.journal ORDER BY id")
    assert [(c, o) for c, o, _ in j] == [("migrate up", "ok")] * 3
    first = j[0][2]
    assert [a["script"] for a in first["applied"]] == [
        "V1__create_cases.sql",
        "V1.1__add_col.sql",
        "R__case_view.sql",
    ]
    assert all(a["duration_ms"] >= 0 and a["mode"] == "transaction" for a in first["applied"])


def test_plan_shows_exact_sql_modes_and_settings(project: Project, cli: Cli) -> None:
    project.write("V1__t.sql", "-- header\nCREATE TABLE t (a int);\n")
    project.write("V2__idx.sql", "CREATE INDEX CONCURRENTLY t_a ON t (a);\nANALYZE t;\n")
    (project.config).write_text(
        project.config.read_text() + '[migrate]\nlock_timeout = "2s"\nstatement_timeout = "5min"\n'
    )
    r = run(cli, project, "plan", "-e", "dev")
    assert r.code == 0, r.err
    out = "\n".join(ln for ln in r.out.splitlines() if not ln.startswith("-- lint "))
    assert (
        "-- V1__t.sql: transaction\nBEGIN;\nSET LOCAL lock_timeout = '2000ms';\n"
        "SET LOCAL statement_timeout = '300000ms';\nCREATE TABLE t (a int);\n"
    ) in out
    assert (
        "-- V2__idx.sql: autocommit (CREATE INDEX CONCURRENTLY), statement by statement\n"
        "SET lock_timeout = '2000ms';\nSET statement_timeout = '300000ms';\n"
        "CREATE INDEX CONCURRENTLY t_a ON t (a);\nANALYZE t;\n"
    ) in out
    j = run(cli, project, "plan", "-e", "dev", "--json").json
    assert [(s["script"], s["mode"]) for s in j["steps"]] == [
        ("V1__t.sql", "transaction"),
        ("V2__idx.sql", "autocommit"),
    ]
    assert j["steps"][1]["statements"][0] == {
        "line": 1,
        "sql": "CREATE INDEX CONCURRENTLY t_a ON t (a)",
        "non_tx": "CREATE INDEX CONCURRENTLY",
    }
    assert j["steps"][0]["statements"][0]["line"] == 2
    # plan and --dry-run change nothing
    assert run(cli, project, "up", "-e", "dev", "--dry-run", "--json").code == 0
    assert q(project.dsns["dev"], "SELECT to_regclass('flyway_schema_history')") == [(None,)]


def test_concurrent_index_file_and_undo(project: Project, cli: Cli) -> None:
    project.write(
        "V1__t.sql",
        "CREATE TABLE t (a int, b int); INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g;",
    )
    project.write(
        "V2__idx.sql", "CREATE INDEX CONCURRENTLY t_a ON t (a);\nALTER TABLE t ADD COLUMN c int;\n"
    )
    project.write("U2__idx.sql", "DROP INDEX CONCURRENTLY t_a;\nALTER TABLE t DROP COLUMN c;\n")
    dev = project.dsns["dev"]
    r = run(cli, project, "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert r.json["applied"][1]["mode"] == "autocommit"
    assert q(dev, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_a'::regclass") == [(True,)]
    assert q(dev, "SELECT count(*) FROM pgferry.migration_progress") == [(0,)]
    # undo without a U file for V1 stops before anything runs
    r = run(cli, project, "undo", "-e", "dev", "--to", "0")
    assert r.code == 2 and "no undo file" in r.err and "version 1 (V1__t.sql)" in r.err
    assert q(dev, "SELECT count(*) FROM pg_index WHERE indexrelid = 't_a'::regclass") == [(1,)]
    r = run(cli, project, "undo", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert [a["script"] for a in r.json["applied"]] == ["U2__idx.sql"]
    assert r.json["current_version"] == "1"
    assert q(dev, "SELECT to_regclass('t_a')") == [(None,)]
    assert history(dev)[-1][1:5] == ("2", "idx", "DELETE", "V2__idx.sql")  # as Flyway marks it
    r = run(cli, project, "up", "-e", "dev", "--json")  # undone: pending again
    assert [a["script"] for a in r.json["applied"]] == ["V2__idx.sql"]


def test_target_version(project: Project, cli: Cli) -> None:
    for v in ("1", "2", "3"):
        project.write(f"V{v}__m{v}.sql", f"CREATE TABLE m{v} ();")
    r = run(cli, project, "up", "-e", "dev", "--target", "2", "--json")
    assert [a["version"] for a in r.json["applied"]] == ["1", "2"]
    assert run(cli, project, "up", "-e", "dev", "--target", "x").code == 2


def test_protected_needs_yes_and_refuses_templates(project: Project, cli: Cli) -> None:
    project.write("V1__a.sql", "CREATE TABLE a ();")
    project.write("VXXX__b.sql", "CREATE TABLE b ();")
    r = run(cli, project, "up", "-e", "prod")
    assert r.code == 4 and "protected" in r.err and "--yes" in r.err
    r = run(cli, project, "up", "-e", "prod", "--yes")
    assert r.code == 4 and "number them first" in r.err and "VXXX__b.sql" in r.err
    assert q(project.dsns["prod"], "SELECT to_regclass('a')") == [(None,)]
    # on dev a template runs, recorded under the number it would get
    r = run(cli, project, "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert [(a["script"], a["version"]) for a in r.json["applied"]] == [
        ("V1__a.sql", "1"),
        ("V2__b.sql", "2"),
    ]
    assert run(cli, project, "up", "-e", "dev", "--json").json["applied"] == []
    (project.migrations / "VXXX__b.sql").unlink()
    r = run(cli, project, "up", "-e", "prod", "--yes", "--json")
    assert r.code == 0 and [a["script"] for a in r.json["applied"]] == ["V1__a.sql"]


def test_edited_applied_file_refused_and_strict_sum(project: Project, cli: Cli) -> None:
    project.write("V1__a.sql", "CREATE TABLE a ();")
    assert run(cli, project, "up", "-e", "dev").code == 0
    project.write("V1__a.sql", "CREATE TABLE a (x int);")
    project.write("V2__b.sql", "CREATE TABLE b ();")
    r = run(cli, project, "up", "-e", "dev")
    assert r.code == 4 and "1 (V1__a.sql) was changed after it was applied" in r.err
    assert q(project.dsns["dev"], "SELECT to_regclass('b')") == [(None,)]
    project.write("V1__a.sql", "CREATE TABLE a ();")
    project.config.write_text(project.config.read_text() + "[migrate]\nstrict_sum = true\n")
    r = run(cli, project, "up", "-e", "dev")
    assert r.code == 4 and "pgferry.sum is missing" in r.err


def test_parse_error_exit_2_before_anything_runs(project: Project, cli: Cli) -> None:
    project.write("V1__ok.sql", "CREATE TABLE ok ();")
    project.write("V2__bad.sql", "CREATE TABLE b (a int);\n\nSELECT * FORM b;\n")
    r = run(cli, project, "up", "-e", "dev")
    assert r.code == 2
    assert 'V2__bad.sql:3: syntax error at or near "FORM"' in r.err
    assert q(
        project.dsns["dev"], "SELECT to_regclass('ok'), to_regclass('flyway_schema_history')"
    ) == [(None, None)]
    project.write("V2__bad.sql", "BEGIN;\nCREATE TABLE b ();\nCOMMIT;\n")
    r = run(cli, project, "up", "-e", "dev")
    assert r.code == 2 and "V2__bad.sql:1: transaction control (BEGIN)" in r.err


def test_server_error_exit_3_nothing_of_the_file(project: Project, cli: Cli) -> None:
    project.write("V1__ok.sql", "CREATE TABLE ok ();")
    project.write("V2__bad.sql", "CREATE TABLE half (a int);\nINSERT INTO missing VALUES (1);\n")
    dev = project.dsns["dev"]
    r = run(cli, project, "up", "-e", "dev", "--json")
    assert r.code == 3
    assert 'V2__bad.sql:2 (statement 2): relation "missing" does not exist' in r.err
    assert "nothing of this file was applied" in r.err
    assert r.json["details"]["sqlstate"] == "42P01"
    assert [a["script"] for a in r.json["details"]["applied"]] == ["V1__ok.sql"]
    assert q(dev, "SELECT to_regclass('ok') IS NOT NULL, to_regclass('half')") == [(True, None)]
    assert [h[4] for h in history(dev)] == ["V1__ok.sql"]
    j = q(dev, "SELECT outcome, exit_code, details FROM pgferry.journal ORDER BY id DESC LIMIT 1")
    assert j[0][:2] == ("failed", 3)
    assert [a["script"] for a in j[0][2]["applied"]] == ["V1__ok.sql"]
    assert 'relation "missing" does not exist' in j[0][2]["error"]


def test_blackout_refuses_and_override_is_journaled(tmp_path: Any, make_db: Any, cli: Cli) -> None:
    p = write_project(
        tmp_path / "bo",
        {"dev": make_db("dev"), "prod": make_db("prod")},
        extra='[[blackout]]\nfrom = 2020-01-01\nenvs = ["prod"]\nreason = "year-end freeze"\n',
    )
    p.write("V1__a.sql", "CREATE TABLE a ();")
    r = run(cli, p, "up", "-e", "prod", "--yes")
    assert r.code == 4 and "blackout window" in r.err and "year-end freeze" in r.err
    assert run(cli, p, "undo", "-e", "prod", "--yes").code == 4
    # a dry run changes nothing, so the window does not refuse it (as for sync --dry-run);
    # it says that the real run would be refused, and nothing was applied
    r = run(cli, p, "up", "-e", "prod", "--dry-run", "--json")
    assert r.code == 0, r.err
    assert [s["version"] for s in r.json["steps"]] == ["1"]
    assert (
        "blackout window" in r.json["warnings"][0]
        and "real run is refused" in (r.json["warnings"][0])
    )
    r = run(cli, p, "up", "-e", "prod", "--dry-run")
    assert r.code == 0 and "a real run is refused" in r.out + r.err
    assert q(p.dsns["prod"], "SELECT to_regclass('public.a') IS NULL") == [(True,)]
    assert run(cli, p, "up", "-e", "dev").code == 0  # other envs are not affected
    r = run(cli, p, "up", "-e", "prod", "--yes", "--override-blackout")
    assert r.code == 2 and "--reason" in r.err
    r = run(
        cli,
        p,
        "up",
        "-e",
        "prod",
        "--yes",
        "--override-blackout",
        "--reason",
        "hotfix for incident 42",
    )
    assert r.code == 0, r.err
    details = q(
        p.dsns["prod"],
        "SELECT arguments, details FROM pgferry.journal"
        " WHERE outcome = 'ok' ORDER BY id DESC LIMIT 1",
    )[0]
    assert details[0]["reason"] == "hotfix for incident 42"
    assert details[1]["blackout_override"]["reason"] == "hotfix for incident 42"
    assert "year-end freeze" in details[1]["blackout_override"]["window"]


def test_failed_concurrent_index_repair_resumes(project: Project, cli: Cli) -> None:
    """A failed unique CIC leaves an INVALID index; repair + up drops it and resumes."""
    dev = project.dsns["dev"]
    project.write(
        "V1__t.sql", "CREATE TABLE t (a int, b int); INSERT INTO t VALUES (1, 1), (2, 1);"
    )
    project.write(
        "V2__idx.sql",
        "CREATE INDEX CONCURRENTLY t_a ON t (a);\n"
        "CREATE UNIQUE INDEX CONCURRENTLY t_b_key ON t (b);\n"
        "CREATE INDEX CONCURRENTLY t_ab ON t (a, b);\n",
    )
    r = run(cli, project, "up", "-e", "dev")
    assert r.code == 3
    assert "V2__idx.sql:2 (statement 2): could not create unique index" in r.err
    assert "statements 1-1 are applied" in r.err and "resumes at statement 2" in r.err
    assert q(dev, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_b_key'::regclass") == [
        (False,)
    ]
    assert history(dev)[-1][4:] == ("V2__idx.sql", history(dev)[-1][5], "pgferry_test", False)
    r = run(cli, project, "status", "-e", "dev", "--json")
    failed = [e for e in r.json["entries"] if e["state"] == "failed"]
    assert [
        (e["script"], e["failed_statement"]["statement"], e["failed_statement"]["line"])
        for e in failed
    ] == [("V2__idx.sql", 2, 2)]
    assert "could not create unique index" in failed[0]["failed_statement"]["error"]
    assert run(cli, project, "up", "-e", "dev").code == 4  # failed row: refuses until repair
    q(dev, "DELETE FROM t WHERE a = 2")
    r = run(cli, project, "repair", "-e", "dev", "--yes", "--json")
    assert r.code == 0, r.err
    r = run(cli, project, "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    step = r.json["applied"][0]
    assert step["resumed_after"] == 1 and step["dropped_invalid_indexes"] == ["public.t_b_key"]
    assert q(
        dev,
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c"
        " ON c.oid = i.indexrelid WHERE i.indrelid = 't'::regclass ORDER BY 1",
    ) == [("t_a", True), ("t_ab", True), ("t_b_key", True)]
    assert [h[7] for h in history(dev)] == [True, True]


@pytest.mark.parametrize(
    "sql_text,reason",
    [
        ("VACUUM t;", "VACUUM"),
        ("ALTER TYPE mood ADD VALUE 'meh';\nSELECT 'meh'::mood;", "ALTER TYPE ... ADD VALUE"),
        ("REINDEX TABLE CONCURRENTLY t;", "REINDEX CONCURRENTLY"),
        ("DROP INDEX CONCURRENTLY IF EXISTS nope;", "DROP INDEX CONCURRENTLY"),
    ],
)
def test_non_transactional_statements_run(
    project: Project, cli: Cli, sql_text: str, reason: str
) -> None:
    project.write(
        "V1__t.sql", "CREATE TABLE t (a int PRIMARY KEY); CREATE TYPE mood AS ENUM ('ok');"
    )
    project.write("V2__x.sql", sql_text)
    r = run(cli, project, "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert r.json["applied"][1]["mode"] == "autocommit"
    j = run(cli, project, "plan", "-e", "dev", "--json").json
    assert j["steps"] == []


def test_lint_gate_on_protected_env(project: Project, cli: Cli) -> None:
    prod = project.dsns["prod"]
    project.write(
        "V1__t.sql",
        "CREATE TABLE t (id bigint PRIMARY KEY, name text);\n"
        "INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, 100) g;\nANALYZE t;\n",
    )
    assert run(cli, project, "up", "-e", "prod", "--yes").code == 0
    project.write("V2__idx.sql", "CREATE INDEX t_name ON t (name);")
    j = run(cli, project, "plan", "-e", "prod", "--json").json
    assert [f["rule"] for f in j["steps"][0]["findings"]] == ["require-concurrent-index-creation"]
    r = run(cli, project, "plan", "-e", "prod")
    assert "-- lint error require-concurrent-index-creation (line 1):" in r.out
    r = run(cli, project, "up", "-e", "prod", "--yes")
    assert r.code == 4
    assert "lint gate: 1 error finding(s) on protected prod: V2__idx.sql:1" in r.err
    assert q(prod, "SELECT to_regclass('t_name')") == [(None,)]
    assert q(
        prod,
        "SELECT outcome, exit_code, left(error, 10) FROM pgferry.journal ORDER BY id DESC LIMIT 1",
    ) == [("refused", 4, "lint gate:")]
    assert run(cli, project, "up", "-e", "dev").code == 0  # dev is not gated
    r = run(cli, project, "up", "-e", "prod", "--yes", "--allow-unsafe")
    assert r.code == 2 and "--reason" in r.err
    r = run(
        cli, project, "up", "-e", "prod", "--yes", "--allow-unsafe", "--reason", "table has 12 rows"
    )
    assert r.code == 0, r.err
    d = q(
        prod, "SELECT details FROM pgferry.journal WHERE outcome = 'ok' ORDER BY id DESC LIMIT 1"
    )[0][0]
    assert d["allow_unsafe"]["reason"] == "table has 12 rows"
    assert d["allow_unsafe"]["findings"][0]["rule"] == "require-concurrent-index-creation"


def test_orphaned_work_backend_of_a_dead_run_is_terminated(project: Project, cli: Cli) -> None:
    """A work backend left by a killed run (same application_name) would block us: it goes."""
    from pgferry.migrate.locks import lock_key, work_app_name

    dev = project.dsns["dev"]
    project.write("V1__t.sql", "CREATE TABLE t (a int);")
    assert run(cli, project, "up", "-e", "dev").code == 0
    orphan = psycopg.connect(
        dev, application_name=work_app_name(lock_key("public", "flyway_schema_history"))
    )
    orphan.execute("SELECT count(*) FROM t")  # holds ACCESS SHARE, idle in transaction
    pid = orphan.info.backend_pid
    project.write("V2__alter.sql", "ALTER TABLE t ADD COLUMN b int;")
    r = run(cli, project, "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert f"terminated backend(s) [{pid}] left by an interrupted run" in r.err
    assert q(dev, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]) == [(0,)]
    orphan.close()


def test_custom_schema_and_history_table(project: Project, cli: Cli) -> None:
    """Like Flyway with schemas=app: history in app, unqualified names land in app."""
    project.config.write_text(
        project.config.read_text() + '[migrate]\nschema = "app"\nhistory_table = "schema_history"\n'
    )
    project.write("V1__t.sql", "CREATE TABLE t (id bigint);")
    r = run(cli, project, "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    dev = project.dsns["dev"]
    assert q(
        dev,
        "SELECT to_regclass('app.t') IS NOT NULL, to_regclass('public.t'),"
        " (SELECT count(*) FROM app.schema_history)",
    ) == [(True, None, 1)]


def test_non_tx_file_failing_at_first_statement_needs_no_repair(project: Project, cli: Cli) -> None:
    dev = project.dsns["dev"]
    project.write("V1__t.sql", "CREATE TABLE t (a int); INSERT INTO t VALUES (1), (1);")
    project.write(
        "V2__uq.sql",
        "CREATE UNIQUE INDEX CONCURRENTLY t_a_key ON t (a);\n"
        "CREATE INDEX CONCURRENTLY t_a2 ON t (a);\n",
    )
    r = run(cli, project, "up", "-e", "dev")
    assert r.code == 3
    assert 'V2__uq.sql:1 (statement 1): could not create unique index "t_a_key"' in r.err
    assert r.err.rstrip().endswith("\nDETAIL: Key (a)=(1) is duplicated.")  # its own line
    assert "nothing of this file was applied; fix the cause and run `migrate up` again" in r.err
    assert [h[7] for h in history(dev)] == [True]  # no failed row: nothing to repair
    assert q(dev, "SELECT count(*) FROM pgferry.migration_progress") == [(0,)]
    q(dev, "DELETE FROM t")
    r = run(cli, project, "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert r.json["applied"][0]["dropped_invalid_indexes"] == ["public.t_a_key"]


def test_many_small_files_each_timed(project: Project, cli: Cli) -> None:
    # (per-file overhead is measured, not asserted: see docs/migrate-runner.md)
    for i in range(1, 41):
        project.write(f"V{i}__s{i}.sql", "SELECT 1;")
    r = run(cli, project, "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert [a["version"] for a in r.json["applied"]] == [str(i) for i in range(1, 41)]
    assert all(
        isinstance(a["duration_ms"], int) and a["duration_ms"] >= 0 for a in r.json["applied"]
    )
    assert [h[7] for h in history(project.dsns["dev"])] == [True] * 40

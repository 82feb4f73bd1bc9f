"""Checks against the target before anything runs (issue 10 items 6, 8, 9, 13):
extensions the server lacks, syntax newer than the server, ALTER TYPE ... ADD VALUE inside
the file's transaction, empty files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Project, Result, q, write_project

Cli = Callable[..., Result]


def m(cli: Cli, p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), "migrate", *args)


def test_missing_extension_stops_plan_and_up_before_anything(project: Project, cli: Cli) -> None:
    dev = project.dsns["dev"]
    missing = ["pgferry_no_such_ext"]
    if not q(dev, "SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto'"):
        missing.append("pgcrypto")  # the embedded server ships without it
    project.write("V1__table.sql", "CREATE TABLE t (id int);")
    project.write(
        "V2__ext.sql",
        "CREATE EXTENSION IF NOT EXISTS plpgsql;\n"
        + "".join(f'CREATE EXTENSION IF NOT EXISTS "{e}";\n' for e in missing),
    )
    for verb in ("plan", "up"):
        r = m(cli, project, verb, "--json")
        assert r.code == 2, r.err
        assert r.err.startswith(
            "error: cannot migrate dev, nothing was applied: V2__ext.sql:2 "
            "creates extension 'pgferry_no_such_ext', which the server of "
            "dev (PostgreSQL "
        )
        assert len(r.json["details"]["problems"]) == len(missing)
        assert "point environments.dev.url at a server that has it" in r.err
        assert len(r.err.strip().splitlines()) == 1
    if "pgcrypto" in missing:
        assert "V2__ext.sql:3 creates extension 'pgcrypto'" in r.err
        assert "gen_random_uuid()" in r.err
    assert q(dev, "SELECT to_regclass('t'), to_regclass('flyway_schema_history')") == [(None, None)]


def test_add_value_runs_in_the_files_transaction(project: Project, cli: Cli) -> None:
    dev = project.dsns["dev"]
    project.write(
        "V1__enum.sql",
        "CREATE TYPE status AS ENUM ('active');\n"
        "CREATE TABLE leads (id int PRIMARY KEY, s status);\n",
    )
    project.write(
        "V2__add.sql",
        "ALTER TYPE status ADD VALUE 'paused';\n"
        "ALTER TABLE leads ADD COLUMN note text;\nINSERT INTO nowhere VALUES (1);\n",
    )
    r = m(cli, project, "plan", "--json")
    assert [s["mode"] for s in r.json["steps"]] == ["transaction", "transaction"]
    r = m(cli, project, "up")
    assert r.code == 3 and 'relation "nowhere" does not exist' in r.err
    # atomic: the new value went with the rest of the file
    assert q(dev, "SELECT enum_range(NULL::status)::text") == [("{active}",)]
    project.write(
        "V2__add.sql",
        "ALTER TYPE status ADD VALUE 'paused';\nALTER TABLE leads ADD COLUMN note text;\n",
    )
    r = m(cli, project, "up", "--json")
    assert r.code == 0 and r.json["applied"][0]["mode"] == "transaction", r.err
    assert q(dev, "SELECT enum_range(NULL::status)::text") == [("{active,paused}",)]


def test_add_value_used_in_the_same_file_falls_back_and_says_why(
    project: Project, cli: Cli
) -> None:
    project.write(
        "V1__enum.sql",
        "CREATE TYPE status AS ENUM ('active');\n"
        "CREATE TABLE leads (id int PRIMARY KEY, s status);\n",
    )
    project.write(
        "V2__use.sql",
        "ALTER TYPE status ADD VALUE 'closed';\nINSERT INTO leads VALUES (1, 'closed');\n",
    )
    r = m(cli, project, "plan")
    assert r.code == 0, r.err
    assert (
        "-- warning: V2__use.sql: line 1 adds enum value 'closed' and line 2 uses it: "
        "PostgreSQL cannot use a new enum value before the transaction that added it "
        "commits"
    ) in r.out
    assert (
        "-- V2__use.sql: autocommit (ALTER TYPE ... ADD VALUE 'closed' used at line 2), "
        "statement by statement"
    ) in r.out
    r = m(cli, project, "up", "--json")
    assert r.code == 0, r.err
    assert [a["mode"] for a in r.json["applied"]] == ["transaction", "autocommit"]
    assert any("line 1 adds enum value 'closed'" in w for w in r.json["warnings"])
    assert q(project.dsns["dev"], "SELECT s::text FROM leads") == [("closed",)]


def test_empty_file_is_a_warning(project: Project, cli: Cli) -> None:
    project.write("V1__nothing_yet.sql", "-- Migration: nothing yet\n-- write SQL here\n")
    r = m(cli, project, "plan")
    assert r.code == 0 and "-- warning: V1__nothing_yet.sql has no SQL statement" in r.out
    r = m(cli, project, "up")
    assert r.code == 0 and "warning: V1__nothing_yet.sql has no SQL statement" in r.err
    assert "write its SQL first" in r.err


NEWER = {
    "V2__nn.sql": "ALTER TABLE t ADD CONSTRAINT t_a_nn NOT NULL a;\n",
    "V3__virtual.sql": "CREATE TABLE v (a int, b int GENERATED ALWAYS AS (a * 2) VIRTUAL);\n",
}


def test_syntax_newer_than_the_target(
    tmp_path: Path, make_db15: Callable[..., str], cli: Cli
) -> None:
    p = write_project(tmp_path / "p15", {"old": make_db15()})
    p.write(
        "V1__t.sql",
        "CREATE TABLE t (id int PRIMARY KEY, a int);\n"
        "MERGE INTO t USING (VALUES (1, 2)) s(id, a) ON t.id = s.id\n"
        "WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.a);\n",
    )
    for name, text in NEWER.items():
        p.write(name, text)
    for verb in ("plan", "up"):
        r = m(cli, p, verb, "--env", "old")
        assert r.code == 2, r.err
        assert (
            "V2__nn.sql:1 uses a named NOT NULL constraint (CONSTRAINT name NOT NULL "
            "column), which needs PostgreSQL 18, but old runs PostgreSQL 15."
        ) in r.err
        assert (
            "V3__virtual.sql:1 uses a virtual generated column (GENERATED ALWAYS AS (...) "
            "without STORED), which needs PostgreSQL 18"
        ) in r.err
        assert "V1__t.sql" not in r.err  # MERGE is fine on 15
    assert q(p.dsns["old"], "SELECT to_regclass('t')") == [(None,)]
    for name in NEWER:
        (p.migrations / name).unlink()
    r = m(cli, p, "up", "--env", "old")
    assert r.code == 0, r.err


@pytest.mark.parametrize("verb", ["plan", "up"])
def test_syntax_of_the_target_version_passes(project: Project, cli: Cli, verb: str) -> None:
    project.write("V1__t.sql", "CREATE TABLE t (id int PRIMARY KEY, a int);\n")
    for name, text in NEWER.items():
        project.write(name, text)
    assert m(cli, project, verb).code == 0  # the test server is PostgreSQL 18

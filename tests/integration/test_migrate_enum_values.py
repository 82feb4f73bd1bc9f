"""ALTER TYPE ... ADD VALUE on real servers (PostgreSQL 18 and 15): it runs inside a
transaction since PostgreSQL 12, only using the new label in that transaction fails; the
runner and the lint gate both act on that (one SQL front end)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.helpers import Cli, q, run, write_project


def _server_rules(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TYPE mood AS ENUM ('ok')")
    with psycopg.connect(dsn) as c:  # a transaction block
        c.execute("ALTER TYPE mood ADD VALUE 'meh'")
        c.commit()
    assert q(dsn, "SELECT enum_range(NULL::mood)::text") == [("{ok,meh}",)]
    with psycopg.connect(dsn) as c:
        c.execute("ALTER TYPE mood ADD VALUE 'grr'")
        with pytest.raises(psycopg.errors.UnsafeNewEnumValueUsage):
            c.execute("SELECT 'grr'::mood")


def test_add_value_in_a_transaction_on_postgresql_18(db: str) -> None:
    _server_rules(db)


def test_add_value_in_a_transaction_on_postgresql_15(make_db15: Callable[..., str]) -> None:
    _server_rules(make_db15())


@pytest.mark.parametrize("server", ["18", "15"])
def test_runner_and_gate_on_add_value(
    server: str, tmp_path: Path, request: pytest.FixtureRequest, cli: Cli
) -> None:
    make: Callable[..., str] = request.getfixturevalue("make_db15" if server == "15" else "make_db")
    p = write_project(tmp_path / "p", {"prod": make()})
    p.write(
        "V1__mood.sql",
        "CREATE TYPE mood AS ENUM ('ok');\nCREATE TABLE t (id int PRIMARY KEY, m mood);\n",
    )
    # adds a label only: one transaction, so the gate (on protected prod) has nothing to
    # say about statements that could not be re-run
    p.write(
        "V2__add.sql", "ALTER TYPE mood ADD VALUE 'meh' AFTER 'ok';\nCREATE TABLE u (a bigint);\n"
    )
    # adds a label and uses it: statement by statement, and the plan says why
    p.write(
        "V3__add_and_use.sql",
        "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'grr' AFTER 'meh';\n"
        "INSERT INTO t VALUES (1, 'grr');\n",
    )
    plan = run(cli, p, "migrate", "plan", "-e", "prod", "--json").json
    steps = {s["script"]: s for s in plan["steps"]}
    assert steps["V2__add.sql"]["mode"] == "transaction"
    assert [f["rule"] for f in steps["V2__add.sql"]["findings"]] == []
    assert steps["V3__add_and_use.sql"]["mode"] == "autocommit"
    assert steps["V3__add_and_use.sql"]["non_transactional"] == [
        "ALTER TYPE ... ADD VALUE 'grr' used at line 2"
    ]
    r = run(cli, p, "migrate", "up", "-e", "prod", "--yes", "--json")
    assert r.code == 0, r.err
    assert [(a["script"], a["mode"]) for a in r.json["applied"]] == [
        ("V1__mood.sql", "transaction"),
        ("V2__add.sql", "transaction"),
        ("V3__add_and_use.sql", "autocommit"),
    ]
    dsn = p.dsns["prod"]
    assert q(dsn, "SELECT enum_range(NULL::mood)::text, (SELECT m::text FROM t)") == [
        ("{ok,meh,grr}", "grr")
    ]

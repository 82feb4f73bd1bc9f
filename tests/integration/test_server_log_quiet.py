"""A DBA's log stays quiet: pgferry's own statements draw no server warning.

Each sync used to write "WARNING: there is already a transaction in progress" into the
server's log once per unit and per worker (a ``BEGIN`` sent after psycopg's own). Log
alerting on a production server sees every such line, so the whole story runs here and
the server log of that time must hold no WARNING at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from pgferry.pg.connect import begin_repeatable_read, connect
from tests.helpers import Project, Result, ServerLog, run_json, sql, write_project

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text UNIQUE,
                        updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX customers_name ON customers (name);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                     amount numeric(12, 2));
CREATE INDEX orders_customer ON orders (customer_id);
"""
DATA = """
INSERT INTO customers (id, name, email)
SELECT g, 'c' || g, 'c' || g || '@example.com' FROM generate_series(1, 3000) g;
INSERT INTO orders SELECT g, 1 + g % 3000, g * 1.5 FROM generate_series(1, 20000) g;
"""
CHANGES = """
UPDATE customers SET name = name || '!' WHERE id % 50 = 0;
DELETE FROM orders WHERE id % 97 = 0;
INSERT INTO orders SELECT g, 1 + g % 3000, 1 FROM generate_series(20001, 20100) g;
"""


@pytest.fixture
def proj(tmp_path: Path, make_db: Callable[..., str], createdb_role: str) -> Project:
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "qa": make_db("qa"), "prod": make_db("prod")},
        extra="[sync]\njobs = 2\n",
    )
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    sql(p.dsns["dev"], DATA)
    return p


def test_the_whole_story_leaves_no_warning_in_the_server_log(
    proj: Project, cli: Callable[..., Result], pg_admin_dsn: str
) -> None:
    canary = ServerLog(pg_admin_dsn)
    if canary.start is None:
        pytest.skip("the server under test has no log file in its data directory to read")
    # the log is read where the server writes it: the very mistake shows up
    with psycopg.connect(proj.dsns["dev"]) as c:
        c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert "WARNING:  there is already a transaction in progress" in canary.since()
    log = ServerLog(pg_admin_dsn)
    proj.write("V1__note.sql", "ALTER TABLE customers ADD COLUMN note text;\n")
    steps = [
        ("migrate", "up", "--env", "dev"),
        ("migrate", "up", "--env", "qa"),
        ("migrate", "up", "--env", "prod", "--yes"),
        ("sync", "dev", "qa", "--mode", "full"),  # an empty target: indexes set aside
        ("sync", "dev", "prod", "--yes"),  # protected: indexes kept
        ("verify", "dev", "prod"),
    ]
    for args in steps:
        r = run_json(cli, proj, *args)
        assert r.code == 0, (args, r.out, r.err)
    sql(proj.dsns["dev"], CHANGES)
    r = run_json(cli, proj, "sync", "dev", "prod", "--dry-run")
    assert r.code == 0, r.out + r.err
    r = run_json(cli, proj, "sync", "dev", "prod", "--yes")  # incremental: checksum
    assert r.code == 0, r.out + r.err
    changed = {t["table"]: (t["inserted"], t["updated"], t["deleted"]) for t in r.json["tables"]}
    assert changed == {"public.customers": (0, 60, 0), "public.orders": (100, 0, 206)}
    for args in (
        ("verify", "dev", "prod"),
        ("sync", "revert", r.json["run_id"], "--yes"),
        ("backup", "create", "--env", "prod"),
    ):
        r = run_json(cli, proj, *args)
        assert r.code == 0, (args, r.out, r.err)
    text = log.since()
    warnings = [line for line in text.splitlines() if re.search(r"\bWARNING:", line)]
    assert warnings == [], "\n".join(warnings[:20])


@pytest.mark.parametrize("autocommit", [False, True])
@pytest.mark.parametrize("read_only", [False, True])
def test_begin_repeatable_read_sets_the_level_in_either_mode(
    make_db: Callable[..., str], pg_admin_dsn: str, autocommit: bool, read_only: bool
) -> None:
    log = ServerLog(pg_admin_dsn)
    with connect(make_db(), autocommit=autocommit) as c:
        begin_repeatable_read(c, read_only=read_only)
        row = c.execute(
            "SELECT current_setting('transaction_isolation'),"
            " current_setting('transaction_read_only')"
        ).fetchone()
        assert row == ("repeatable read", "on" if read_only else "off")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        c.rollback()
    if log.start is not None:
        assert "WARNING" not in log.since()

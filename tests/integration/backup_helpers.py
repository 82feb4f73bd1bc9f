"""Shared by the backup tests: a project with data in prod, and small helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as q

from tests.conftest import ROLE, Project, Result, write_project

SCHEMA = """
CREATE TABLE customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers,
                     amount numeric(10,2), note text);
CREATE SCHEMA "odd Schema";
CREATE TABLE "odd Schema"."Mixed Case" (k int PRIMARY KEY, v jsonb);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 50;
INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 300) g;
INSERT INTO orders SELECT g, 1 + g % 300, g % 100, repeat('x', g % 50)
    FROM generate_series(1, 4000) g;
INSERT INTO "odd Schema"."Mixed Case" SELECT g, jsonb_build_object('g', g)
    FROM generate_series(1, 25) g;
"""
COUNTS = {"public.customers": 300, "public.orders": 4000, "odd Schema.Mixed Case": 25}


def sql(dsn: str, text: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(text)  # type: ignore[arg-type]


def counts(dsn: str) -> dict[str, int]:
    out = {}
    with psycopg.connect(dsn, autocommit=True) as c:
        for name in COUNTS:
            schema, table = name.split(".", 1)
            row = c.execute(q.SQL("SELECT count(*) FROM {}.{}").format(
                q.Identifier(schema), q.Identifier(table))).fetchone()
            out[name] = int(row[0]) if row else 0
    return out


def fingerprint(dsn: str) -> dict[str, Any]:
    """What a restore must leave as it was: tables, views, rows, their sums."""
    query = """
        SELECT (SELECT array_agg(n.nspname || '.' || c.relname || ':' || c.relkind::text
                                 ORDER BY n.nspname, c.relname)
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry')
                  AND n.nspname NOT LIKE 'pg\\_%'),
               (SELECT array[count(*)::text, sum(amount)::text, string_agg(note, '' ORDER BY id)]
                FROM orders)"""
    with psycopg.connect(dsn, autocommit=True) as c:
        rels, orders = c.execute(query).fetchone() or (None, None)
    return {"rels": rels, "orders": orders}


@pytest.fixture(scope="session")
def createdb_role(pg_admin_dsn: str, role: str) -> str:
    """The test role may create databases (scratch databases of a test restore, --into-new),
    as a hosted database's owner role usually may (Neon, RDS)."""
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        c.execute(q.SQL("ALTER ROLE {} CREATEDB").format(q.Identifier(ROLE)))
    return role


@pytest.fixture
def bproj(tmp_path: Path, make_db: Callable[..., str], createdb_role: str,
          pg_admin_dsn: str) -> Iterator[Project]:
    """dev and a protected prod with data; databases the test makes by name are dropped."""
    p = write_project(tmp_path / "proj", {"dev": make_db("dev"), "prod": make_db("prod")})
    sql(p.dsns["prod"], SCHEMA)
    yield p
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        for (name,) in c.execute("SELECT datname FROM pg_database WHERE datname LIKE"
                                 " 'bk\\_new\\_%' OR datname LIKE 'pgferry\\_restoretest\\_%'"
                                 ).fetchall():
            c.execute(q.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                q.Identifier(name)))


def run(cli: Callable[..., Result], p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), *args)


def backups_dir(p: Project, env: str) -> Path:
    return p.root / "backups" / env


def scratch_databases(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return [r[0] for r in c.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'pgferry\\_restoretest\\_%'")]


def wait_scratch_gone(dsn: str, timeout: float = 60) -> None:
    """Test restores drop their scratch database from a detached process: wait for it."""
    import time

    deadline = time.monotonic() + timeout
    while scratch_databases(dsn):
        assert time.monotonic() < deadline, f"scratch databases left: {scratch_databases(dsn)}"
        time.sleep(0.1)


def backed_up(cli: Callable[..., Result], p: Project, change: str
              ) -> tuple[str, str, dict[str, Any]]:
    """Back up prod, then run ``change`` on it: (prod's DSN, backup id, prod's fingerprint)."""
    dsn = p.dsns["prod"]
    bid = run(cli, p, "backup", "create", "--env", "prod", "--json").json["id"]
    sql(dsn, change)
    return dsn, bid, fingerprint(dsn)

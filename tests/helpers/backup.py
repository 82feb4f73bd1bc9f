"""Shared by the backup tests: prod's data, what a restore must keep, and small helpers.

(The ``bproj`` and ``createdb_role`` fixtures are in ``tests/integration/conftest.py``.)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql as psql

from tests.helpers import Cli, Project, run, sql

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


def counts(dsn: str) -> dict[str, int]:
    out = {}
    with psycopg.connect(dsn, autocommit=True) as c:
        for name in COUNTS:
            schema, table = name.split(".", 1)
            row = c.execute(
                psql.SQL("SELECT count(*) FROM {}.{}").format(
                    psql.Identifier(schema), psql.Identifier(table)
                )
            ).fetchone()
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


def backups_dir(p: Project, env: str) -> Path:
    return p.root / "backups" / env


def scratch_databases(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return [
            r[0]
            for r in c.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'pgferry\\_restoretest\\_%'"
            )
        ]


def wait_scratch_gone(dsn: str, timeout: float = 60) -> None:
    """Test restores drop their scratch database from a detached process: wait until the
    server's catalog no longer lists it."""
    deadline = time.monotonic() + timeout
    while scratch_databases(dsn):
        assert time.monotonic() < deadline, f"scratch databases left: {scratch_databases(dsn)}"
        time.sleep(0.1)


def backed_up(cli: Cli, p: Project, change: str) -> tuple[str, str, dict[str, Any]]:
    """Back up prod, then run ``change`` on it: (prod's DSN, backup id, prod's fingerprint)."""
    dsn = p.dsns["prod"]
    bid = run(cli, p, "backup", "create", "--env", "prod", "--json").json["id"]
    sql(dsn, change)
    return dsn, bid, fingerprint(dsn)


def drop_scratch_databases(admin_dsn: str) -> None:
    """Drop the databases restores made by name (``--into-new bk_new_*``, restore tests)."""
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        for (name,) in c.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE"
            " 'bk\\_new\\_%' OR datname LIKE 'pgferry\\_restoretest\\_%'"
        ).fetchall():
            c.execute(
                psql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psql.Identifier(name))
            )

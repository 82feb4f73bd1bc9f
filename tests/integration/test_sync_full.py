"""Full and incremental sync against real PostgreSQL: round trips, FK order, deletes, triggers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import Project, Result

SCHEMA = """
CREATE TABLE customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
    email text, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id serial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
    amount numeric(12,2) NOT NULL, doc jsonb, blob bytea,
    total numeric GENERATED ALWAYS AS (amount * 2) STORED);
CREATE TABLE order_lines (order_id int REFERENCES orders ON DELETE CASCADE, line int,
    sku text NOT NULL, PRIMARY KEY (order_id, line));
CREATE TABLE nokey (a int, b text);
"""

DATA = """
INSERT INTO customers (name, email) SELECT 'c' || g, 'c' || g || '@x.org'
    FROM generate_series(1, 300) g;
INSERT INTO orders (customer_id, amount, doc, blob)
    SELECT 1 + g % 300, g, jsonb_build_object('g', g), '\\x00ff'::bytea
    FROM generate_series(1, 1200) g;
INSERT INTO order_lines SELECT o, l, 'sku' || l FROM generate_series(1, 1200) o,
    generate_series(1, 2) l;
INSERT INTO nokey SELECT g, 'n' || g FROM generate_series(1, 50) g;
"""

TABLES = ("customers", "orders", "order_lines", "nokey")


def sql(dsn: str, text: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(text)


def rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()  # noqa: S608


def same(p: Project, tables: tuple[str, ...] = TABLES) -> None:
    for t in tables:
        assert rows(p.dsns["dev"], t) == rows(p.dsns["prod"], t), t


@pytest.fixture
def synced(project: Project) -> Project:
    sql(project.dsns["dev"], SCHEMA + DATA)
    sql(project.dsns["prod"], SCHEMA)
    return project


def test_full_into_empty_then_changes(synced: Project, cli: Callable[..., Result]) -> None:
    p = synced
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--mode", "full", "--yes", "--json")
    assert r.code == 0, r.err + r.out
    out = r.json
    by = {t["table"]: t for t in out["tables"]}
    assert by["public.orders"]["inserted"] == 1200
    assert by["public.order_lines"]["inserted"] == 2400
    same(p)
    # sequences: the target's next ids do not collide
    with psycopg.connect(p.dsns["prod"]) as c:
        assert c.execute("SELECT nextval('orders_id_seq')").fetchone()[0] > 1200
    # change the source: update, delete (children and parent), insert
    sql(p.dsns["dev"], """
        UPDATE customers SET name = 'changed' WHERE id = 5;
        DELETE FROM order_lines WHERE order_id = 7; DELETE FROM orders WHERE id = 7;
        INSERT INTO orders (customer_id, amount) VALUES (3, 99);
        DELETE FROM nokey WHERE a > 40;""")
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--mode", "full", "--yes", "--json")
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.customers"]["updated"] == 1
    assert by["public.orders"]["deleted"] == 1 and by["public.orders"]["inserted"] == 1
    assert by["public.order_lines"]["deleted"] == 2
    assert by["public.customers"]["unchanged"] == 299
    same(p)


def test_protected_target_needs_yes(synced: Project, cli: Callable[..., Result]) -> None:
    r = cli("--config", str(synced.config), "sync", "dev", "prod", "--mode", "full")
    assert r.code == 4
    assert rows(synced.dsns["prod"], "customers") == []


def test_dry_run_writes_nothing(synced: Project, cli: Callable[..., Result]) -> None:
    r = cli("--config", str(synced.config), "sync", "dev", "prod", "--dry-run", "--json")
    assert r.code == 0, r.err
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.customers"]["status"] == "planned"
    assert "no primary key" in by["public.nokey"]["error"]
    with psycopg.connect(synced.dsns["prod"]) as c:
        assert c.execute("SELECT to_regclass('pgferry.sync_state')").fetchone() == (None,)
        assert c.execute("SELECT count(*) FROM customers").fetchone() == (0,)


def test_dry_run_text_shows_the_plan(synced: Project, cli: Callable[..., Result]) -> None:
    sql(synced.dsns["dev"], "ALTER TABLE customers ADD COLUMN note text")
    r = cli("--config", str(synced.config), "sync", "dev", "prod", "--dry-run")
    assert r.code == 0, r.err
    for part in ("plan: incremental dev -> prod", "public.customers", "checksum",
                 "source only: note", "stopped:", "no primary key"):
        assert part in r.out, (part, r.out)
    assert r.out.index("public.customers") < r.out.index("public.orders") < r.out.index(
        "public.order_lines")

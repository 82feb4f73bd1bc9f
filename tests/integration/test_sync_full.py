"""Full and incremental sync against real PostgreSQL: round trips, FK order, deletes, triggers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Project, Result, write_project

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
    with psycopg.connect(p.dsns["prod"], autocommit=True) as c:
        assert c.execute("SELECT nextval('orders_id_seq')").fetchone()[0] > 1200
        # a sequence never moves backwards: the target's is ahead and stays there
        c.execute("SELECT setval('customers_id_seq', 1000000)")
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
    with psycopg.connect(p.dsns["prod"]) as c:
        assert c.execute("SELECT last_value FROM customers_id_seq").fetchone() == (1000000,)
        assert c.execute("SELECT last_value FROM orders_id_seq").fetchone()[0] >= 1201


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


PART = """CREATE TABLE m (id int, at date NOT NULL, v text, PRIMARY KEY (id, at))
              PARTITION BY RANGE (at);
          CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
          CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');"""


def test_partitioned_table_through_its_parent_and_report(
        tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]) -> None:
    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")},
                      protected=())
    sql(p.dsns["dev"], PART + "INSERT INTO m SELECT g, date '2024-06-01' + g, 'v'"  # noqa: S608
        " FROM generate_series(1, 400) g")
    sql(p.dsns["prod"], PART)
    report = tmp_path / "report.md"
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--json", "--report", str(report))
    assert r.code == 0, r.err + r.out
    assert [t["table"] for t in r.json["tables"]] == ["public.m"]  # never the leaves
    assert r.json["tables"][0]["inserted"] == 400
    assert "public.m" in report.read_text()
    sql(p.dsns["dev"], "UPDATE m SET v = 'w' WHERE id < 10; DELETE FROM m WHERE id > 390")
    for mode in ("incremental", "full"):
        r = cli("--config", str(p.config), "sync", "dev", "prod", "--json", "--mode", mode)
        assert r.code == 0, r.err + r.out
        assert rows(p.dsns["dev"], "m") == rows(p.dsns["prod"], "m")


def test_big_table_loads_key_ranges_in_parallel(synced: Project, cli: Callable[..., Result],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from pgferry.sync import tables

    monkeypatch.setattr(tables, "PARALLEL_MIN_ROWS", 500)
    seen: list[int | None] = []
    real = tables._parallel_copy

    def spy(*a: Any, **k: Any) -> int | None:
        n = real(*a, **k)
        seen.append(n)
        return n

    monkeypatch.setattr(tables, "_parallel_copy", spy)
    sql(synced.dsns["dev"], "ANALYZE")
    r = cli("--config", str(synced.config), "sync", "dev", "prod", "--mode", "full", "--yes",
            "--jobs", "3", "--json")
    assert r.code == 0, r.err + r.out
    assert sorted(x for x in seen if x is not None) == [1200, 2400]  # orders, order_lines
    same(synced)


def test_where_filter_with_percent_limits_rows_and_deletes(
        tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]) -> None:
    ddl = "CREATE TABLE w (id int PRIMARY KEY, email text);"
    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")},
                      protected=(), extra='[sync.tables."public.w"]\n'
                      "where = \"email LIKE '%@keep.org'\"\n")
    sql(p.dsns["dev"], ddl + "INSERT INTO w SELECT g, 'u' || g || CASE WHEN g % 2 = 0"  # noqa: S608
        " THEN '@keep.org' ELSE '@skip.org' END FROM generate_series(1, 20) g")
    # on the target: a row outside the filter that must stay, one inside that must go
    sql(p.dsns["prod"], ddl + "INSERT INTO w VALUES (100, 'x@skip.org'), (102, 'y@keep.org')")  # noqa: S608
    for mode in ("incremental", "full"):
        r = cli("--config", str(p.config), "sync", "dev", "prod", "--mode", mode, "--json")
        assert r.code == 0, r.err + r.out
        with psycopg.connect(p.dsns["prod"]) as c:
            got = c.execute("SELECT id FROM w ORDER BY id").fetchall()
        assert got == [(i,) for i in range(2, 21, 2)] + [(100,)]

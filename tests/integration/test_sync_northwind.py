"""Round trip of Northwind (composite keys, bytea, a self-referencing FK) between two databases."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.helpers import SHARED_DATA, Result, write_project

NORTHWIND = SHARED_DATA / "northwind.sql"
TABLES = [
    "categories",
    "customer_customer_demo",
    "customer_demographics",
    "customers",
    "employees",
    "employee_territories",
    "order_details",
    "orders",
    "products",
    "region",
    "shippers",
    "suppliers",
    "territories",
    "us_states",
]

pytestmark = pytest.mark.skipif(
    not NORTHWIND.is_file(), reason=f"test data {NORTHWIND} is absent (../shared/data)"
)


def load(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(NORTHWIND.read_text(encoding="utf-8"))


def dump(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(dsn) as c:
        return {
            t: c.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()  # noqa: S608
            for t in TABLES
        }


def test_northwind_full_then_incremental(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    dev, prod = make_db("nwdev"), make_db("nwprod")
    load(dev)
    load(prod)
    with psycopg.connect(prod, autocommit=True) as c:
        c.execute("TRUNCATE " + ", ".join(TABLES))
    p = write_project(tmp_path / "p", {"dev": dev, "prod": prod}, protected=())
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--mode", "full", "--json")
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.order_details"]["inserted"] == 2155
    assert by["public.orders"]["inserted"] == 830
    assert dump(dev) == dump(prod)
    with psycopg.connect(dev, autocommit=True) as c:
        c.execute("""
            UPDATE categories SET picture = '\\xdeadbeef' WHERE category_id = 1;
            UPDATE employees SET reports_to = 5 WHERE employee_id = 3;
            INSERT INTO employees (employee_id, last_name, first_name, reports_to)
                VALUES (100, 'New', 'Boss', 2);
            DELETE FROM order_details WHERE order_id = 10248 AND product_id = 11;
            UPDATE order_details SET quantity = quantity + 1 WHERE order_id = 10249;""")
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--json")
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.order_details"]["deleted"] == 1
    assert by["public.order_details"]["updated"] == 2
    assert by["public.employees"]["inserted"] == 1 and by["public.employees"]["updated"] == 1
    assert by["public.categories"]["updated"] == 1
    assert dump(dev) == dump(prod)
    r = cli("--config", str(p.config), "verify", "dev", "prod", "--json")
    assert r.code == 0, r.out

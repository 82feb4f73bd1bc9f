"""A delete never lets a foreign key of the target (ON DELETE CASCADE, SET NULL) take rows
the source keeps.

Found here: the source has no foreign key from orders to customers (or one that does
nothing), the target's deletes in cascade. The source deleted a customer whose orders it
kept; the sync deleted the customer on the target, the target's foreign key deleted its
orders with it, and the sync reported orders "unchanged 50", ok, exit 0: five orders
gone from the target, still on the source. Now such a delete stops the tables it is tied
to (exit 3, nothing changed), and a delete whose children moved to another parent at the
source is done after their move, as a delete a foreign key refuses is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Result, q, run_json, sql, write_project

TABLES = """
CREATE TABLE customers (id int PRIMARY KEY, name text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int, total int);
CREATE TABLE categories (id int PRIMARY KEY, parent_id int);
"""
ROWS = """
INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 10) g;
INSERT INTO orders SELECT g, 1 + g % 10, g FROM generate_series(1, 50) g;
INSERT INTO categories VALUES (1, NULL), (2, 1), (3, 2), (4, 1), (5, NULL);
"""
FKS = """
ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers ON DELETE {action};
ALTER TABLE categories ADD FOREIGN KEY (parent_id) REFERENCES categories ON DELETE {action};
"""


def _dump(dsn: str) -> list[object]:
    return [
        q(dsn, f"SELECT * FROM {t} ORDER BY 1")  # noqa: S608 - fixed names
        for t in ("customers", "orders", "categories")
    ]


@pytest.mark.parametrize("action", ["CASCADE", "SET NULL"])
def test_a_delete_the_targets_foreign_key_would_act_on_stops_the_tables(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result], action: str
) -> None:
    p = write_project(tmp_path, {"dev": make_db("src"), "prod": make_db("prod")}, protected=())
    for dsn in p.dsns.values():
        sql(dsn, TABLES + ROWS)
    sql(p.dsns["prod"], FKS.format(action=action))

    # the children moved to another parent first: the delete waits for the move
    sql(p.dsns["dev"], "UPDATE orders SET customer_id = 5 WHERE customer_id = 4;"
        "DELETE FROM customers WHERE id = 4; UPDATE categories SET parent_id = 1 WHERE id = 3;"
        "DELETE FROM categories WHERE id = 2")  # fmt: skip
    r = run_json(cli, p, "sync", "dev", "prod")
    assert r.code == 0, r.out + r.err
    assert _dump(p.dsns["prod"]) == _dump(p.dsns["dev"])

    # kept at the source, still referencing the deleted row: the target cannot hold that
    sql(p.dsns["dev"], "DELETE FROM customers WHERE id = 3; DELETE FROM categories WHERE id = 1")
    before = _dump(p.dsns["prod"])
    r = run_json(cli, p, "sync", "dev", "prod")
    assert r.code == 3, r.out + r.err
    errors = {t["table"]: t["error"] or "" for t in r.json["tables"]}
    verb = "delete" if action == "CASCADE" else "change"
    assert (
        f"still referenced by rows of public.orders that the source keeps, and the target's "
        f"foreign key on public.orders (customer_id) ON DELETE {action} would {verb} them"
    ) in errors["public.customers"]
    assert "rows of public.categories that the source keeps" in errors["public.categories"]
    assert _dump(p.dsns["prod"]) == before  # nothing changed, orders included

    # the same foreign key on both sides: the source's own cascade, synced
    sql(p.dsns["dev"], "INSERT INTO customers VALUES (3, 'c3');"
        "INSERT INTO categories VALUES (1, NULL)")  # fmt: skip
    sql(p.dsns["dev"], FKS.format(action=action))
    sql(p.dsns["dev"], "DELETE FROM customers WHERE id = 6; DELETE FROM categories WHERE id = 1")
    r = run_json(cli, p, "sync", "dev", "prod")
    assert r.code == 0, r.out + r.err
    assert _dump(p.dsns["prod"]) == _dump(p.dsns["dev"])

"""Incremental sync (checksum and watermark strategies) and verify, against real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Project, Result, sql, write_project
from tests.helpers.sync import DATA, SCHEMA, rows, same


@pytest.fixture
def pair(tmp_path, make_db: Callable[..., str]) -> Project:  # type: ignore[no-untyped-def]
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "prod": make_db("prod")},
        protected=(),
        extra='[sync.tables."public.customers"]\nwatermark = "updated_at"\n',
    )
    sql(p.dsns["dev"], SCHEMA + DATA)
    sql(p.dsns["prod"], SCHEMA)
    return p


def run(cli: Callable[..., Result], p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), *args, "--json")


def test_verify_then_incremental_closes_the_gap(pair: Project, cli: Callable[..., Result]) -> None:
    r = run(cli, pair, "verify", "dev", "prod", "--tables", "public.orders,public.order_lines")
    assert r.code == 1, r.err
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.orders"]["only_in_source"] == 1200
    r = run(cli, pair, "sync", "dev", "prod", "--exclude", "public.nokey")
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.customers"]["strategy"] == "watermark"
    assert by["public.orders"]["strategy"] == "checksum"
    assert by["public.orders"]["inserted"] == 1200
    same(pair, ("customers", "orders", "order_lines"))
    r = run(cli, pair, "verify", "dev", "prod")
    assert r.code == 1, r.out
    by = {t["table"]: t for t in r.json["tables"]}
    # no key: compared as a multiset of rows, and the incremental sync left it out
    assert by["public.nokey"]["status"] == "differs" and "multiset" in by["public.nokey"]["note"]
    assert {t: by[t]["status"] for t in by if t != "public.nokey"} == {
        "public.customers": "ok",
        "public.orders": "ok",
        "public.order_lines": "ok",
    }
    assert (
        run(cli, pair, "sync", "dev", "prod", "--mode", "full", "--tables", "public.nokey").code
        == 0
    )
    r = run(cli, pair, "verify", "dev", "prod")
    assert r.code == 0, r.out
    assert {t["table"]: t for t in r.json["tables"]}["public.nokey"]["matched"] == 50
    # a second run with few changes touches only them
    sql(
        pair.dsns["dev"],
        """
        UPDATE orders SET amount = amount + 1 WHERE id IN (10, 500);
        DELETE FROM order_lines WHERE order_id = 900 AND line = 2;
        INSERT INTO order_lines VALUES (900, 3, 'new');
        UPDATE customers SET name = 'x', updated_at = now() WHERE id = 9;""",
    )
    sql(pair.dsns["prod"], "INSERT INTO order_lines VALUES (901, 9, 'stray')")
    r = run(cli, pair, "sync", "dev", "prod", "--exclude", "public.nokey")
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.orders"]["updated"] == 2 and by["public.orders"]["inserted"] == 0
    assert by["public.order_lines"]["deleted"] == 2
    assert by["public.order_lines"]["inserted"] == 1
    assert by["public.customers"]["updated"] == 1
    same(pair, ("customers", "orders", "order_lines"))
    with psycopg.connect(pair.dsns["prod"]) as c:
        wm = c.execute(
            "SELECT watermark FROM pgferry.sync_state WHERE table_name = 'public.customers'"
        ).fetchone()
        assert wm is not None and wm[0]
        ops = c.execute("SELECT command, outcome FROM pgferry.journal ORDER BY id").fetchall()
    assert ("sync", "ok") in ops and ("verify", "problem") in ops


def test_unknown_table_and_env_exit_2(pair: Project, cli: Callable[..., Result]) -> None:
    r = run(cli, pair, "sync", "dev", "prod", "--tables", "public.nope")
    assert r.code == 2 and "public.nope" in r.err
    r = run(cli, pair, "sync", "dev", "nowhere")
    assert r.code == 2
    assert rows(pair.dsns["prod"], "customers") == []


def test_dense_changes_copy_whole_ranges(pair: Project, cli: Callable[..., Result]) -> None:
    assert run(cli, pair, "sync", "dev", "prod", "--exclude", "public.nokey").code == 0
    sql(
        pair.dsns["dev"],
        """
        UPDATE orders SET amount = amount + 1;
        DELETE FROM order_lines WHERE order_id BETWEEN 100 AND 600;
        DELETE FROM orders WHERE id BETWEEN 100 AND 600;
        INSERT INTO orders (id, customer_id, amount)
            SELECT g, 1, 5 FROM generate_series(5000, 5400) g;""",
    )
    sql(
        pair.dsns["prod"],
        "INSERT INTO order_lines SELECT o, 7, 'x' FROM generate_series(601, 900) o",
    )
    r = run(cli, pair, "sync", "dev", "prod", "--exclude", "public.nokey")
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.orders"]["deleted"] == 501
    assert by["public.orders"]["inserted"] == 401
    assert by["public.orders"]["updated"] == 1200 - 501
    assert by["public.order_lines"]["deleted"] == 1002 + 300
    same(pair, ("customers", "orders", "order_lines"))


def test_the_progress_bar_counts_each_row_once(
    tmp_path: Path,
    make_db: Callable[..., str],
) -> None:
    """The rows the progress events report add up to the source's rows, whether the run
    loads an empty table or compares and then writes the differing rows."""
    from pgferry.config import load_config
    from pgferry.pg.connect import Target
    from pgferry.sync import engine, events

    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")})
    for dsn in p.dsns.values():
        sql(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    sql(p.dsns["dev"], "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5000) g")
    cfg = load_config(p.config)
    src, tgt = Target("dev", p.dsns["dev"]), Target("prod", p.dsns["prod"], protected=False)

    def counted() -> tuple[int, Any]:
        ch, got = events.Channel(), []
        ch.subscribe(lambda e: got.append(e.rows) if isinstance(e, events.BatchWritten) else None)
        res = engine.run(cfg, src, tgt, engine.Options(mode="incremental", batch_size=700), ch)
        return sum(got), res.tables[0]

    n, t = counted()  # an empty target: loaded
    assert (n, t.inserted) == (5000, 5000)
    sql(p.dsns["dev"], "UPDATE t SET v = 'changed' WHERE id % 10 = 0")
    sql(p.dsns["dev"], "DELETE FROM t WHERE id > 4900")
    n, t = counted()  # compared, then 490 rows rewritten and 100 deleted
    assert (t.updated, t.deleted, t.unchanged) == (490, 100, 4410), t
    assert n == 4900
    # a verify past a stale estimate (analyzed at 4900 rows, 3000 since): every row counts
    for dsn in p.dsns.values():
        sql(dsn, "ALTER TABLE t SET (autovacuum_enabled = false); ANALYZE t")
        sql(dsn, "INSERT INTO t SELECT g, 'new' FROM generate_series(10001, 13000) g")
    ch, got = events.Channel(), []
    ch.subscribe(lambda e: got.append(e.rows) if isinstance(e, events.BatchWritten) else None)
    res = engine.run(cfg, src, tgt, engine.Options(mode="verify"), ch)
    assert (res.tables[0].status, res.tables[0].source_rows) == ("ok", 7900), res.tables[0]
    assert sum(got) == 7900

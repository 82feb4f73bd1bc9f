"""Sync faults on a real server: dead letters, triggers, killed backends, SIGKILL, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as psql

from tests.helpers import Project, Result, one, sql, statements_seen, write_project
from tests.helpers.sync import (
    DATA,
    SCHEMA,
    WRITER,
    active_backend,
    rows,
    same,
    wait_for_backend,
)

# a stray parent and child on the target: the tables are not empty (no fast path), and
# the incremental sync must delete the child before the parent
STRAY = """
INSERT INTO customers (id, name) OVERRIDING SYSTEM VALUE VALUES (99999, 'stray'), (2, 'c2');
INSERT INTO orders (id, customer_id, amount) VALUES (99999, 99999, 1);
INSERT INTO orders (id, customer_id, amount, doc, blob)
    VALUES (1, 2, 1, '{"g": 1}', '\\x00ff');  -- the same as on the source
"""
SLOW = (
    STRAY
    + """
CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$;
CREATE TRIGGER slow BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION slow();
"""
)
TABLES3 = ("customers", "orders", "order_lines")


@pytest.fixture
def pair(tmp_path, make_db: Callable[..., str]) -> Project:  # type: ignore[no-untyped-def]
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "prod": make_db("prod")},
        protected=(),
        extra='[sync]\nexclude = ["public.nokey"]\n',
    )
    sql(p.dsns["dev"], SCHEMA + DATA)
    sql(p.dsns["prod"], SCHEMA)
    return p


def run(cli: Callable[..., Result], p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), *args, "--json")


def count(dsn: str, table: str) -> int:
    return int(
        one(dsn, psql.SQL("SELECT count(*) FROM {}").format(psql.Identifier(*table.split("."))))
    )


def test_target_only_check_dead_letters_the_row(pair: Project, cli: Callable[..., Result]) -> None:
    sql(pair.dsns["prod"], "ALTER TABLE orders ADD CONSTRAINT small CHECK (amount <> 77)")
    for mode in ("full", "incremental"):
        r = run(cli, pair, "sync", "dev", "prod", "--mode", mode, "--batch-size", "500")
        assert r.code == 1, r.err + r.out
        by = {t["table"]: t for t in r.json["tables"]}
        orders = by["public.orders"]
        assert orders["dead_lettered"] == 1 and orders["status"] == "dead_letters"
        assert orders["dead_letters"][0]["key"] == {"id": 77}
        assert orders["dead_letters"][0]["sqlstate"] == "23514"
    assert count(pair.dsns["prod"], "orders") == 1199
    # the line items of order 77 cannot land either (FK) and are dead-lettered too
    assert count(pair.dsns["prod"], "order_lines") == 2398
    with psycopg.connect(pair.dsns["prod"]) as c:
        dl = c.execute(
            "SELECT table_name, key, row_data->>'amount', error FROM"
            " pgferry.dead_letters WHERE table_name = 'public.orders'"
        ).fetchall()
    assert dl[0][1] == {"id": 77} and dl[0][2] == "77.00" and "small" in dl[0][3]


def test_disabled_triggers_are_reenabled_also_on_failure(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "prod": make_db("prod")},
        protected=(),
        extra='[sync]\nexclude = ["public.nokey"]\n'
        '[sync.tables."public.orders"]\ntriggers = "disable"\n',
    )
    sql(p.dsns["dev"], SCHEMA + DATA)
    boom = """CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'trigger fired'; END $$;
        CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON orders FOR EACH ROW
        EXECUTE FUNCTION boom();"""
    sql(p.dsns["prod"], SCHEMA + boom)
    r = run(cli, p, "sync", "dev", "prod", "--mode", "full")
    assert r.code == 0, r.err + r.out
    same(p, TABLES3)
    # now make the load fail after the triggers were disabled: a customers row goes missing
    sql(p.dsns["dev"], "UPDATE orders SET amount = amount + 1 WHERE id < 5")
    sql(p.dsns["prod"], "ALTER TABLE orders ADD CONSTRAINT c CHECK (amount < 2) NOT VALID")
    r = run(cli, p, "sync", "dev", "prod")
    assert r.code == 1, r.err + r.out
    with psycopg.connect(p.dsns["prod"]) as c:
        state = c.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'boom'").fetchone()
    assert state == ("O",)  # enabled again


def _terminate_writer_when(dsn: str, cond: Callable[[], bool], killed: list[int]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not cond():
        time.sleep(0.02)
    with psycopg.connect(dsn, autocommit=True) as c:
        for _ in range(200):
            got = c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE"
                " application_name = 'pgferry sync writer' AND state = 'active'"
                " AND datname = current_database()"
            ).fetchall()
            if got:
                killed.append(len(got))
                return
            time.sleep(0.01)


def _writer_busy(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as c:
        return active_backend(c, r"INSERT INTO .*orders", WRITER) is not None


def test_terminated_target_backend_is_retried(pair: Project, cli: Callable[..., Result]) -> None:
    sql(pair.dsns["prod"], SLOW)
    killed: list[int] = []
    th = threading.Thread(
        target=_terminate_writer_when,
        args=(
            pair.dsns["prod"],
            lambda: _writer_busy(pair.dsns["prod"]),
            killed,
        ),
    )
    th.start()
    r = run(cli, pair, "sync", "dev", "prod", "--batch-size", "200", "--jobs", "1")
    th.join()
    assert killed, "the writer backend was never seen"
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    # the error surfaces on the writer's next statement: on whichever table it was busy with
    assert any("57P01" in w and "retried" in w for t in by.values() for w in t["warnings"])
    same(pair, TABLES3)


def test_sigkill_mid_unit_leaves_every_table_as_it_was_and_rerun_completes(pair: Project) -> None:
    sql(pair.dsns["prod"], SLOW)
    before = {t: rows(pair.dsns["prod"], t) for t in TABLES3}
    proc = pair.popen("sync", "dev", "prod", "--batch-size", "100", "--jobs", "1", "--json")
    # a second batch of orders has started: the first is written (uncommitted)
    statements_seen(
        pair.dsns["prod"], "pgferry sync writer", r"INSERT INTO .*orders", 2, alive=proc
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # customers, orders and order_lines are tied by foreign keys: one transaction, which
    # the kill rolled back, so each table is exactly as it was (none half-synced)
    assert {t: rows(pair.dsns["prod"], t) for t in TABLES3} == before
    sql(pair.dsns["prod"], "DROP TRIGGER slow ON orders")
    r = pair.run("sync", "dev", "prod", "--json")
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.orders"]["inserted"] == 1199  # all but the one that was there
    assert by["public.orders"]["deleted"] == 1  # the stray row
    same(pair, TABLES3)


def test_bad_mask_rule_exits_2_before_any_write(
    tmp_path: Path,
    make_db: Callable[..., str],
    cli: Callable[..., Result],
) -> None:
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "prod": make_db("prod")},
        protected=(),
        extra='[sync.mask]\n"public.customers.email" = "scramble"\n',
    )
    sql(p.dsns["dev"], SCHEMA + DATA)
    sql(p.dsns["prod"], SCHEMA)
    r = run(cli, p, "sync", "dev", "prod")
    assert r.code == 2 and "scramble" in r.err
    with psycopg.connect(p.dsns["prod"]) as c:
        assert c.execute("SELECT to_regclass('pgferry.journal')").fetchone() == (None,)
    assert rows(p.dsns["prod"], "customers") == []


def test_delete_referenced_by_unselected_table_fails_that_table(
    pair: Project, cli: Callable[..., Result]
) -> None:
    assert run(cli, pair, "sync", "dev", "prod", "--mode", "full").code == 0
    sql(
        pair.dsns["dev"],
        "DELETE FROM order_lines WHERE order_id = 3; DELETE FROM orders WHERE id = 3",
    )
    sql(pair.dsns["dev"], "UPDATE customers SET name = 'changed' WHERE id = 5")
    r = run(cli, pair, "sync", "dev", "prod", "--tables", "public.orders,public.customers")
    assert r.code == 3, r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert "public.order_lines" in by["public.orders"]["error"]
    assert "nothing was changed" in by["public.orders"]["error"]
    # customers is tied to orders by a foreign key: one transaction, rolled back with it
    assert by["public.customers"]["status"] == "failed"
    assert "rolled back with public.orders" in by["public.customers"]["error"]
    assert by["public.customers"]["updated"] == 0
    assert count(pair.dsns["prod"], "orders") == 1200  # rolled back
    with psycopg.connect(pair.dsns["prod"]) as c:
        assert c.execute("SELECT name FROM customers WHERE id = 5").fetchone() != ("changed",)


def test_target_down_then_exit_3_and_rerun_resumes(
    pg_admin_dsn: str, make_db: Callable[..., str], tmp_path: Path
) -> None:
    """The target lives on its own embedded server, stopped mid-run: the sync retries for
    [sync] retry (3 s), then exits 3; after a restart the rerun completes."""
    import shutil
    import subprocess
    import tempfile

    from pgferry.pg import embedded

    root = Path(tempfile.mkdtemp(prefix="pgfd-", dir="/tmp"))
    try:
        su = embedded.superuser_dsn(root)
        with psycopg.connect(su, autocommit=True) as c:
            embedded.ensure_role(c, "pgferry_test")
            c.execute(psql.SQL("CREATE DATABASE tdown OWNER pgferry_test"))
        target = embedded.role_dsn(su, "pgferry_test", "tdown")
        p = write_project(
            tmp_path / "p",
            {"dev": make_db("dev"), "prod": target},
            protected=(),
            extra='[sync]\nexclude = ["public.nokey"]\nretry = "3s"\n',
        )
        sql(p.dsns["dev"], SCHEMA + DATA)
        sql(target, SCHEMA + SLOW)
        proc = p.popen("sync", "dev", "prod", "--batch-size", "100", "--jobs", "1", "--json")
        wait_for_backend(target, proc, r"INSERT INTO .*orders", WRITER)
        embedded.stop(root)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 3, err + out
        res = __import__("json").loads(out)
        # the side is named by which connection failed (the target's), not by the message
        assert res["outcome"] == "failed", res
        assert res["error"].startswith("prod stopped answering"), res["error"]
        embedded.superuser_dsn(root)  # start it again (pgferry gave up: it is down for good)
        sql(target, "DROP TRIGGER slow ON orders")
        # the unit (customers, orders, order_lines) rolled back: orders as it was
        assert count(target, "orders") == 2
        r = p.run("sync", "dev", "prod", "--json")
        assert r.code == 0, r.err + r.out
        by = {t["table"]: t for t in r.json["tables"]}
        assert by["public.orders"]["inserted"] == 1199 and by["public.orders"]["deleted"] == 1
        same(p, TABLES3)
    finally:
        embedded.stop(root)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["true"], check=False)


def test_sigterm_cancels_rolls_back_and_journals(pair: Project) -> None:
    sql(pair.dsns["prod"], SLOW.replace("0.002", "0.04"))  # a batch of 500 takes 20 s
    proc = pair.popen("sync", "dev", "prod", "--batch-size", "500", "--jobs", "1")
    # the slow table's upsert (another table's quick one may end before it is looked at)
    upsert = r'^WITH up AS \(INSERT INTO "public"\."orders"'
    pid = wait_for_backend(pair.dsns["prod"], proc, upsert, WRITER)
    proc.send_signal(signal.SIGTERM)
    # the server shows the statement end long before the 20 s it needs to complete
    longest = 0.0
    with psycopg.connect(pair.dsns["prod"], autocommit=True) as c:
        while row := c.execute(
            "SELECT extract(epoch FROM clock_timestamp() - query_start)::float8"
            " FROM pg_stat_activity WHERE pid = %s AND state = 'active'"
            " AND query ~ '^WITH up AS \\(INSERT'",
            [pid],
        ).fetchone():
            longest = max(longest, row[0])
            time.sleep(0.02)
    assert longest < 15, ("the running statement was not cancelled", longest)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler: where each thread waits
        out, err = proc.communicate(timeout=30)
        raise AssertionError("sync did not exit within 30 s of its cancel:\n" + err) from None
    assert proc.returncode == 3, err
    assert "interrupted" in err
    with psycopg.connect(pair.dsns["prod"]) as c:
        assert c.execute(
            "SELECT outcome, exit_code FROM pgferry.journal WHERE command = 'sync'"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone() == ("failed", 3)
    sql(pair.dsns["prod"], "DROP TRIGGER slow ON orders")
    r = pair.run("sync", "dev", "prod", "--json")
    assert r.code == 0, r.err + r.out
    same(pair, TABLES3)


def test_lock_held_elsewhere_is_waited_out(
    pair: Project, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgferry.sync import links

    monkeypatch.setattr(links, "WRITER_LOCK_TIMEOUT", "300ms")
    holder = psycopg.connect(pair.dsns["prod"])
    holder.execute("LOCK TABLE orders IN SHARE MODE")  # reads go on, writes wait
    timer = threading.Timer(1.5, holder.rollback)
    timer.start()
    try:
        r = run(cli, pair, "sync", "dev", "prod", "--jobs", "1")
    finally:
        timer.join()
        holder.close()
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert any("55P03" in w for t in by.values() for w in t["warnings"])
    same(pair, TABLES3)


def test_sigkill_in_full_mode_rolls_the_table_back_and_rerun_completes(pair: Project) -> None:
    sql(pair.dsns["prod"], SLOW)
    proc = pair.popen("sync", "dev", "prod", "--mode", "full", "--jobs", "1")
    wait_for_backend(pair.dsns["prod"], proc, "(INSERT|COPY).*orders", WRITER)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # customers and orders are tied by a foreign key: one transaction, rolled back whole
    assert count(pair.dsns["prod"], "customers") == 2  # the rows that were there before
    assert count(pair.dsns["prod"], "orders") == 2
    sql(pair.dsns["prod"], "DROP TRIGGER slow ON orders")
    r = pair.run("sync", "dev", "prod", "--mode", "full", "--json")
    assert r.code == 0, r.err + r.out
    same(pair, TABLES3)

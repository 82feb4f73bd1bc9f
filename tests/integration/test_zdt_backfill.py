"""`pgferry backfill run|revert|status` on a real server, faults included (issue 17).

Each test runs application writes beside the backfill and asserts that none failed.
"""

from __future__ import annotations

import json
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as psql

from pgferry.pg import embedded
from tests.helpers import ROLE, Project, Result, write_project
from tests.helpers.zdt import EXTRA, Load, backfill, journal, one, sql, state

ROWS = 6000  # the rows SCHEMA makes
SCHEMA = """
CREATE TABLE counter (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, touched int NOT NULL
                      DEFAULT 0, territory text NOT NULL, email text, email_address text);
INSERT INTO counter (id, territory, email)
SELECT g, (ARRAY['EU', 'US', 'APAC'])[1 + g % 3], 'u' || g || '@x'
FROM generate_series(1, 6000) g;
"""


def touch(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    """The application: touches rows the backfill works on (row locks meet)."""
    conn.execute("UPDATE counter SET touched = touched + 1 WHERE id = %s", [rnd.randint(1, ROWS)])


def _project(p: Project) -> str:
    dev = p.dsns["dev"]
    sql(dev, SCHEMA)
    backfill(
        p,
        "bump",
        "-- not idempotent on purpose: a batch run twice shows\n"
        "UPDATE counter SET n = n + 1 WHERE id BETWEEN :lo AND :hi\n",
    )
    backfill(
        p,
        "copy_email",
        "UPDATE counter SET email_address = email\n"
        "WHERE id BETWEEN :lo AND :hi AND email_address IS NULL\n",
    )
    return dev


def test_batches_adapt_and_where_limits_them(zproj: Project, cli: Callable[..., Result]) -> None:
    dev = _project(zproj)
    cfg = ("--config", str(zproj.config))
    with Load(dev, touch) as load:
        r = cli(
            *cfg,
            "backfill",
            "run",
            "bump",
            "-e",
            "dev",
            "--where",
            "territory = 'EU'",
            "--batch-size",
            "100",
            "--target-duration",
            "50ms",
            "--json",
        )
        assert r.code == 0, r.err
        res = r.json
        assert res["status"] == "completed" and res["rows"] == ROWS // 3
        assert res["last_batch_size"] > 100  # grew toward 50 ms batches
        assert "rows/s" in r.err
        assert (
            one(dev, "SELECT count(*) FROM counter WHERE n = 1 AND territory = 'EU'") == ROWS // 3
        )
        assert one(dev, "SELECT count(*) FROM counter WHERE n <> 0 AND territory <> 'EU'") == 0
        again = cli(*cfg, "backfill", "run", "bump", "-e", "dev", "--where", "territory = 'EU'")
        assert again.code == 0 and "complete already" in again.out
        st = cli(*cfg, "backfill", "status", "-e", "dev", "--json").json
        assert [(b["name"], b["scope"], b["status"]) for b in st["backfills"]] == [
            ("bump", "territory = 'EU'", "completed")
        ]
        assert st["never_run"] == ["copy_email"]
    load.check()
    # a --where run is not the whole table: a guard's `after backfill bump` still waits
    assert state(dev, "bump")["scope"] == "territory = 'EU'"


def test_sigkill_mid_backfill_then_resume_loses_and_doubles_nothing(
    zproj: Project, cli: Callable[..., Result]
) -> None:
    dev = _project(zproj)
    # slow batches (a sleep per row), so the kill lands in the middle of the run
    backfill(
        zproj,
        "bump",
        "UPDATE counter SET n = n + 1\n"
        "WHERE id BETWEEN :lo AND :hi AND pg_sleep(0.0002) IS NOT NULL\n",
    )
    with Load(dev, touch) as load:
        proc = zproj.popen(
            "backfill", "run", "bump", "-e", "dev", "--batch-size", "150", "--target-duration", "0"
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = (
                one(dev, "SELECT batches FROM pgferry.backfill_state WHERE name = 'bump'")
                if one(dev, "SELECT to_regclass('pgferry.backfill_state') IS NOT NULL")
                else 0
            )
            if done and done >= 5:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = state(dev, "bump")
        assert 5 <= killed_at["batches"] < ROWS // 150, killed_at
        assert killed_at["status"] == "running"  # it never said goodbye
        # exactly the committed batches are done: none half-done, none lost
        assert one(dev, "SELECT count(*) FROM counter WHERE n = 1") == killed_at["rows"]
        r = cli("--config", str(zproj.config), "backfill", "run", "bump", "-e", "dev", "--json")
        assert r.code == 0, r.err
        assert r.json["resumed"] is True
        assert r.json["total_rows"] == ROWS
    load.check()
    assert one(dev, "SELECT count(*) FROM counter WHERE n = 1") == ROWS
    assert one(dev, "SELECT count(*) FROM counter WHERE n <> 1") == 0
    st = state(dev, "bump")
    assert st["status"] == "completed" and st["rows"] == ROWS and st["keys"] == ROWS
    runs = journal(dev, "backfill run")
    assert [j["outcome"] for j in runs] == ["died", "ok"]


def _hold(dsn: str, key: int, seconds: float, started: threading.Event) -> None:
    with psycopg.connect(dsn, application_name="nightly-report") as c:
        c.execute("SELECT * FROM counter WHERE id = %s FOR UPDATE", [key])
        started.set()
        time.sleep(seconds)
        c.rollback()


def test_a_held_lock_is_retried_then_reported(zproj: Project, cli: Callable[..., Result]) -> None:
    dev = _project(zproj)
    cfg = ("--config", str(zproj.config))
    started = threading.Event()
    with Load(dev, touch) as load:
        # a row lock released after 1 s: lock_timeout (100 ms) retries get past it
        t = threading.Thread(target=_hold, args=(dev, 2500, 1.0, started))
        t.start()
        started.wait(5)
        r = cli(
            *cfg,
            "backfill",
            "run",
            "copy_email",
            "-e",
            "dev",
            "--batch-size",
            "1000",
            "--target-duration",
            "0",
            "--json",
        )
        t.join()
        assert r.code == 0, r.err
        assert r.json["retries"] >= 1
        assert "lock timeout" in r.err and "retrying with" in r.err
        assert one(dev, "SELECT count(*) FROM counter WHERE email_address IS NULL") == 0

        # held longer than the retries last: exit 3, naming the holder; then it resumes
        sql(dev, "UPDATE counter SET email_address = NULL")
        (zproj.config).write_text(
            zproj.config.read_text().replace(
                'lock_timeout = "100ms"', 'lock_timeout = "100ms"\nlock_retries = 1'
            )
        )
        started.clear()
        t = threading.Thread(target=_hold, args=(dev, 4200, 4.0, started))
        t.start()
        started.wait(5)
        r = cli(
            *cfg,
            "backfill",
            "run",
            "copy_email",
            "-e",
            "dev",
            "--batch-size",
            "1000",
            "--target-duration",
            "0",
            "--restart",
        )
        assert r.code == 3, r.err
        assert "could not get" in r.err and "nightly-report" in r.err
        assert "stopped after 4 batch(es) (checkpoint kept: run it again to resume)" in r.err
        t.join()
        r = cli(*cfg, "backfill", "run", "copy_email", "-e", "dev", "--json")
        assert r.code == 0, r.err
        assert r.json["resumed"] is True and r.json["batches"] >= 1
    load.check()
    assert one(dev, "SELECT count(*) FROM counter WHERE email_address IS NULL") == 0


def test_a_sql_gate_rolls_the_batches_back(zproj: Project, cli: Callable[..., Result]) -> None:
    dev = _project(zproj)
    sql(dev, "CREATE TABLE knob (v int NOT NULL); INSERT INTO knob VALUES (0)")
    gate = """
[[gate]]
name = "app errors"
sql = "SELECT v FROM knob"
threshold = 0
for = "0s"
action = "rollback"
"""
    zproj.config.write_text(zproj.config.read_text() + gate)
    backfill(
        zproj,
        "copy_email",
        "UPDATE counter SET email_address = email\n"
        "WHERE id BETWEEN :lo AND :hi AND email_address IS NULL\n"
        "  AND pg_sleep(0.0002) IS NOT NULL\n",
    )
    sql(dev, "UPDATE counter SET email_address = 'kept' WHERE id = 1")

    def flip() -> None:
        while not (
            one(dev, "SELECT to_regclass('pgferry.backfill_state') IS NOT NULL")
            and (one(dev, "SELECT batches FROM pgferry.backfill_state") or 0) >= 3
        ):
            time.sleep(0.02)
        sql(dev, "UPDATE counter SET email_address = 'changed by the app' WHERE id = 2")
        sql(dev, "UPDATE knob SET v = 1")

    with Load(dev, touch) as load:
        t = threading.Thread(target=flip)
        t.start()
        r = cli(
            "--config",
            str(zproj.config),
            "backfill",
            "run",
            "copy_email",
            "-e",
            "dev",
            "--batch-size",
            "200",
            "--target-duration",
            "0",
        )
        t.join()
        assert r.code == 3, r.err
        assert "gate 'app errors' fired: value 1 > 0 (action rollback)" in r.err
        assert "backfill copy_email reverted in dev:" in r.err
        assert "1 changed since and kept" in r.err
    load.check()
    # every row the backfill wrote is back as it was; the row the app changed is kept
    assert one(dev, "SELECT count(*) FROM counter WHERE email_address IS NOT NULL") == 2
    assert one(dev, "SELECT email_address FROM counter WHERE id = 1") == "kept"
    assert one(dev, "SELECT email_address FROM counter WHERE id = 2") == "changed by the app"
    assert state(dev, "copy_email")["status"] == "reverted"
    last = journal(dev, "backfill run")[-1]
    assert last["outcome"] == "failed" and last["exit_code"] == 3
    assert last["details"]["gate"]["gate"] == "app errors"
    assert last["details"]["reverted"]["kept"] == 1
    assert one(dev, "SELECT count(*) FROM pgferry.backfill_images") == 0


def test_revert_by_hand(zproj: Project, cli: Callable[..., Result]) -> None:
    dev = _project(zproj)
    cfg = ("--config", str(zproj.config))
    with Load(dev, touch) as load:
        assert cli(*cfg, "backfill", "run", "copy_email", "-e", "dev").code == 0
        r = cli(*cfg, "backfill", "revert", "copy_email", "-e", "dev", "--json")
        assert r.code == 0, r.err
        assert r.json["rows"] == ROWS and r.json["kept"] == 0
    load.check()
    assert one(dev, "SELECT count(*) FROM counter WHERE email_address IS NOT NULL") == 0
    assert journal(dev, "backfill revert")[-1]["details"]["reverted"]["rows"] == ROWS
    # protected prod: --yes
    prod = zproj.dsns["prod"]
    sql(prod, SCHEMA)
    r = cli(*cfg, "backfill", "run", "copy_email", "-e", "prod")
    assert r.code == 4 and "needs --yes" in r.err


def test_split_table_insert_backfill_reverts(zproj: Project, cli: Callable[..., Result]) -> None:
    dev = _project(zproj)
    sql(dev, "CREATE TABLE profiles (id bigint PRIMARY KEY, email text)")
    backfill(
        zproj,
        "profiles",
        "INSERT INTO profiles (id, email)\n"
        "SELECT id, email FROM counter WHERE id BETWEEN :lo AND :hi\n"
        "ON CONFLICT (id) DO NOTHING\n",
    )
    sql(dev, "INSERT INTO profiles VALUES (10, 'already there')")
    cfg = ("--config", str(zproj.config))
    with Load(dev, touch) as load:
        r = cli(*cfg, "backfill", "run", "profiles", "-e", "dev", "--json")
        assert r.code == 0, r.err
        assert r.json["rows"] == ROWS - 1
        sql(dev, "UPDATE profiles SET email = 'edited' WHERE id = 20")
        r = cli(*cfg, "backfill", "revert", "profiles", "-e", "dev", "--json")
        assert r.code == 0, r.err
        assert (r.json["rows"], r.json["kept"]) == (ROWS - 2, 1)
    load.check()
    assert sql(dev, "SELECT id, email FROM profiles ORDER BY id") == [
        (10, "already there"),
        (20, "edited"),
    ]


BAD = [
    ("bad1", "UPDATE counter SET n = 1 WHERE id = :lo\n", "never uses :hi"),
    (
        "bad2",
        "UPDATE counter SET n = 1 WHERE id BETWEEN :lo AND :hi; SELECT 1;\n",
        "backfills/bad2.sql: a backfill is one statement, this file has 2",
    ),
    (
        "bad3",
        "SELECT * FROM counter WHERE id BETWEEN :lo AND :hi\n",
        "backfills/bad3.sql: a backfill is one statement that writes rows",
    ),
    (
        "bad4",
        "UPDATE counter SET n = WHERE id BETWEEN :lo AND :hi\n",
        'backfills/bad4.sql:1: syntax error at or near "WHERE"',
    ),
    (
        "bad5",
        "-- pgferry:tabel counter\nUPDATE counter SET n = 1 WHERE id BETWEEN :lo AND :hi\n",
        "backfills/bad5.sql:1: unknown directive pgferry:tabel in a backfill",
    ),
]


def test_bad_backfill_files_are_bad_input(zproj: Project, cli: Callable[..., Result]) -> None:
    _project(zproj)
    cfg = ("--config", str(zproj.config))
    for name, text, want in BAD:
        backfill(zproj, name, text)
        r = cli(*cfg, "backfill", "run", name, "-e", "dev")
        assert r.code == 2 and want in r.err and len(r.err.strip().splitlines()) == 1, (name, r.err)
    r = cli(*cfg, "backfill", "run", "nope", "-e", "dev")
    assert r.code == 2 and "there is no backfills/nope.sql (there are: bad1" in r.err
    r = cli(*cfg, "backfill", "run", "bump", "-e", "dev", "--where", "1; DROP TABLE counter")
    assert r.code == 2 and "is not one condition" in r.err
    r = cli(*cfg, "--json", "backfill", "run", "bump", "-e", "dev", "--where", "x = ")
    assert r.code == 2 and json.loads(r.out)["exit_code"] == 2


def test_revert_stops_at_a_batch_a_constraint_forbids(
    zproj: Project, cli: Callable[..., Result]
) -> None:
    """An expand's NOT VALID check forbids putting NULLs back: the revert says so and keeps
    the checkpoint (the rows stay as the backfill left them, which is what the trigger
    writes anyway)."""
    dev = _project(zproj)
    cfg = ("--config", str(zproj.config))
    with Load(dev, touch) as load:
        r = cli(
            *cfg,
            "backfill",
            "run",
            "copy_email",
            "-e",
            "dev",
            "--batch-size",
            "2000",
            "--target-duration",
            "0",
        )
        assert r.code == 0, r.err
        sql(
            dev,
            "ALTER TABLE counter ADD CONSTRAINT email_address_set "
            "CHECK (email_address IS NOT NULL) NOT VALID",
        )
        r = cli(*cfg, "backfill", "revert", "copy_email", "-e", "dev")
        assert r.code == 3
        assert (
            "reverted in dev: 0 batch(es), 0 row(s) put back; batch 3 and the ones before "
            "it stay as the backfill left them: their old values break constraint "
            "email_address_set" in r.err
        )
    load.check()
    assert one(dev, "SELECT count(*) FROM counter WHERE email_address IS NULL") == 0
    st = state(dev, "copy_email")
    assert (st["status"], st["batches"], st["rows"]) == ("completed", 3, ROWS)


def _deadlock(dsn: str) -> int:
    """Two sessions lock two rows in opposite orders: the server breaks the deadlock by
    failing one of them (which is what pg_stat_database.deadlocks counts)."""
    sql(
        dsn,
        "CREATE TABLE IF NOT EXISTS pair (id int PRIMARY KEY); "
        "INSERT INTO pair VALUES (1), (2) ON CONFLICT DO NOTHING",
    )
    failed: list[str] = []
    barrier = threading.Barrier(2)

    def one_way(first: int, second: int) -> None:
        with psycopg.connect(dsn) as c:
            try:
                c.execute("UPDATE pair SET id = id WHERE id = %s", [first])
                barrier.wait()
                c.execute("UPDATE pair SET id = id WHERE id = %s", [second])
                c.commit()
            except psycopg.errors.DeadlockDetected:
                failed.append("40P01")

    ts = [threading.Thread(target=one_way, args=a) for a in ((1, 2), (2, 1))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return len(failed)


def test_a_deadlock_in_the_database_pauses_the_backfill(
    zproj: Project, cli: Callable[..., Result]
) -> None:
    dev = _project(zproj)
    backfill(
        zproj,
        "bump",
        "UPDATE counter SET n = n + 1\n"
        "WHERE id BETWEEN :lo AND :hi AND pg_sleep(0.0003) IS NOT NULL\n",
    )
    with Load(dev, touch) as load:
        started = threading.Event()

        def deadlock_after_two_batches() -> None:
            _wait_batches(dev, "bump", 2)
            started.set()
            _deadlock(dev)

        t = threading.Thread(target=deadlock_after_two_batches)
        t.start()
        r = cli(
            "--config",
            str(zproj.config),
            "backfill",
            "run",
            "bump",
            "-e",
            "dev",
            "--batch-size",
            "300",
            "--target-duration",
            "0",
            "--json",
        )
        t.join()
        assert started.is_set()
        assert r.code == 0, r.err
        assert "pausing: 1 deadlock in the database since the last batch" in r.err
        assert r.json["pauses"][0]["reason"].startswith("1 deadlock")
        assert r.json["rows"] == ROWS
    load.check()
    assert one(dev, "SELECT count(*) FROM counter WHERE n <> 1") == 0


def _wait_batches(dsn: str, name: str, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (state(dsn, name).get("batches") or 0) < n:
        time.sleep(0.02)


def _lock_queue(dsn: str, seconds: float) -> None:
    """A report holds a row lock of another table; an application session queues behind it
    for ``seconds`` (what pg_locks shows as a waiting session)."""
    sql(
        dsn,
        "CREATE TABLE IF NOT EXISTS settings (id int PRIMARY KEY, v int); "
        "INSERT INTO settings VALUES (1, 0) ON CONFLICT DO NOTHING",
    )
    held = threading.Event()

    def waiter() -> None:
        held.wait(5)
        with psycopg.connect(dsn, autocommit=True, application_name="app-v1") as c:
            c.execute("UPDATE settings SET v = v + 1 WHERE id = 1")  # waits for the report

    t = threading.Thread(target=waiter)
    t.start()
    with psycopg.connect(dsn, application_name="nightly-report") as c:
        c.execute("SELECT * FROM settings WHERE id = 1 FOR UPDATE")
        held.set()
        time.sleep(seconds)
        c.rollback()
    t.join()


def test_sessions_waiting_for_locks_pause_the_backfill(
    zproj: Project, cli: Callable[..., Result]
) -> None:
    dev = _project(zproj)
    backfill(
        zproj,
        "bump",
        "UPDATE counter SET n = n + 1\n"
        "WHERE id BETWEEN :lo AND :hi AND pg_sleep(0.0005) IS NOT NULL\n",
    )
    with Load(dev, touch) as load:

        def queue_after_two_batches() -> None:
            _wait_batches(dev, "bump", 2)
            _lock_queue(dev, 3.0)

        t = threading.Thread(target=queue_after_two_batches)
        t.start()
        r = cli(
            "--config",
            str(zproj.config),
            "backfill",
            "run",
            "bump",
            "-e",
            "dev",
            "--batch-size",
            "300",
            "--target-duration",
            "0",
            "--json",
        )
        t.join()
        assert r.code == 0, r.err
        # a session waits longer than a second: the backfill waits with it, then goes on
        assert "pausing: 1 session(s) waiting for locks (before the backfill: 0)" in r.err
        assert "resuming after" in r.err
        pause = r.json["pauses"][0]
        assert pause["reason"].startswith("1 session(s) waiting for locks")
        assert pause["seconds"] > 0
        assert r.json["rows"] == ROWS
    load.check()
    assert one(dev, "SELECT count(*) FROM counter WHERE n <> 1") == 0


@pytest.fixture
def with_standby(tmp_path: Path) -> Iterator[tuple[Project, str]]:
    """A project whose dev is a database on a PostgreSQL 15 primary with a streaming standby
    (the superuser DSN of the standby comes second). The role may read replication
    statistics (``pg_read_all_stats``, as a hosted database's owner role usually may); it is
    not a superuser."""
    from tests import servers

    reason = servers.fetch(15)
    if reason is not None:
        pytest.skip(f"PostgreSQL 15 cannot be had here: {reason}; apt install postgresql-15")
    root, admin = servers.start(15)
    sroot: Path | None = None
    try:
        with psycopg.connect(admin, autocommit=True) as c:
            embedded.ensure_role(c, ROLE)
            c.execute(psql.SQL("GRANT pg_read_all_stats TO {}").format(psql.Identifier(ROLE)))
            c.execute(psql.SQL("CREATE DATABASE dev OWNER {}").format(psql.Identifier(ROLE)))
        sroot, standby = servers.start_standby(root, 15)
        extra = EXTRA.replace(
            'lock_timeout = "100ms"', 'lock_timeout = "100ms"\nmax_replication_lag = "1s"'
        )
        p = write_project(
            tmp_path / "proj", {"dev": embedded.role_dsn(admin, ROLE, "dev")}, extra=extra
        )
        (p.root / "backfills").mkdir()
        yield p, standby
    finally:
        if sroot is not None:
            servers.stop(sroot, 15)
        servers.stop(root, 15)


def test_replication_lag_pauses_the_backfill(
    with_standby: tuple[Project, str], cli: Callable[..., Result]
) -> None:
    p, standby = with_standby
    dev = _project(p)
    backfill(
        p,
        "bump",
        "UPDATE counter SET n = n + 1\n"
        "WHERE id BETWEEN :lo AND :hi AND pg_sleep(0.0005) IS NOT NULL\n",
    )

    def stall_replay() -> None:
        """The standby stops replaying for 4 s (as a long query on a replica would hold it);
        the primary's pg_stat_replication.replay_lag grows meanwhile."""
        _wait_batches(dev, "bump", 2)
        with psycopg.connect(standby, autocommit=True) as c:
            c.execute("SELECT pg_wal_replay_pause()")
            time.sleep(4)
            c.execute("SELECT pg_wal_replay_resume()")

    with Load(dev, touch) as load:
        t = threading.Thread(target=stall_replay)
        t.start()
        r = cli(
            "--config",
            str(p.config),
            "backfill",
            "run",
            "bump",
            "-e",
            "dev",
            "--batch-size",
            "300",
            "--target-duration",
            "0",
            "--json",
        )
        t.join()
        assert r.code == 0, r.err
        assert re.search(r"pausing: replication lag \d+\.\ds \(limit 1s\)", r.err), r.err
        assert "resuming after" in r.err
        assert r.json["pauses"][0]["reason"].startswith("replication lag")
        assert r.json["rows"] == ROWS
    load.check()
    assert one(dev, "SELECT count(*) FROM counter WHERE n <> 1") == 0
    # the standby has every batch once it replays again
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with psycopg.connect(standby.replace("dbname=postgres", "dbname=dev")) as c:
            if c.execute("SELECT count(*) FROM counter WHERE n = 1").fetchone() == (ROWS,):
                break
        time.sleep(0.1)
    else:
        raise AssertionError("the standby never caught up")

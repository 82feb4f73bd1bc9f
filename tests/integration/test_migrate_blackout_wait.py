"""A blackout window that begins while ``migrate up`` waits for the migration lock refuses
the run: the window is judged again, under the lock, just before anything runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from pgferry.migrate.locks import lock_key
from tests.helpers import q, write_project


def test_window_that_begins_while_waiting_for_the_lock_refuses(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    dev = make_db("dev")
    begins = datetime.now(UTC) + timedelta(seconds=4)
    p = write_project(
        tmp_path / "p",
        {"dev": dev},
        extra=(
            f'[[blackout]]\nfrom = "{begins.isoformat(timespec="seconds")}"\nreason = "freeze"\n'
        ),
    )
    p.write("V1__t.sql", "CREATE TABLE t (id bigint);\n")
    held = threading.Event()

    def hold_lock() -> None:  # another run holds the migration lock until the window began
        with psycopg.connect(dev, autocommit=True) as c:
            c.execute("SELECT pg_advisory_lock(%s)", [lock_key("public", "flyway_schema_history")])
            held.set()
            while datetime.now(UTC) < begins + timedelta(seconds=1):
                time.sleep(0.1)

    t = threading.Thread(target=hold_lock)
    t.start()
    held.wait(10)
    try:
        r = p.run("migrate", "up", "-e", "dev")
    finally:
        t.join()
    assert r.code == 4, r.err
    assert "blackout window" in r.err
    assert q(dev, "SELECT to_regclass('t')") == [(None,)]


def test_baseline_and_repair_that_wait_into_a_window_are_refused(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    """The same for the two commands that rewrite the history: judged again under the lock,
    before anything is written (the history is as it was)."""
    dev, fresh = make_db("dev"), make_db("fresh")
    begins = datetime.now(UTC) + timedelta(seconds=5)
    window = f'[[blackout]]\nfrom = "{begins.isoformat(timespec="seconds")}"\nreason = "freeze"\n'
    p = write_project(tmp_path / "p", {"dev": dev, "fresh": fresh}, extra=window)
    p.write("V1__t.sql", "CREATE TABLE t (id bigint);\n")
    assert p.run("migrate", "up", "-e", "dev").code == 0
    p.write("V1__t.sql", "CREATE TABLE t (id bigint); -- edited\n")  # repair would realign
    history = "SELECT version, checksum FROM flyway_schema_history ORDER BY installed_rank"
    before = q(dev, history)
    assert p.run("migrate", "validate", "-e", "dev").code == 1  # the checksum differs
    held = threading.Event()

    def hold_lock(dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("SELECT pg_advisory_lock(%s)", [lock_key("public", "flyway_schema_history")])
            held.set()
            while datetime.now(UTC) < begins + timedelta(seconds=1):
                time.sleep(0.1)

    holders = [threading.Thread(target=hold_lock, args=(d,)) for d in (dev, fresh)]
    for t in holders:
        held.clear()
        t.start()
        held.wait(10)
    args = {
        "repair": ("migrate", "repair", "-e", "dev", "--yes"),
        "baseline": ("migrate", "baseline", "-e", "fresh", "--version", "1"),
    }
    with ThreadPoolExecutor(2) as pool:  # both start before the window, and wait in it
        runs = {k: pool.submit(p.run, *a) for k, a in args.items()}
        for t in holders:
            t.join()
        results = {k: f.result() for k, f in runs.items()}
    for r in results.values():
        assert r.code == 4, r.out + r.err
        assert "blackout window" in r.err, r.err
    assert q(dev, history) == before
    assert q(fresh, "SELECT to_regclass('flyway_schema_history')") == [(None,)]

"""A statement of a non-transactional file that can run in a transaction is applied exactly
once: it commits together with its progress record, so a run that dies (or fails) between
the two cannot leave it applied but unrecorded, to be run again by the next ``up``."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.helpers import q, wait_for, write_project

pytestmark = pytest.mark.slow

SLOW_UPDATE = (
    "UPDATE acct SET balance = balance + 100 WHERE (SELECT true FROM pg_sleep({s}));\n"
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS acct_balance ON acct (balance);\n"
)


ACTIVE = (
    "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()"
    " AND query LIKE 'UPDATE acct%%' AND state = 'active' AND pid <> pg_backend_pid()"
)
IDLE = (
    "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database()"
    " AND query LIKE 'UPDATE acct%%' AND state = 'active' AND pid <> pg_backend_pid()"
)


@contextmanager
def holding(dsn: str, when: str, take: str, what: str) -> Iterator[threading.Event]:
    """While the block runs: once ``when`` is true in ``dsn``, a session runs ``take`` (a
    lock it holds until the block ends); yields an event set once it holds it."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        wait_for(dsn, when, timeout=20, what=what)
        with psycopg.connect(dsn) as c:
            c.execute(take)
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        yield held
    finally:
        release.set()
        t.join()


def test_sigkill_during_a_transactional_statement_on_13_applies_it_once(
    tmp_path: Path, make_db13: Callable[..., str]
) -> None:
    """PostgreSQL 13 has no client_connection_check_interval: a killed client's autocommit
    UPDATE runs to its end and commits. The next ``up`` must not run it a second time."""
    dev = make_db13("dev")
    p = write_project(tmp_path / "p", {"dev": dev})
    p.write(
        "V1__acct.sql",
        "CREATE TABLE acct (id int PRIMARY KEY, balance int);\nINSERT INTO acct VALUES (1, 0);\n",
    )
    assert p.run("migrate", "up", "-e", "dev").code == 0
    p.write("V2__credit.sql", SLOW_UPDATE.format(s=2))
    proc = p.popen("migrate", "up", "-e", "dev")
    wait_for(dev, ACTIVE, timeout=20, what="the UPDATE to run")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    # the orphaned statement finishes on the server (nothing cancels it on 13)
    wait_for(dev, IDLE, timeout=20, what="the orphaned UPDATE to end")
    time.sleep(0.5)
    r = p.run("migrate", "up", "-e", "dev")
    if r.code == 4:  # refused as interrupted: repair, then resume
        assert p.run("migrate", "repair", "-e", "dev", "--yes").code == 0
        r = p.run("migrate", "up", "-e", "dev")
    assert r.code == 0, r.err
    assert q(dev, "SELECT balance FROM acct") == [(100,)]


def test_progress_write_failing_after_a_statement_does_not_claim_nothing_applied(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    """The statement commits, then recording it fails (here: a lock on its progress row
    outlasts lock_timeout). The run said "nothing of this file was applied" and forgot the
    progress, so the next ``up`` ran the UPDATE again."""
    dev = make_db("dev")
    p = write_project(tmp_path / "p", {"dev": dev}, extra="[migrate]\nlock_retries = 0\n")
    p.write(
        "V1__acct.sql",
        "CREATE TABLE acct (id int PRIMARY KEY, balance int);\nINSERT INTO acct VALUES (1, 0);\n",
    )
    assert p.run("migrate", "up", "-e", "dev").code == 0
    p.write("V2__credit.sql", SLOW_UPDATE.format(s=1.5))
    with holding(
        dev, ACTIVE, "SELECT 1 FROM pgferry.migration_progress FOR UPDATE", "the UPDATE to run"
    ) as held:
        r = p.run("migrate", "up", "-e", "dev")
    assert held.is_set()
    assert r.code == 3, r.err
    # what the run says is so: the UPDATE rolled back with its record, nothing recorded
    assert "nothing of this statement was applied" in r.err, r.err
    assert q(dev, "SELECT balance FROM acct") == [(0,)]
    r = p.run("migrate", "up", "-e", "dev")
    assert r.code == 0, r.err
    assert q(dev, "SELECT balance FROM acct") == [(100,)]


def test_a_do_block_that_commits_still_runs_in_a_non_transactional_file(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    """A DO block or CALL may COMMIT in batches: it keeps running on its own, in autocommit
    (in a transaction it would fail with 'invalid transaction termination')."""
    dev = make_db("dev")
    p = write_project(tmp_path / "p", {"dev": dev})
    p.write(
        "V1__batches.sql",
        "CREATE TABLE b (id bigint);\n"
        "DO $$ BEGIN FOR i IN 1..3 LOOP INSERT INTO b VALUES (i); COMMIT; END LOOP; END $$;\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS b_id ON b (id);\n",
    )
    r = p.run("migrate", "up", "-e", "dev")
    assert r.code == 0, r.err
    assert q(dev, "SELECT count(*) FROM b") == [(3,)]


def test_history_write_failing_after_the_last_statement_is_not_nothing_applied(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    """Every statement of the file completed, then its history row could not be written
    (here: a session holds the history table past lock_timeout). The run said "nothing of
    this file was applied" and forgot its progress, so each later ``up`` ran the
    CREATE INDEX CONCURRENTLY again and failed on the index it had built."""
    dev = make_db("dev")
    p = write_project(tmp_path / "p", {"dev": dev}, extra="[migrate]\nlock_retries = 0\n")
    p.write(
        "V1__t.sql",
        "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1), (2), (3);\n"
        "CREATE FUNCTION slow(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql"
        " AS $$ BEGIN PERFORM pg_sleep(0.3); RETURN x; END $$;\n",
    )
    assert p.run("migrate", "up", "-e", "dev").code == 0
    p.write("V2__idx.sql", "CREATE INDEX CONCURRENTLY t_slow ON t (slow(a));\n")
    building = (
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX%%'"
        " AND state = 'active'"
    )
    # LOCK takes no snapshot: the build goes on
    with holding(
        dev, building, "LOCK TABLE flyway_schema_history IN ROW EXCLUSIVE MODE", "the build"
    ) as held:
        r = p.run("migrate", "up", "-e", "dev")
    assert held.is_set()
    assert r.code == 3, r.err
    assert "nothing of this" not in r.err, r.err
    assert "all 1 statements are applied" in r.err, r.err
    assert q(dev, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_slow'::regclass") == [
        (True,)
    ]
    r = p.run("migrate", "up", "-e", "dev")
    if r.code == 4:  # the failed row: repair, then up records the file
        assert p.run("migrate", "repair", "-e", "dev", "--yes").code == 0
        r = p.run("migrate", "up", "-e", "dev")
    assert r.code == 0, r.err
    assert q(dev, "SELECT script FROM flyway_schema_history WHERE success ORDER BY 1") == [
        ("V1__t.sql",),
        ("V2__idx.sql",),
    ]

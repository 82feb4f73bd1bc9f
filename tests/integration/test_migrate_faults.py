"""Faults under the migration runner, for real: SIGKILL, concurrent runs, held locks, CIC.

These use the real ``pgferry`` process (``Project.popen``/``run``) where a
process has to die or two have to race.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.helpers import Project, q, write_project

pytestmark = pytest.mark.slow
LOCK_APP = "pgferry migrate"


def wait_for(cond: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def active(dsn: str, like: str) -> list[tuple[Any, ...]]:
    return q(
        dsn,
        "SELECT pid, application_name, state FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE %s AND state = 'active'"
        " AND pid <> pg_backend_pid()",
        [like],
    )


def advisory_locks(dsn: str) -> int:
    return int(
        q(
            dsn,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())",
        )[0][0]
    )


def pgferry_backends(dsn: str) -> int:
    return int(
        q(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'pgferry%%' AND pid <> pg_backend_pid()",
        )[0][0]
    )


def kill_when_running(p: subprocess.Popen[str], dsn: str, like: str) -> None:
    wait_for(lambda: active(dsn, like), what=f"{like} to run")
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)


def test_sigkill_in_transactional_file(project: Project) -> None:
    dev = project.dsns["dev"]
    project.write("V1__base.sql", "CREATE TABLE base (id int);")
    project.write(
        "V2__slow.sql",
        "CREATE TABLE half (id int);\nINSERT INTO base VALUES (1);\nSELECT pg_sleep(30);\n",
    )
    p = project.popen("migrate", "up", "-e", "dev")
    kill_when_running(p, dev, "SELECT pg_sleep(30)")
    # the server notices the dead client: the lock and the work backend go away
    wait_for(
        lambda: advisory_locks(dev) == 0 and pgferry_backends(dev) == 0,
        15,
        "the advisory lock and backends of the killed run to go",
    )
    assert q(dev, "SELECT to_regclass('half'), (SELECT count(*) FROM base)") == [(None, 0)]
    assert q(dev, "SELECT script, success FROM flyway_schema_history") == [("V1__base.sql", True)]
    project.write("V2__slow.sql", "CREATE TABLE half (id int);\nINSERT INTO base VALUES (1);\n")
    r = project.run("migrate", "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert [a["script"] for a in r.json["applied"]] == ["V2__slow.sql"]
    assert q(dev, "SELECT count(*) FROM base") == [(1,)]


def test_sigkill_in_non_transactional_file_then_repair_resumes(project: Project) -> None:
    dev = project.dsns["dev"]
    project.write("V1__t.sql", "CREATE TABLE t (a int); INSERT INTO t VALUES (1), (2);")
    project.write(
        "V2__idx.sql",
        "CREATE INDEX CONCURRENTLY t_a ON t (a);\n"
        "SELECT pg_sleep(30);\nCREATE INDEX CONCURRENTLY t_a2 ON t (a);\n",
    )
    p = project.popen("migrate", "up", "-e", "dev")
    kill_when_running(p, dev, "SELECT pg_sleep(30)")
    # the next up records the interrupted file as failed and refuses until repaired
    r = project.run("migrate", "up", "-e", "dev")
    assert r.code == 4, r.err
    assert "2 (V2__idx.sql) failed" in r.err
    assert "interrupted at statement 2 of 3 (1 completed)" in r.err
    st = project.run("migrate", "status", "-e", "dev", "--json")
    failed = [e for e in st.json["entries"] if e["state"] == "failed"]
    assert [(e["script"], e["failed_statement"]["statement"]) for e in failed] == [
        ("V2__idx.sql", 2)
    ]
    assert "interrupted" in failed[0]["failed_statement"]["error"]
    assert q(
        dev, "SELECT statements_done, failed_statement, state FROM pgferry.migration_progress"
    ) == [(1, 2, "failed")]
    r = project.run("migrate", "repair", "-e", "dev", "--yes")
    assert r.code == 0, r.err
    project.write(
        "V2__idx.sql",
        "CREATE INDEX CONCURRENTLY t_a ON t (a);\n"
        "SELECT pg_sleep(0);\nCREATE INDEX CONCURRENTLY t_a2 ON t (a);\n",
    )
    r = project.run("migrate", "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert r.json["applied"][0]["resumed_after"] == 1
    assert q(
        dev, "SELECT count(*) FROM pg_index WHERE indrelid = 't'::regclass AND indisvalid"
    ) == [(2,)]
    assert q(dev, "SELECT script, success FROM flyway_schema_history ORDER BY 1") == [
        ("V1__t.sql", True),
        ("V2__idx.sql", True),
    ]


def test_two_concurrent_runs_apply_each_version_once(project: Project, tmp_path: Any) -> None:
    dev = project.dsns["dev"]
    project.config.write_text(project.config.read_text() + '[migrate]\nlock_timeout = "60s"\n')
    # V1 waits for an advisory lock the test holds, so the first run stays inside it
    project.write("V1__a.sql", "CREATE TABLE a (); SELECT pg_advisory_xact_lock(4242);")
    project.write("V2__b.sql", "CREATE TABLE b ();")
    gate = psycopg.connect(dev, autocommit=True)
    gate.execute("SELECT pg_advisory_lock(4242)")
    try:
        first = project.popen("migrate", "up", "-e", "dev", "--json")
        second = project.popen("migrate", "up", "-e", "dev", "--json")
        wait_for(
            lambda: q(
                dev,
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                " AND objid = 4242 AND NOT granted",
            ),
            what="a run inside V1",
        )
        holder = q(
            dev,
            "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
            [LOCK_APP],
        )
        # a third run with a short lock_wait gives up and names the holder
        impatient = write_project(
            tmp_path / "impatient",
            {"dev": dev},
            extra=(f'[migrate]\ndir = "{project.migrations}"\nlock_wait = "300ms"\n'),
        )
        r = impatient.run("migrate", "up", "-e", "dev")
        assert r.code == 3, r.err
        assert "another migration run holds the migration lock" in r.err
        assert f"pid {holder[0][0]} ({LOCK_APP}" in r.err
    finally:
        gate.close()  # lets V1 finish
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    assert q(dev, "SELECT version, count(*) FROM flyway_schema_history GROUP BY 1 ORDER BY 1") == [
        ("1", 1),
        ("2", 1),
    ]


def test_lock_timeout_retries_and_does_not_block_readers(tmp_path: Any, make_db: Any) -> None:
    dsn = make_db("lt")
    p = write_project(
        tmp_path / "lt", {"dev": dsn}, extra='[migrate]\nlock_timeout = "250ms"\nlock_retries = 2\n'
    )
    p.write("V1__t.sql", "CREATE TABLE t (a int); INSERT INTO t VALUES (1);")
    assert p.run("migrate", "up", "-e", "dev").code == 0
    p.write("V2__alter.sql", "ALTER TABLE t ADD COLUMN b int;")
    holder = psycopg.connect(dsn, application_name="long-report")
    holder.execute("SELECT count(*) FROM t")  # ACCESS SHARE held by an open transaction
    reads: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        # the server times each read: one queued behind the waiting ALTER for longer than
        # about lock_timeout is cancelled by statement_timeout, and counted
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("SET statement_timeout = '1250ms'")
            while not stop.is_set():
                try:
                    c.execute("SELECT count(*) FROM t").fetchone()
                    reads.append("ok")
                except psycopg.errors.QueryCanceled:
                    reads.append("waited too long")
                time.sleep(0.01)

    th = threading.Thread(target=reader)
    th.start()
    try:
        t0 = time.monotonic()
        r = p.run("migrate", "up", "-e", "dev")
        took = time.monotonic() - t0
    finally:
        stop.set()
        th.join()
        pid = holder.info.backend_pid
        holder.close()
    assert r.code == 3, r.err
    assert "V2__alter.sql at line 1: could not get AccessExclusiveLock on t" in r.err
    assert f"held by pid {pid} (long-report, user pgferry_test, idle in transaction" in r.err
    assert "after 3 attempts" in r.err
    assert took > 0.75  # three attempts of 250ms
    # readers queued behind the waiting ALTER for at most about lock_timeout
    assert reads and "waited too long" not in reads, reads
    assert q(dsn, "SELECT count(*) FROM flyway_schema_history") == [(1,)]
    r = p.run("migrate", "up", "-e", "dev")  # once the holder is gone it applies
    assert r.code == 0, r.err


def test_create_index_concurrently_no_self_deadlock(project: Project) -> None:
    """The lock connection stays idle (no snapshot) while CIC waits for old transactions."""
    dev = project.dsns["dev"]
    project.write(
        "V1__t.sql",
        "CREATE TABLE t (a int); INSERT INTO t SELECT g FROM generate_series(1, 20000) g;",
    )
    project.write("V2__idx.sql", "SELECT pg_sleep(1);\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n")
    p = project.popen("migrate", "up", "-e", "dev", "--json")
    wait_for(lambda: active(dev, "SELECT pg_sleep(1)"), what="the sleep")
    seen = set()
    for _ in range(10):  # the lock connection runs short sampling queries, never holds a tx
        seen |= set(
            q(
                dev,
                "SELECT state, backend_xmin IS NULL FROM pg_stat_activity"
                " WHERE application_name = %s",
                [LOCK_APP],
            )
        )
        time.sleep(0.05)
    assert ("idle", True) in seen and not any(st == "idle in transaction" for st, _ in seen)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert q(dev, "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_a'::regclass") == [(True,)]


def test_terminated_work_backend_is_exit_3(project: Project) -> None:
    dev = project.dsns["dev"]
    project.write("V1__slow.sql", "CREATE TABLE s (); SELECT pg_sleep(30);")
    p = project.popen("migrate", "up", "-e", "dev")
    pid = wait_for(lambda: active(dev, "%pg_sleep(30)%"), what="the sleep")[0][0]
    q(dev, "SELECT pg_terminate_backend(%s)", [pid])
    out, err = p.communicate(timeout=30)
    assert p.returncode == 3, err
    assert "terminat" in err and "Traceback" not in err
    assert q(dev, "SELECT to_regclass('s')") == [(None,)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_rolls_back_and_exits_3(project: Project, sig: int) -> None:
    dev = project.dsns["dev"]
    project.write("V1__slow.sql", "CREATE TABLE s (); SELECT pg_sleep(30);")
    p = subprocess.Popen(  # as a terminal would: SIGINT not ignored
        [
            sys.executable,
            "-m",
            "pgferry",
            "--config",
            str(project.config),
            "migrate",
            "up",
            "-e",
            "dev",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for(lambda: active(dev, "%pg_sleep(30)%"), what="the sleep")
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 3 and "error: interrupted" in err, err
    assert q(dev, "SELECT to_regclass('s'), (SELECT count(*) FROM flyway_schema_history)") == [
        (None, 0)
    ]
    assert q(dev, "SELECT outcome, exit_code FROM pgferry.journal") == [("failed", 3)]
    wait_for(lambda: advisory_locks(dev) == 0, 10, "the lock to go")


def test_losing_the_lock_connection_stops_the_run(project: Project) -> None:
    """A file commits only while the run holds the lock; it rolls back otherwise."""
    dev = project.dsns["dev"]
    project.write("V1__slow.sql", "CREATE TABLE one (); SELECT pg_sleep(1.5);")
    project.write("V2__next.sql", "CREATE TABLE two ();")
    p = project.popen("migrate", "up", "-e", "dev")
    wait_for(lambda: active(dev, "%pg_sleep(1.5)%"), what="V1")
    lock_pid = q(dev, "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [LOCK_APP])[
        0
    ][0]
    q(dev, "SELECT pg_terminate_backend(%s)", [lock_pid])
    out, err = p.communicate(timeout=30)
    assert p.returncode == 3, err
    assert "lost the migration lock" in err and "V1__slow.sql" in err
    assert q(dev, "SELECT to_regclass('one'), to_regclass('two')") == [(None, None)]
    r = project.run("migrate", "up", "-e", "dev")  # a re-run applies both
    assert r.code == 0, r.err
    assert q(dev, "SELECT count(*) FROM flyway_schema_history") == [(2,)]

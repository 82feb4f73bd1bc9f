"""A failed or killed unnamed CREATE INDEX CONCURRENTLY leaves an INVALID index; the retry finds
it by its definition and drops it, instead of building `..._idx1` beside it (issue 10 item 17).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psycopg
import pytest

from tests.helpers import Project, q

pytestmark = pytest.mark.slow


def indexes(dsn: str) -> list[tuple[Any, ...]]:
    return q(
        dsn,
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c"
        " ON c.oid = i.indexrelid WHERE i.indrelid = 't'::regclass ORDER BY 1",
    )


def test_failed_unnamed_build_is_found_by_definition(project: Project) -> None:
    dev = project.dsns["dev"]
    project.write(
        "V1__t.sql",
        "CREATE TABLE t (a int, b int, c text);\n"
        "INSERT INTO t VALUES (1, 1, 'X'), (2, 1, 'x'), (3, 2, 'y'), (3, 2, 'z');\n",
    )
    assert project.run("migrate", "up").code == 0
    # an unrelated INVALID index with another definition must stay
    with psycopg.connect(dev, autocommit=True) as c, pytest.raises(psycopg.Error):
        c.execute("CREATE UNIQUE INDEX CONCURRENTLY other_invalid ON t (a) WHERE b > 0")
    project.write("V2__idx.sql", "CREATE UNIQUE INDEX CONCURRENTLY ON t (lower(c)) WHERE b > 0;\n")
    r = project.run("migrate", "up")
    assert r.code == 3 and "could not create unique index" in r.err, r.err
    assert indexes(dev) == [("other_invalid", False), ("t_lower_idx", False)]
    q(dev, "DELETE FROM t WHERE c = 'X'")
    r = project.run("migrate", "up", "--json")
    assert r.code == 0, r.err
    assert r.json["applied"][0]["dropped_invalid_indexes"] == ["public.t_lower_idx"]
    assert indexes(dev) == [("other_invalid", False), ("t_lower_idx", True)]


def test_killed_unnamed_build_is_dropped_before_the_retry(project: Project) -> None:
    dev = project.dsns["dev"]
    project.write(
        "V1__t.sql",
        "CREATE TABLE t (a int, b int);\n"
        "INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g;\n",
    )
    assert project.run("migrate", "up").code == 0
    project.write("V2__idx.sql", "CREATE INDEX CONCURRENTLY ON t (b);\n")
    # an open writer makes the build wait after its INVALID index exists
    writer = psycopg.connect(dev)
    writer.execute("INSERT INTO t VALUES (0, 0)")
    p = project.popen("migrate", "up")
    try:
        deadline = time.monotonic() + 20
        while not q(
            dev, "SELECT 1 FROM pg_index WHERE indrelid = 't'::regclass AND NOT indisvalid"
        ):
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        # the server cancels the dead client's build (client_connection_check_interval)
        deadline = time.monotonic() + 15
        while q(
            dev,
            "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE"
            " 'CREATE INDEX CONCURRENTLY%' AND pid <> pg_backend_pid()",
        ):
            assert time.monotonic() < deadline, "the killed run's build went on"
            time.sleep(0.1)
    finally:
        writer.rollback()
        writer.close()
    assert indexes(dev) == [("t_b_idx", False)]
    r = project.run("migrate", "up", "--json")
    assert r.code == 0, r.err
    assert r.json["applied"][0]["dropped_invalid_indexes"] == ["public.t_b_idx"]
    assert indexes(dev) == [("t_b_idx", True)]

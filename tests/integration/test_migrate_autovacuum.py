"""Autovacuum as the blocker (issue 10 item 18): named as such, and waited past
deadlock_timeout, when the server cancels it for a lock waiter.

A real autovacuum on a dedicated server (PostgreSQL 15 from Debian, ``autovacuum_naptime =
1s``): a table with many dead rows and per-table cost settings that make the worker crawl,
so it holds its SHARE UPDATE EXCLUSIVE lock for minutes unless the server cancels it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgferry.pg import embedded
from tests import servers
from tests.helpers import ROLE, Project, write_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vacuuming_server() -> Iterator[str]:
    if servers.bindir(15) is None:
        pytest.skip("PostgreSQL 15 is not installed: apt install postgresql-15")
    root, dsn = servers.start(15, {"autovacuum_naptime": "1s", "deadlock_timeout": "1s"})
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            embedded.ensure_role(c, ROLE)
            c.execute(sql.SQL("CREATE DATABASE av OWNER {}").format(sql.Identifier(ROLE)))
        yield dsn
    finally:
        servers.stop(root, 15)


def autovacuum_on(admin: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(admin, autocommit=True) as c:
        return c.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type ="
            " 'autovacuum worker' AND query LIKE %s",
            [f"%{table}%"],
        ).fetchall()


def crawling_vacuum(admin: str, app: str, table: str) -> None:
    """Make autovacuum start on ``table`` and crawl (about 0.1 s per page)."""
    with psycopg.connect(app, autocommit=True) as c:
        c.execute(
            sql.SQL(
                "CREATE TABLE {t} (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);"
                " INSERT INTO {t} SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g;"
                " UPDATE {t} SET v = v || 'y';"
                " ALTER TABLE {t} SET (autovacuum_enabled = true, autovacuum_vacuum_threshold = 0,"
                " autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_cost_delay = 100,"
                " autovacuum_vacuum_cost_limit = 1)"
            ).format(t=sql.Identifier(table))
        )
    deadline = time.monotonic() + 60
    while not autovacuum_on(admin, table):
        assert time.monotonic() < deadline, "autovacuum never started"
        time.sleep(0.2)


def project_on(tmp_path: Path, admin: str, retries: int) -> Project:
    dsn = embedded.role_dsn(admin, ROLE, "av")
    return write_project(
        tmp_path / "p",
        {"dev": dsn},
        extra=f'[migrate]\nlock_timeout = "250ms"\nlock_retries = {retries}\n',
    )


def test_autovacuum_is_named_when_it_blocks(vacuuming_server: str, tmp_path: Path) -> None:
    p = project_on(tmp_path, vacuuming_server, 0)
    crawling_vacuum(vacuuming_server, p.dsns["dev"], "named")
    p.write("V1__alter.sql", "ALTER TABLE named ADD COLUMN extra int;")
    r = p.run("migrate", "up")
    assert r.code == 3, r.err
    assert "could not get AccessExclusiveLock on named, held by pid" in r.err
    assert "an autovacuum worker" in r.err and "insufficient privilege" not in r.err


def test_retry_waits_past_deadlock_timeout_for_autovacuum(
    vacuuming_server: str, tmp_path: Path
) -> None:
    p = project_on(tmp_path, vacuuming_server, 2)
    crawling_vacuum(vacuuming_server, p.dsns["dev"], "busy")
    p.write("V1__alter.sql", "ALTER TABLE busy ADD COLUMN extra int;")
    p.write("V2__index.sql", "CREATE INDEX CONCURRENTLY busy_v ON busy (v);")
    r = p.run("migrate", "up", "--json")
    assert r.code == 0, r.err
    assert r.json["applied"][0]["attempts"] >= 2  # the first attempt met autovacuum

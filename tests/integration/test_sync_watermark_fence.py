"""The watermark fence covers subtransactions and prepared transactions (issue 9, item 6).

A transaction that was running when a sync took its snapshot may commit later rows
whose watermark is older than the one stored. Written inside a savepoint, such a row
carries a subtransaction id, which ``pg_snapshot_xip`` never lists; the fence on the
snapshot's xmin covers it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.helpers import Project, Result, sql, write_project
from tests.helpers.sync import WATERMARK_CONF as CONF
from tests.helpers.sync import WATERMARK_DDL as DDL

SIDE = "CREATE TABLE side (id int PRIMARY KEY DEFAULT 1);"


def ids(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as c:
        return [r[0] for r in c.execute("SELECT id FROM events ORDER BY id")]


def setup(p: Project) -> None:
    for dsn in p.dsns.values():
        sql(dsn, DDL + SIDE)
    sql(p.dsns["dev"], "INSERT INTO events SELECT g, 'v' FROM generate_series(1, 50) g")


def sync(cli: Callable[..., Result], p: Project) -> Result:
    r = cli("--config", str(p.config), "--json", "sync", "dev", "prod")
    assert r.code == 0, r.out + r.err
    return r


@contextmanager
def early(dsn: str) -> Iterator[psycopg.Connection[object]]:
    """A transaction with an xid (it wrote) and an old now(), still open."""
    c = psycopg.connect(dsn)
    c.execute("INSERT INTO side VALUES (DEFAULT) ON CONFLICT DO NOTHING RETURNING 1")
    c.execute("SELECT pg_current_xact_id()")  # an xid, whether the insert wrote or not
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def proj(tmp_path: Path, make_db: Callable[..., str]) -> Project:
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=(), extra=CONF
    )
    setup(p)
    return p


def test_a_row_written_in_a_savepoint_after_the_snapshot_is_copied_later(
    proj: Project, cli: Callable[..., Result]
) -> None:
    with early(proj.dsns["dev"]) as tx:
        sync(cli, proj)  # its snapshot sees tx in progress
        tx.execute("SAVEPOINT s1")
        tx.execute("INSERT INTO events (id, v) VALUES (900, 'in a savepoint')")
        tx.execute("RELEASE SAVEPOINT s1")
        sql(proj.dsns["dev"], "INSERT INTO events (id, v) VALUES (51, 'newer')")
        sync(cli, proj)
        tx.commit()
    r = sync(cli, proj)
    ev = r.json["tables"][0]
    assert ev["strategy"] == "watermark" and ev["inserted"] == 1
    assert ids(proj.dsns["prod"]) == ids(proj.dsns["dev"])


def test_nested_orm_style_transactions(proj: Project, cli: Callable[..., Result]) -> None:
    with early(proj.dsns["dev"]) as tx:
        sync(cli, proj)
        with tx.transaction(), tx.transaction():  # two levels of savepoints
            tx.execute("INSERT INTO events (id, v) VALUES (901, 'nested')")
        with tx.transaction():
            tx.execute("UPDATE events SET v = 'changed in a savepoint' WHERE id = 5")
        tx.commit()
    sync(cli, proj)
    with psycopg.connect(proj.dsns["prod"]) as c:
        assert c.execute("SELECT v FROM events WHERE id = 5").fetchone() == (
            "changed in a savepoint",
        )
    assert ids(proj.dsns["prod"]) == ids(proj.dsns["dev"])


def test_a_prepared_transaction_committed_after_the_sync(
    tmp_path: Path,
    make_db15: Callable[..., str],
    make_db: Callable[..., str],
    cli: Callable[..., Result],
) -> None:
    """Two-phase commit (the PostgreSQL 15 test server allows prepared transactions)."""
    p = write_project(
        tmp_path / "p2",
        {"dev": make_db15("dev"), "prod": make_db("prod")},
        protected=(),
        extra=CONF,
    )
    setup(p)
    try:
        with early(p.dsns["dev"]) as tx:
            tx.execute("SAVEPOINT s")
            tx.execute("INSERT INTO events (id, v) VALUES (902, 'prepared')")
            tx.execute("RELEASE SAVEPOINT s")
            tx.execute("PREPARE TRANSACTION 'pgferry_fence_test'")
            sync(cli, p)  # the prepared transaction is in progress for this snapshot
        sql(p.dsns["dev"], "COMMIT PREPARED 'pgferry_fence_test'")
    finally:  # a prepared transaction left behind would keep the database from dropping
        with psycopg.connect(p.dsns["dev"], autocommit=True) as c:
            if c.execute(
                "SELECT 1 FROM pg_prepared_xacts WHERE gid = 'pgferry_fence_test'"
            ).fetchone():
                c.execute("ROLLBACK PREPARED 'pgferry_fence_test'")
    r = sync(cli, p)
    assert r.json["tables"][0]["inserted"] == 1
    assert ids(p.dsns["prod"]) == ids(p.dsns["dev"])

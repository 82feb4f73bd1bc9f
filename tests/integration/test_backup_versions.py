"""Backups of older servers (PostgreSQL 15 and 13), with the newest pg_dump and pg_restore."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as psql

from tests.helpers import ROLE, Project, Result, run, sql, write_project
from tests.helpers.backup import COUNTS, SCHEMA, counts, drop_scratch_databases, fingerprint


@pytest.fixture(params=[15, 13])
def old_proj(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    admin = request.getfixturevalue(f"pg{request.param}_admin_dsn")
    make = request.getfixturevalue(f"make_db{request.param}")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(psql.SQL("ALTER ROLE {} CREATEDB").format(psql.Identifier(ROLE)))
    p = write_project(tmp_path / "old", {"prod": make("prod")})
    sql(p.dsns["prod"], SCHEMA)
    yield p
    drop_scratch_databases(admin)


def test_create_verify_and_every_restore_on_an_older_server(
    old_proj: Project, cli: Callable[..., Result]
) -> None:
    dsn = old_proj.dsns["prod"]
    bid = run(cli, old_proj, "backup", "create", "--env", "prod", "--json").json["id"]
    r = run(cli, old_proj, "backup", "verify", bid, "--restore-test", "--json")
    assert r.code == 0 and r.json["restore_test_ok"], r.out + r.err
    sql(dsn, "DELETE FROM orders WHERE id > 10")
    r = run(
        cli,
        old_proj,
        "backup",
        "restore",
        bid,
        "--env",
        "prod",
        "--yes",
        "--tables",
        "public.orders",
    )
    assert r.code == 0, r.out + r.err
    assert counts(dsn) == COUNTS
    sql(dsn, 'DELETE FROM orders WHERE id > 10; DELETE FROM "odd Schema"."Mixed Case"')
    r = run(cli, old_proj, "backup", "restore", bid, "--env", "prod", "--yes")
    assert r.code == 0, r.out + r.err
    assert counts(dsn) == COUNTS
    r = run(cli, old_proj, "backup", "restore", bid, "--env", "prod", "--into-new", "bk_new_old")
    assert r.code == 0, r.out + r.err
    # a restore that fails half-way still rolls back on an older server
    sql(
        dsn,
        "CREATE TABLE refunds (order_id bigint REFERENCES orders); INSERT INTO refunds VALUES (1)",
    )
    sql(dsn, "DELETE FROM orders WHERE id > 3000")
    before = fingerprint(dsn)
    r = run(cli, old_proj, "backup", "restore", bid, "--env", "prod", "--yes")
    assert r.code == 3 and "rolled back" in r.err, r.out + r.err
    assert fingerprint(dsn) == before

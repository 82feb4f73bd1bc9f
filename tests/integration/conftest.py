"""Fixtures shared by integration tests of one capability (their helpers: :mod:`tests.helpers`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as psql

from tests.helpers import ROLE, Project, prom, sql, write_project
from tests.helpers.backup import SCHEMA as BACKUP_SCHEMA
from tests.helpers.backup import drop_scratch_databases
from tests.helpers.zdt import EXTRA as ZDT_EXTRA


@pytest.fixture(scope="session")
def createdb_role(pg_admin_dsn: str, role: str) -> str:
    """The test role may create databases (scratch databases of a test restore, --into-new),
    as a hosted database's owner role usually may (Neon, RDS)."""
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        c.execute(psql.SQL("ALTER ROLE {} CREATEDB").format(psql.Identifier(ROLE)))
    return role


@pytest.fixture
def bproj(
    tmp_path: Path, make_db: Callable[..., str], createdb_role: str, pg_admin_dsn: str
) -> Iterator[Project]:
    """dev and a protected prod with data; databases the test makes by name are dropped."""
    p = write_project(tmp_path / "proj", {"dev": make_db("dev"), "prod": make_db("prod")})
    sql(p.dsns["prod"], BACKUP_SCHEMA)
    yield p
    drop_scratch_databases(pg_admin_dsn)


@pytest.fixture
def zproj(tmp_path: Path, make_db: Callable[..., str]) -> Iterator[Project]:
    """dev and a protected prod, with a backfills/ directory and short windows (zero-downtime
    tests)."""
    p = write_project(
        tmp_path / "proj", {"dev": make_db("dev"), "prod": make_db("prod")}, extra=ZDT_EXTRA
    )
    (p.root / "backfills").mkdir()
    yield p


@pytest.fixture(scope="session")
def prometheus() -> Iterator[prom.Prometheus]:
    """A real Prometheus on 127.0.0.1 scraping an exporter the test sets (skips without it)."""
    yield from prom.start()

"""Real-PostgreSQL fixtures: one embedded server per test process, fresh databases per test.

Operations under test connect as the non-superuser role ``pgferry_test`` that owns
its databases, as on Neon or Supabase; only fixtures use the superuser. Set
``PGFERRY_TEST_DSN`` (a superuser DSN) to run against another server instead.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgferry.pg import embedded
from tests.helpers import ROLE, Project, Result, write_project


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A superuser DSN (fixtures only)."""
    if os.environ.get("PGFERRY_TEST_DSN"):
        yield os.environ["PGFERRY_TEST_DSN"]
        return
    # a short path keeps the unix socket under the 107-byte limit
    root = Path(tempfile.mkdtemp(prefix="pgft-", dir="/tmp"))
    try:
        yield embedded.superuser_dsn(root)
    finally:
        embedded.stop(root)
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="session")
def role(pg_admin_dsn: str) -> str:
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        embedded.ensure_role(c, ROLE)
    return ROLE


@pytest.fixture
def make_db(pg_admin_dsn: str, role: str) -> Iterator[Callable[..., str]]:
    """Factory: a fresh database owned by the test role; returns the role's DSN."""
    made: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(role)))
        made.append(name)
        return embedded.role_dsn(pg_admin_dsn, role, name)

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        for name in made:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg15_admin_dsn() -> Iterator[str]:
    """A superuser DSN on a PostgreSQL 15 server (Debian's postgresql-15), for cross-version
    tests; they skip, naming the package, where it is not installed."""
    from tests import servers

    if servers.bindir(15) is None:
        pytest.skip("PostgreSQL 15 is not installed: apt install postgresql-15 "
                    "(.ci/run installs it when it runs as root with apt)")
    root, dsn = servers.start(15, {"max_prepared_transactions": "5"})
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            embedded.ensure_role(c, ROLE)
        yield dsn
    finally:
        servers.stop(root, 15)


@pytest.fixture
def make_db15(pg15_admin_dsn: str) -> Iterator[Callable[..., str]]:
    """Factory: a fresh database on the PostgreSQL 15 server, owned by the test role."""
    made: list[str] = []

    def make(prefix: str = "t15") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg15_admin_dsn, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(ROLE)))
        made.append(name)
        return embedded.role_dsn(pg15_admin_dsn, ROLE, name)

    yield make
    with psycopg.connect(pg15_admin_dsn, autocommit=True) as c:
        for name in made:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture
def pair(make_db: Callable[..., str]) -> Iterator[tuple[psycopg.Connection[Any], ...]]:
    """A source and a target database, as autocommit connections of the test role.

    (Modules whose ``pair`` is a whole project define their own, which pytest prefers.)
    """
    src = psycopg.connect(make_db("src"), autocommit=True)
    tgt = psycopg.connect(make_db("tgt"), autocommit=True)
    yield src, tgt
    src.close()
    tgt.close()


@pytest.fixture
def db(make_db: Callable[..., str]) -> str:
    """One fresh database (the role's DSN)."""
    return make_db()


@pytest.fixture
def project(tmp_path: Path, make_db: Callable[..., str]) -> Project:
    """A project with ``dev`` and a protected ``prod``, each a fresh database."""
    return write_project(tmp_path / "proj", {"dev": make_db("dev"), "prod": make_db("prod")})


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> Callable[..., Result]:
    """Run pgferry in-process (fast); use Project.run for a real subprocess."""
    from pgferry.cli.app import main

    # a wide, fixed terminal: rich tables then never wrap the text tests look for
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str, cwd: Path | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main(list(args))
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return run

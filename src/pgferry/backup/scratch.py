"""Databases a backup command makes on an environment's server: test-restore scratch, --into-new.

Contract: :func:`create_database` makes an empty database on ``target``'s server
owned by the connecting role and returns its DSN (on the embedded server
through its superuser, elsewhere with the role's own ``CREATEDB``; without it,
exit 3 saying what to grant). :func:`drop_database` drops one (also when
sessions are still connected). :func:`exists` tells whether a name is taken.

Scratch databases of a test restore are named :func:`scratch_name`
(``pgferry_restoretest_<unix time>_<random>``). :func:`drop_later` drops one
from a detached process, so ``verify --restore-test`` returns once its result
is written (dropping a database of the dump's size takes the server a while);
:func:`drop_leftovers` drops those a crash left behind: older than an hour and
with nobody connected (``DROP DATABASE`` without FORCE refuses a database in use).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import psycopg
from psycopg import conninfo, sql

from pgferry import jsonio
from pgferry.config import Config
from pgferry.errors import OperationFailed
from pgferry.pg.connect import Target, connect, map_db_error


def dsn_for(target: Target, database: str) -> str:
    return conninfo.make_conninfo(target.dsn, dbname=database)


def _role(c: psycopg.Connection[Any]) -> str:
    row = c.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "?"


def exists(target: Target, database: str) -> bool:
    with connect(target.dsn, autocommit=True) as c:
        return (
            c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
            is not None
        )


def create_database(cfg: Config, target: Target, database: str) -> str:
    """An empty database ``database`` next to ``target``'s, owned by the role; its DSN."""
    if target.embedded:
        from pgferry.pg import embedded

        return embedded.ensure_database(cfg.embedded_dir, database)
    with connect(target.dsn, autocommit=True) as c:
        try:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except psycopg.errors.InsufficientPrivilege:
            role = _role(c)
            raise OperationFailed(
                f"role {role} may not create databases, which a test restore and --into-new "
                f"need; grant it with ALTER ROLE {role} CREATEDB (or restore in place)",
                role=role,
            ) from None
        except psycopg.Error as e:
            raise map_db_error(e, f"cannot create database {database}") from None
    return dsn_for(target, database)


def drop_database(cfg: Config, target: Target, database: str) -> None:
    if target.embedded:
        from pgferry.pg import embedded

        embedded.drop_database(cfg.embedded_dir, database)
        return
    with connect(target.dsn, autocommit=True) as c:
        c.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


PREFIX = "pgferry_restoretest_"


def scratch_name() -> str:
    import secrets

    return f"{PREFIX}{int(time.time())}_{secrets.token_hex(3)}"


def drop_leftovers(cfg: Config, target: Target, older_than_s: float = 3600) -> list[str]:
    """Drop scratch databases older than ``older_than_s`` that nobody is connected to."""
    dropped = []
    admin = _admin_dsn(cfg, target)
    with connect(admin, autocommit=True) as c:
        names = [
            r[0]
            for r in c.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [PREFIX]
            )
        ]
        for name in names:
            stamp = name.removeprefix(PREFIX).split("_", 1)[0]
            if not stamp.isdigit() or time.time() - int(stamp) < older_than_s:
                continue
            try:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                dropped.append(name)
            except psycopg.Error:  # in use, or not ours: leave it
                continue
    return dropped


def _admin_dsn(cfg: Config, target: Target) -> str:
    if target.embedded:
        from pgferry.pg import embedded

        return embedded.superuser_dsn(cfg.embedded_dir)
    return target.dsn


def drop_later(cfg: Config, target: Target, database: str) -> None:
    """Drop ``database`` from a detached process (the DSN goes through its environment)."""
    env = {
        **os.environ,
        "PGFERRY_DROP": jsonio.dumps({"dsn": _admin_dsn(cfg, target), "database": database}),
    }
    subprocess.Popen(
        [sys.executable, "-m", "pgferry.backup.scratch"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _drop_main() -> None:  # pragma: no cover (runs detached)
    from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

    job = jsonio.loads(os.environ.pop("PGFERRY_DROP"))

    def drop() -> None:
        with psycopg.connect(job["dsn"], autocommit=True, application_name="pgferry") as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(job["database"])
                )
            )

    # the server may be restarting: try for ten minutes, then leave it to drop_leftovers
    Retrying(
        retry=retry_if_exception_type(psycopg.Error),
        wait=wait_fixed(2),
        stop=stop_after_delay(600),
        retry_error_callback=lambda _state: None,
    )(drop)


if __name__ == "__main__":  # pragma: no cover
    _drop_main()

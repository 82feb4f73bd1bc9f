"""Databases a backup command makes on an environment's server: test-restore scratch, --into-new.

Contract: :func:`create_database` makes an empty database on ``target``'s server
owned by the connecting role and returns its DSN (on the embedded server
through its superuser, elsewhere with the role's own ``CREATEDB``; without it,
exit 3 saying what to grant). :func:`drop_database` drops one (also when
sessions are still connected). :func:`exists` tells whether a name is taken.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import conninfo, sql

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
        return c.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                         [database]).fetchone() is not None


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
                role=role) from None
        except psycopg.Error as e:
            raise map_db_error(e, f"cannot create database {database}") from None
    return dsn_for(target, database)


def drop_database(cfg: Config, target: Target, database: str) -> None:
    if target.embedded:
        from pgferry.pg import embedded

        embedded.drop_database(cfg.embedded_dir, database)
        return
    with connect(target.dsn, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(database)))

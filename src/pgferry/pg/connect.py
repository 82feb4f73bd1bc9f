"""Connections, DSN redaction and transient-error retry.

Contract:
- :func:`redact` removes passwords from any text (URLs and ``password=`` pairs,
  and every password of a resolved environment by value, see
  :mod:`pgferry.redaction`); every message that may hold a DSN passes through it.
- :func:`resolve_env` turns an environment name into a :class:`Target` (a DSN
  plus what pgferry knows about the env); environments without ``url`` live on
  the embedded server (:mod:`pgferry.pg.embedded`), which is started only when
  something first reads the target's :attr:`Target.dsn` (a command that fails
  on bad input before it needs a database never starts it).
- :func:`connect` opens a psycopg connection. It retries only a *transient*
  failure (server not reachable yet, starting up, too many connections), with
  exponential backoff and jitter, for up to ``retry_for`` seconds, then raises
  :class:`~pgferry.errors.Unreachable` (exit 3). A failed login, a missing
  database and a DSN that does not parse fail at once with
  :class:`~pgferry.errors.CannotConnect` (exit 2), in one sentence naming the
  environment (how a failure is classified: :func:`pgferry.pg.connect_failures.connect_failure`).
  The error's ``details["attempts"]`` says how many times the server was asked (0: the
  URL was refused before any attempt).
- Driver errors are decided by class in :mod:`pgferry.pg.errors` (``map_db_error``,
  ``is_transient`` and the DETAIL/HINT helpers are re-exported here for the callers
  that connect and map in one place).
- :func:`begin_repeatable_read` opens a snapshot transaction on a connection in either
  mode without the server's warning about a second ``BEGIN``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import conninfo
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from pgferry.config import Config, EnvironmentConfig
from pgferry.errors import BadInput, CannotConnect, PgferryError, Unreachable
from pgferry.pg import connect_failures
from pgferry.pg import errors as pgerrors
from pgferry.pg.errors import map_db_error as map_db_error
from pgferry.pg.errors import server_lines as server_lines
from pgferry.pg.errors import with_server_lines as with_server_lines
from pgferry.redaction import redact as redact
from pgferry.redaction import redact_dsn, register_dsn

APP_NAME = "pgferry"
#: :func:`pgferry.pg.errors.transient` (the name its callers know)
is_transient = pgerrors.transient
#: environment name by DSN, filled by :func:`resolve_env`, so a connection error can name
#: the environment without every caller passing it
_ENV_OF: dict[str, str] = {}


class Target:
    """A resolved environment: its name, its DSN (secret) and its policy.

    For an embedded environment the DSN is made (and the server started) on the first
    read of :attr:`dsn`.
    """

    __slots__ = ("name", "protected", "embedded", "_dsn", "_start")

    def __init__(
        self,
        name: str,
        dsn: str | None = None,
        protected: bool = False,
        embedded: bool = False,
        *,
        start: Callable[[], str] | None = None,
    ) -> None:
        self.name, self.protected, self.embedded = name, protected, embedded
        self._dsn, self._start = dsn, start

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            self._dsn = self._start() if self._start is not None else ""
            _ENV_OF[self._dsn] = self.name
        return self._dsn

    @property
    def display(self) -> str:
        """The DSN without its password, for messages and logs."""
        return redact_dsn(self.dsn)

    def __repr__(self) -> str:
        dsn = redact_dsn(self._dsn) if self._dsn is not None else "(not started)"
        return (
            f"Target(name={self.name!r}, dsn={dsn!r}, protected={self.protected}, "
            f"embedded={self.embedded})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Target):
            return NotImplemented
        return (self.name, self.dsn, self.protected, self.embedded) == (
            other.name,
            other.dsn,
            other.protected,
            other.embedded,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.protected, self.embedded))


def _env_label(dsn: str, env: str | None = None) -> str:
    name = env or _ENV_OF.get(dsn)
    return f"environment {name!r} ({redact_dsn(dsn)})" if name else redact_dsn(dsn)


def parse_dsn(dsn: str) -> dict[str, str]:
    """The DSN's parameters; BadInput with a redacted message when it does not parse."""
    try:
        return conninfo.conninfo_to_dict(dsn)  # type: ignore[return-value]
    except psycopg.ProgrammingError as e:
        raise CannotConnect(
            f"the URL of {_env_label(dsn)} does not parse ({connect_failures.connect_reason(e)}); "
            + _URL_HELP,
            kind="bad_url",
            attempts=0,
        ) from None


_URL_HELP = (
    "fix it, percent-encoding special characters in the password "
    "(% as %25, @ as %40, : as %3A, / as %2F, ? as %3F, # as %23, space as %20)"
)


def is_local_dsn(dsn: str) -> bool:
    params = parse_dsn(dsn)
    hosts = (params.get("host") or params.get("hostaddr") or "").split(",")
    return all(
        not h or h.startswith("/") or h in ("localhost", "127.0.0.1", "::1") or h.startswith("127.")
        for h in hosts
    )


def resolve_env(cfg: Config, name: str) -> Target:
    """The :class:`Target` for environment ``name`` (the embedded server starts lazily)."""
    env: EnvironmentConfig = cfg.env(name)
    if env.url:
        dsn = cfg.resolve(env.url, f"environments.{name}.url")
        register_dsn(dsn)  # before anything can show a piece of it
        _ENV_OF[dsn] = name
        if not dsn.strip():
            raise BadInput(f"environments.{name}.url is empty")
        if "://" in dsn:
            scheme = dsn.split("://", 1)[0]
            if scheme not in ("postgres", "postgresql"):
                raise BadInput(f"environments.{name}.url: scheme {scheme!r} is not postgresql://")
        params = parse_dsn(dsn)
        for port in (params.get("port") or "").split(","):
            if port.strip() and not (port.strip().isdigit() and 0 < int(port) < 65536):
                raise CannotConnect(
                    f"the URL of {_env_label(dsn)} has port {port.strip()!r}, which is not a "
                    "number from 1 to 65535; " + _URL_HELP,
                    kind="bad_url",
                    attempts=0,
                )
        return Target(name, dsn, env.protected, embedded=False)

    def start() -> str:
        from pgferry.pg import embedded

        return embedded.ensure_database(
            cfg.embedded_dir,
            env.database or f"pgferry_{name}",
            idle_stop=cfg.embedded.idle_stop.total_seconds(),
        )

    return Target(name, None, env.protected, embedded=True, start=start)


def connect(
    dsn: str,
    *,
    autocommit: bool = False,
    application_name: str = APP_NAME,
    retry_for: float = 10.0,
    env: str | None = None,
    **kwargs: Any,
) -> psycopg.Connection[Any]:
    """Open a connection, retrying transient failures for up to ``retry_for`` seconds.

    ``env`` names the environment in messages (default: the one :func:`resolve_env`
    resolved to this DSN).
    """
    kwargs.setdefault("connect_timeout", 10)
    retrying = Retrying(
        retry=retry_if_exception(lambda e: connect_failures.connect_failure(e) == "transient"),
        wait=wait_random_exponential(multiplier=0.2, max=3),
        stop=stop_after_delay(retry_for),
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                return psycopg.connect(
                    dsn, autocommit=autocommit, application_name=application_name, **kwargs
                )
    except psycopg.Error as e:
        err = connect_error(e, dsn, env, retry_for)
        # how many times the server was asked: 1 for what is never retried (``--json``
        # shows it in ``details``)
        err.details["attempts"] = int(retrying.statistics.get("attempt_number", 1))
        raise err from None
    raise AssertionError("unreachable")  # pragma: no cover


def begin_repeatable_read(conn: psycopg.Connection[Any], *, read_only: bool = False) -> None:
    """Open a REPEATABLE READ transaction (``read_only``: READ ONLY too) on ``conn``.

    On an autocommit connection that is ``BEGIN ISOLATION LEVEL ...``. Otherwise psycopg
    opens the transaction itself with a plain ``BEGIN`` before the first statement, so the
    level is set with ``SET TRANSACTION``: a second ``BEGIN`` would put the server's
    "there is already a transaction in progress" warning into its log on every run.
    """
    mode = "READ ONLY" if read_only else "READ WRITE"
    verb = "BEGIN" if conn.autocommit else "SET TRANSACTION"
    conn.execute(f"{verb} ISOLATION LEVEL REPEATABLE READ {mode}")


def connect_error(
    e: psycopg.Error, dsn: str, env: str | None = None, retried: float = 0.0
) -> PgferryError:
    """One sentence for a failed connection, naming the environment and what to do; the
    error's :attr:`~pgferry.errors.PgferryError.env` names it too."""
    err = _connect_error(e, dsn, env, retried)
    err.env = env or _ENV_OF.get(dsn)
    return err


def _connect_error(e: psycopg.Error, dsn: str, env: str | None, retried: float) -> PgferryError:
    where = _env_label(dsn, env)
    kind = connect_failures.connect_failure(e)
    why = redact(connect_failures.connect_reason(e))
    if kind == "auth":
        return CannotConnect(
            f"cannot log in to {where}: {why}; check the user and password of its URL "
            "(not retried: repeated failed logins lock accounts on some hosts)",
            kind=kind,
        )
    if kind == "no_database":
        return CannotConnect(
            f"cannot connect to {where}: {why}; create the database or fix the database "
            "name in its URL",
            kind=kind,
        )
    if kind == "bad_url":
        return CannotConnect(f"cannot connect to {where}: {why}; {_URL_HELP}", kind=kind)
    if kind == "transient":
        return Unreachable(
            f"cannot connect to {where} (retried for {retried:g}s): {why}; check that the "
            "server is running and reachable",
            kind=kind,
        )
    return map_db_error(e, f"cannot connect to {where}")


def os_user() -> str:
    """The operating-system user running pgferry, for the journal: the account of the
    process's real uid (not a variable anyone can set); where the uid has no account (a
    container's arbitrary uid), :func:`getpass.getuser`'s answer, else "unknown"."""
    import getpass

    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # pragma: no cover (no pwd entry: Windows, containers)
        try:
            return getpass.getuser()
        except (OSError, KeyError, ImportError):
            return "unknown"

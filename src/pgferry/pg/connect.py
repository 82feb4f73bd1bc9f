"""Connections, DSN redaction, SQLSTATE mapping and transient-error retry.

Contract:
- :func:`redact` removes passwords from any text (URLs and ``password=`` pairs);
  every message that may hold a DSN passes through it.
- :func:`resolve_env` turns an environment name into a :class:`Target` (a DSN
  plus what pgferry knows about the env); environments without ``url`` live on
  the embedded server (:mod:`pgferry.pg.embedded`).
- :func:`connect` opens a psycopg connection, retrying transient failures
  with exponential backoff and jitter; :func:`map_db_error` turns a driver
  error into a :class:`~pgferry.errors.PgferryError` by SQLSTATE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import conninfo
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from pgferry.config import Config, EnvironmentConfig
from pgferry.errors import (
    BadInput,
    LockUnavailable,
    OperationFailed,
    PgferryError,
    Unreachable,
)
from pgferry.redaction import redact as redact

APP_NAME = "pgferry"

@dataclass(frozen=True)
class Target:
    """A resolved environment: its name, its DSN (secret) and its policy."""

    name: str
    dsn: str
    protected: bool = False
    embedded: bool = False

    @property
    def display(self) -> str:
        """The DSN without its password, for messages and logs."""
        return redact(self.dsn)

    @property
    def is_local(self) -> bool:
        """True when the server is on this machine (socket, localhost, loopback)."""
        return is_local_dsn(self.dsn)


def parse_dsn(dsn: str) -> dict[str, str]:
    """The DSN's parameters; BadInput with a redacted message when it does not parse."""
    try:
        return conninfo.conninfo_to_dict(dsn)  # type: ignore[return-value]
    except psycopg.ProgrammingError as e:
        raise BadInput(f"connection URL {redact(dsn)} does not parse: {redact(str(e))}") from None


def is_local_dsn(dsn: str) -> bool:
    params = parse_dsn(dsn)
    hosts = (params.get("host") or params.get("hostaddr") or "").split(",")
    return all(
        not h or h.startswith("/") or h in ("localhost", "127.0.0.1", "::1") or h.startswith("127.")
        for h in hosts
    )


def resolve_env(cfg: Config, name: str) -> Target:
    """The :class:`Target` for environment ``name``; starts the embedded server if needed."""
    env: EnvironmentConfig = cfg.env(name)
    if env.url:
        dsn = cfg.resolve(env.url, f"environments.{name}.url")
        if not dsn.strip():
            raise BadInput(f"environments.{name}.url is empty")
        if "://" in dsn:
            scheme = urlsplit(dsn).scheme
            if scheme not in ("postgres", "postgresql"):
                raise BadInput(f"environments.{name}.url: scheme {scheme!r} is not postgresql://")
        parse_dsn(dsn)
        return Target(name, dsn, env.protected, embedded=False)
    from pgferry.pg import embedded

    dsn = embedded.ensure_database(cfg.embedded_dir, env.database or f"pgferry_{name}")
    return Target(name, dsn, env.protected, embedded=True)


# SQLSTATEs worth a retry: connection trouble, serialization failure, deadlock, shutdowns.
_TRANSIENT = {"40001", "40P01", "57P01", "57P02", "57P03", "53300", "08000", "08003", "08006",
              "08001", "08004"}


def is_transient(exc: BaseException) -> bool:
    """True for errors where trying again may work (connection loss, deadlock, shutdown)."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return state in _TRANSIENT or state.startswith("08")


def connect(
    dsn: str,
    *,
    autocommit: bool = False,
    application_name: str = APP_NAME,
    retry_for: float = 10.0,
    **kwargs: Any,
) -> psycopg.Connection[Any]:
    """Open a connection, retrying transient failures for up to ``retry_for`` seconds."""
    kwargs.setdefault("connect_timeout", 10)
    try:
        for attempt in Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=0.2, max=3),
            stop=stop_after_delay(retry_for),
            reraise=True,
        ):
            with attempt:
                return psycopg.connect(
                    dsn, autocommit=autocommit, application_name=application_name, **kwargs
                )
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot connect to {redact(dsn)}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def map_db_error(exc: psycopg.Error, context: str = "") -> PgferryError:
    """A driver error as a pgferry error, chosen by SQLSTATE; the message is redacted."""
    state = exc.sqlstate or ""
    diag = exc.diag
    text = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
    text = redact(text.splitlines()[0] if text else type(exc).__name__)
    msg = f"{context}: {text}" if context else text
    details: dict[str, Any] = {"sqlstate": state} if state else {}
    if state == "55P03":
        return LockUnavailable(msg, **details)
    if state.startswith("08") or state in ("57P01", "57P02", "57P03") or (
        not state and isinstance(exc, psycopg.OperationalError)
    ):
        return Unreachable(msg, **details)
    if state in ("28P01", "28000", "3D000"):
        return Unreachable(msg, **details)
    return OperationFailed(msg, **details)


def os_user() -> str:
    """The OS user running pgferry, for the journal and history's installed_by."""
    for var in ("PGFERRY_USER", "USER", "LOGNAME", "USERNAME"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # pragma: no cover
        return "unknown"

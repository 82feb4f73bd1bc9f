"""Connections, DSN redaction, SQLSTATE mapping and transient-error retry.

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
  environment (how a failure is classified: :mod:`pgferry.pg.connerrors`).
- :func:`map_db_error` turns a driver error into a
  :class:`~pgferry.errors.PgferryError` by SQLSTATE, keeping the server's DETAIL
  and HINT, each on its own line after the message (and in ``details``).
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
from pgferry.errors import (
    BadInput,
    CannotConnect,
    LockUnavailable,
    OperationFailed,
    PgferryError,
    Unreachable,
)
from pgferry.pg import connerrors
from pgferry.redaction import redact as redact
from pgferry.redaction import redact_dsn, register_dsn

APP_NAME = "pgferry"
#: environment name by DSN, filled by :func:`resolve_env`, so a connection error can name
#: the environment without every caller passing it
_ENV_OF: dict[str, str] = {}


class Target:
    """A resolved environment: its name, its DSN (secret) and its policy.

    For an embedded environment the DSN is made (and the server started) on the first
    read of :attr:`dsn`.
    """

    __slots__ = ("name", "protected", "embedded", "_dsn", "_start")

    def __init__(self, name: str, dsn: str | None = None, protected: bool = False,
                 embedded: bool = False, *, start: Callable[[], str] | None = None) -> None:
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

    @property
    def is_local(self) -> bool:
        """True when the server is on this machine (socket, localhost, loopback)."""
        return is_local_dsn(self.dsn)

    def __repr__(self) -> str:
        dsn = redact_dsn(self._dsn) if self._dsn is not None else "(not started)"
        return (f"Target(name={self.name!r}, dsn={dsn!r}, protected={self.protected}, "
                f"embedded={self.embedded})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Target):
            return NotImplemented
        return (self.name, self.dsn, self.protected, self.embedded) == (
            other.name, other.dsn, other.protected, other.embedded)

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
            f"the URL of {_env_label(dsn)} does not parse ({connerrors.reason(e)}); "
            + _URL_HELP, kind="bad_url") from None


_URL_HELP = ("fix it, percent-encoding special characters in the password "
             "(% as %25, @ as %40, : as %3A, / as %2F, ? as %3F, # as %23, space as %20)")


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
                    "number from 1 to 65535; " + _URL_HELP, kind="bad_url")
        return Target(name, dsn, env.protected, embedded=False)

    def start() -> str:
        from pgferry.pg import embedded

        return embedded.ensure_database(
            cfg.embedded_dir, env.database or f"pgferry_{name}",
            idle_stop=cfg.embedded.idle_stop.total_seconds())

    return Target(name, None, env.protected, embedded=True, start=start)


# SQLSTATEs worth a retry: connection trouble, serialization failure, deadlock, shutdowns.
_TRANSIENT = {"40001", "40P01", "57P01", "57P02", "57P03", "53300", "08000", "08003", "08006",
              "08001", "08004"}


def is_transient(exc: BaseException) -> bool:
    """True for errors where trying again may work (connection loss, deadlock, shutdown).

    A connection-time failure without SQLSTATE is transient only when
    :func:`pgferry.pg.connerrors.classify` says so (not a failed login, a missing
    database or a bad URL).
    """
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError) and \
            connerrors.classify(exc) == "transient"
    return state in _TRANSIENT or state.startswith("08")


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
    try:
        for attempt in Retrying(
            retry=retry_if_exception(lambda e: connerrors.classify(e) == "transient"),
            wait=wait_random_exponential(multiplier=0.2, max=3),
            stop=stop_after_delay(retry_for),
            reraise=True,
        ):
            with attempt:
                return psycopg.connect(
                    dsn, autocommit=autocommit, application_name=application_name, **kwargs
                )
    except psycopg.Error as e:
        raise connect_error(e, dsn, env, retry_for) from None
    raise AssertionError("unreachable")  # pragma: no cover


def connect_error(e: psycopg.Error, dsn: str, env: str | None = None,
                  retried: float = 0.0) -> PgferryError:
    """One sentence for a failed connection, naming the environment and what to do."""
    where = _env_label(dsn, env)
    kind = connerrors.classify(e)
    why = redact(connerrors.reason(e))
    if kind == "auth":
        return CannotConnect(
            f"cannot log in to {where}: {why}; check the user and password of its URL "
            "(not retried: repeated failed logins lock accounts on some hosts)", kind=kind)
    if kind == "no_database":
        return CannotConnect(
            f"cannot connect to {where}: {why}; create the database or fix the database "
            "name in its URL", kind=kind)
    if kind == "bad_url":
        return CannotConnect(f"cannot connect to {where}: {why}; {_URL_HELP}", kind=kind)
    if kind == "transient":
        return Unreachable(
            f"cannot connect to {where} (retried for {retried:g}s): {why}; check that the "
            "server is running and reachable", kind=kind)
    return map_db_error(e, f"cannot connect to {where}")


def server_lines(exc: psycopg.Error) -> tuple[str | None, str | None]:
    """The server's DETAIL and HINT of ``exc`` (redacted, whitespace kept), or None."""
    d = exc.diag
    if d is None:
        return None, None
    detail = redact(d.message_detail.strip()) if d.message_detail else None
    hint = redact(d.message_hint.strip()) if d.message_hint else None
    return detail or None, hint or None


def with_server_lines(message: str, exc: psycopg.Error) -> str:
    """``message`` followed by the server's DETAIL and HINT, each on its own line."""
    detail, hint = server_lines(exc)
    return message + (f"\nDETAIL: {detail}" if detail else "") + (f"\nHINT: {hint}" if hint else "")


def map_db_error(exc: psycopg.Error, context: str = "") -> PgferryError:
    """A driver error as a pgferry error, chosen by SQLSTATE; the message is redacted.

    The server's DETAIL and HINT follow the message, each on its own line, and are in
    ``details`` (``detail``, ``hint``) for ``--json`` and the journal.
    """
    state = exc.sqlstate or ""
    diag = exc.diag
    text = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
    text = redact(text.splitlines()[0] if text else type(exc).__name__)
    msg = with_server_lines(f"{context}: {text}" if context else text, exc)
    details: dict[str, Any] = {"sqlstate": state} if state else {}
    detail, hint = server_lines(exc)
    details.update({k: v for k, v in (("detail", detail), ("hint", hint)) if v})
    if state == "55P03":
        return LockUnavailable(msg, **details)
    if state in ("28P01", "28000"):
        return CannotConnect(msg, **details)
    if state.startswith("08") or state in ("57P01", "57P02", "57P03") or (
        not state and isinstance(exc, psycopg.OperationalError)
    ):
        return Unreachable(msg, **details)
    return OperationFailed(msg, **details)


def os_user() -> str:
    """The operating-system user running pgferry (from the process's real uid, not from
    variables anyone can set), for the journal."""
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # pragma: no cover (no pwd database: Windows, containers)
        for var in ("USER", "LOGNAME", "USERNAME"):
            if os.environ.get(var):
                return os.environ[var]
        return "unknown"

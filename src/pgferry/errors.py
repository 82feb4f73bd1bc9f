"""One exception tree for pgferry; each class carries its exit code and HTTP status.

    PgferryError                 (3)  the root; an operation failed
    ├── ProblemFound             (1)  a check found a problem and stopped the command
    ├── BadInput                 (2)  usage, config, missing variable, unreadable file
    │   ├── ConfigError          (2)  pgferry.toml / .env problems, naming key and line
    │   ├── SqlParseError        (2)  SQL that does not parse, naming file and line
    │   └── CannotConnect        (2)  login refused, no such database, URL unusable
    ├── OperationFailed          (3)  server error, unreachable, interrupted
    │   ├── Unreachable          (3)  database does not answer after retries
    │   └── LockUnavailable      (3)  lock timeout retries exhausted / advisory lock busy
    └── Refused                  (4)  policy: blackout, protected env, lint gate, approval

The CLI prints ``str(error)`` as one line and exits with ``exit_code``; the HTTP
server answers with ``http_status``. A command whose job is to find problems (lint,
verify, ``migrate validate``, health, ``env check``, ``journal verify``) does not raise
them: its result carries them and an ``exit_code`` of 1. ProblemFound is for a check
that stops another command (a history ahead of the files stops ``migrate up``; a
damaged backup stops a restore). Driver errors are mapped by their psycopg class
(see :mod:`pgferry.pg.errors`), never by message text.
"""

from __future__ import annotations

from typing import Any


class PgferryError(Exception):
    """Root of pgferry's errors. ``details`` goes into ``--json`` output and the journal."""

    exit_code: int = 3
    http_status: int = 500

    #: the environment a failed connection attempt was for (set by
    #: :func:`pgferry.pg.connect.connect_error`), so callers tell sides apart without
    #: reading the message
    env: str | None = None
    #: the driver error and context this error was mapped from (set by
    #: :func:`pgferry.pg.errors.map_db_error`), so that it can be told again without a
    #: row's values (:func:`pgferry.pg.errors.hide_values`); never shown or serialized
    driver_error: tuple[BaseException, str] | None = None

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "exit_code": self.exit_code,
            **({"details": self.details} if self.details else {}),
        }


class ProblemFound(PgferryError):
    """A check found a problem and stopped the command (exit 1)."""

    exit_code = 1
    http_status = 200


class BadInput(PgferryError):
    """Bad input: usage, config, a missing variable, an unreadable file (exit 2)."""

    exit_code = 2
    http_status = 400


class ConfigError(BadInput):
    """pgferry.toml or .env is wrong; the message names the key and the line."""


class SqlParseError(BadInput):
    """A SQL file does not parse; the message names file, line and the parser's words."""


class CannotConnect(BadInput):
    """The server refused the login, the database does not exist, or the URL is unusable.

    Configuration to fix, not a passing failure: never retried (repeated failed logins
    lock accounts on some hosts). ``details["kind"]``: ``auth``, ``no_database``,
    ``bad_url`` (see :func:`pgferry.pg.connect_failures.connect_failure`).
    """


class OperationFailed(PgferryError):
    """The operation failed on the server or was interrupted (exit 3)."""

    exit_code = 3
    http_status = 502


class Unreachable(OperationFailed):
    """The database did not answer, even after retries."""

    http_status = 503


class LockUnavailable(OperationFailed):
    """A lock could not be taken in time (lock_timeout retries, advisory lock)."""

    http_status = 409


class Refused(PgferryError):
    """Refused by policy: blackout window, protected env without --yes, lint gate (exit 4)."""

    exit_code = 4
    http_status = 403

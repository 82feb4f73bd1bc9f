"""Driver errors by class: every decision pgferry takes from a psycopg error, in one table.

Contract:
- The table below names the conditions pgferry acts on as ``psycopg.errors`` classes
  (one class per SQLSTATE, or every class of a SQLSTATE class where the decision is
  about the class). Code elsewhere asks the functions here (:func:`lock_timeout`,
  :func:`transient`, :func:`row_error` ...) and never compares SQLSTATE strings or
  reads a server message to decide.
- :func:`map_db_error` turns a driver error into a
  :class:`~pgferry.errors.PgferryError` by class, keeping the server's DETAIL and HINT,
  each on its own line after the message (and in ``details``), redacted.
- :func:`hide_values` tells a mapped error again without a row's values (a masked
  column's, which the message may quote).
- A failed connection attempt is sorted by :mod:`pgferry.pg.connect_failures`, the one
  place that reads message text (libpq reports such errors without a SQLSTATE).
- :func:`error_message` is the one line for any exception an operation raised: pgferry's
  own message, a driver error mapped by its class, else the type and text, redacted.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import errors as e_

from pgferry.errors import (
    CannotConnect,
    LockUnavailable,
    OperationFailed,
    PgferryError,
    Unreachable,
)
from pgferry.redaction import redact

ErrorClasses = tuple[type[psycopg.Error], ...]


def _sqlstate_class(*prefixes: str) -> ErrorClasses:
    """Every psycopg error class of these SQLSTATE classes (the first two characters)."""
    return tuple(
        sorted(
            (
                c
                for c in vars(e_).values()
                if isinstance(c, type)
                and issubclass(c, psycopg.Error)
                and (getattr(c, "sqlstate", None) or "")[:2] in prefixes
            ),
            key=lambda c: str(c.sqlstate),
        )
    )


# -- the table --------------------------------------------------------------------------------

#: 55P03: ``lock_timeout`` (or NOWAIT) gave up on a lock
LOCK_TIMEOUT: ErrorClasses = (e_.LockNotAvailable,)
#: 40P01: the server broke a deadlock by cancelling this statement
DEADLOCK: ErrorClasses = (e_.DeadlockDetected,)
#: 57014: statement_timeout (or a cancel request) ended the statement
STATEMENT_TIMEOUT: ErrorClasses = (e_.QueryCanceled,)
#: class 42: syntax error or access rule violation (a query that cannot run as written)
BAD_QUERY: ErrorClasses = _sqlstate_class("42")
#: 40001: a serializable or repeatable-read transaction lost a race
SERIALIZATION: ErrorClasses = (e_.SerializationFailure,)
#: 23503: a foreign key refused a row (or the delete of a referenced one)
FOREIGN_KEY: ErrorClasses = (e_.ForeignKeyViolation,)
#: 23505, 23P01: a unique or exclusion constraint refused a row's values
CLASH: ErrorClasses = (e_.UniqueViolation, e_.ExclusionViolation)
#: class 23: any integrity constraint (psycopg's IntegrityError is exactly that class)
INTEGRITY: ErrorClasses = (psycopg.IntegrityError,)
#: class 08: the connection itself failed
CONNECTION: ErrorClasses = _sqlstate_class("08")
#: 57P01-57P03: the server is shutting down, crashed, or not accepting connections yet
SERVER_GOING: ErrorClasses = (e_.AdminShutdown, e_.CrashShutdown, e_.CannotConnectNow)
#: 53300: too many connections (a slot frees up soon)
TOO_MANY: ErrorClasses = (e_.TooManyConnections,)
#: 28000, 28P01: the login was refused
LOGIN: ErrorClasses = (e_.InvalidAuthorizationSpecification, e_.InvalidPassword)
#: 3D000: no such database
NO_DATABASE: ErrorClasses = (e_.InvalidCatalogName,)
#: what one row can cause: data exceptions (22, psycopg's DataError), integrity
#: violations (23), errors raised by triggers and functions (P0, 38, 39, 2F), a view's
#: WITH CHECK OPTION (44). Anything else (a cancel, a lost connection, disk full, a
#: permission) is about the batch as a whole.
ROW: ErrorClasses = (
    psycopg.DataError,
    psycopg.IntegrityError,
    *_sqlstate_class("P0", "38", "39", "2F", "44"),
)
#: worth trying again: the connection or the server went away, a deadlock, a
#: serialization failure
TRANSIENT: ErrorClasses = (*CONNECTION, *SERVER_GOING, *TOO_MANY, *DEADLOCK, *SERIALIZATION)
#: what says what failed without quoting a value of a row: the connection (08), a feature
#: (0A), the transaction's state (25), a login (28), no such database or schema (3D, 3F),
#: a rollback (40), a query that cannot run as written (42, but for its syntax error,
#: 42601, which value parsers such as ``to_tsquery`` raise quoting the value), resources
#: and limits (53, 54), an object's state or a lock (55), the operator (57), the system (58)
VALUE_FREE: ErrorClasses = tuple(
    c
    for c in _sqlstate_class("08", "0A", "25", "28", "3D", "3F", "40", "42", "53", "54", "55")
    + _sqlstate_class("57", "58")
    if c is not e_.SyntaxError
)
#: what quotes the value it stumbled on, in double quotes or as bytes, beside words worth
#: keeping: data exceptions (22: ``invalid input syntax for type integer: "..."``),
#: integrity violations (23, whose values are in DETAIL), a value's syntax error (42601)
QUOTES_VALUES: ErrorClasses = (psycopg.DataError, psycopg.IntegrityError, e_.SyntaxError)


def lock_timeout(e: BaseException) -> bool:
    """A lock could not be had in time (55P03)."""
    return isinstance(e, LOCK_TIMEOUT)


def retry_statement(e: BaseException) -> bool:
    """Roll back and try again: a lock timeout, or a deadlock the server broke."""
    return isinstance(e, LOCK_TIMEOUT + DEADLOCK)


def batch_retry(e: BaseException) -> str | None:
    """Why a batch (a backfill's) is worth trying again, smaller: ``lock timeout``,
    ``deadlock`` or ``statement timeout``; None for anything else."""
    if isinstance(e, LOCK_TIMEOUT):
        return "lock timeout"
    if isinstance(e, DEADLOCK):
        return "deadlock"
    if isinstance(e, STATEMENT_TIMEOUT):
        return "statement timeout"
    return None


def statement_timeout(e: BaseException) -> bool:
    return isinstance(e, STATEMENT_TIMEOUT)


def bad_query(e: BaseException) -> bool:
    """The query cannot run as written: a syntax error, an undefined object, no privilege."""
    return isinstance(e, BAD_QUERY)


def foreign_key(e: BaseException) -> bool:
    return isinstance(e, FOREIGN_KEY)


def clash(e: BaseException) -> bool:
    """A unique or exclusion constraint refused the values (another row holds them)."""
    return isinstance(e, CLASH)


def integrity(e: BaseException) -> bool:
    return isinstance(e, INTEGRITY)


def row_error(e: BaseException) -> bool:
    """True when ``e`` may come from one bad row (worth bisecting a batch)."""
    return isinstance(e, ROW)


def transient(e: BaseException) -> bool:
    """True for errors where trying again may work (connection loss, deadlock, shutdown).

    A connection-time failure without SQLSTATE is transient only when
    :func:`~pgferry.pg.connect_failures.connect_failure` says so (not a failed login, a
    missing database or a bad URL).
    """
    if not isinstance(e, psycopg.Error):
        return False
    if e.sqlstate is None:
        # (that module reads this one's tables: imported when first needed)
        from pgferry.pg.connect_failures import connect_failure

        return isinstance(e, psycopg.OperationalError) and connect_failure(e) == "transient"
    return isinstance(e, TRANSIENT)


# -- one sentence for the user ----------------------------------------------------------------


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


def error_message(exc: Exception) -> str:
    """One line for an exception an operation raised (see the module docstring)."""
    if isinstance(exc, PgferryError):
        return redact(exc.message)
    if isinstance(exc, psycopg.Error):
        return map_db_error(exc).message
    return redact(f"{type(exc).__name__}: {exc}")


def map_db_error(exc: psycopg.Error, context: str = "", *, hidden: str = "") -> PgferryError:
    """A driver error as a pgferry error, chosen by class; the message is redacted.

    The server's DETAIL and HINT follow the message, each on its own line, and are in
    ``details`` (``detail``, ``hint``) for ``--json`` and the journal. With ``hidden``
    (why), nothing of a row's values is kept (see :func:`hide_values`).
    """
    state = exc.sqlstate or ""
    diag = exc.diag
    text = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
    text = redact(text.splitlines()[0] if text else type(exc).__name__)
    details: dict[str, Any] = {"sqlstate": state} if state else {}
    if hidden and not isinstance(exc, VALUE_FREE):
        text = _without_values(exc, text, hidden)
        msg = f"{context}: {text}" if context else text
    else:
        msg = with_server_lines(f"{context}: {text}" if context else text, exc)
        detail, hint = server_lines(exc)
        details.update({k: v for k, v in (("detail", detail), ("hint", hint)) if v})
    err = _mapped(exc, msg, details)
    err.driver_error = (exc, context)
    return err


def _mapped(exc: psycopg.Error, msg: str, details: dict[str, Any]) -> PgferryError:
    """The pgferry error class for ``exc``."""
    if isinstance(exc, LOCK_TIMEOUT):
        return LockUnavailable(msg, **details)
    if isinstance(exc, LOGIN):
        return CannotConnect(msg, **details)
    if isinstance(exc, CONNECTION + SERVER_GOING) or (
        not exc.sqlstate and isinstance(exc, psycopg.OperationalError)
    ):
        return Unreachable(msg, **details)
    return OperationFailed(msg, **details)


_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_BYTES = re.compile(r"0x[0-9a-fA-F]{2}(?: 0x[0-9a-fA-F]{2})*")


def _without_values(exc: psycopg.Error, text: str, why: str) -> str:
    """The server's first line with no value of a row in it: the quoted values and bytes
    of :data:`QUOTES_VALUES` left out; of anything else (a function's RAISE, an internal
    error), only the condition's name and SQLSTATE."""
    state = exc.sqlstate or "?"
    if isinstance(exc, QUOTES_VALUES):
        text = _BYTES.sub("0x..", _QUOTED.sub('"..."', text))
        return f"{text} (SQLSTATE {state}; values left out: {why})"
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
    return f"{name} (SQLSTATE {state}; the server's message left out: {why})"


def hide_values(err: PgferryError, why: str) -> PgferryError:
    """``err`` (from :func:`map_db_error`) told again without a value of a row.

    For data that must not be shown where the error goes: a masked column's value that
    the source server stumbled on would otherwise reach the terminal, the report and the
    target's journal. Quoted values and bytes of data exceptions are left out, as are
    DETAIL and HINT (``Key (email)=(...)``, ``Failing row contains (...)``); the message of
    anything but the classes known to quote no value (:data:`VALUE_FREE`) is replaced by
    its condition's name. ``why`` says why, in the message. pgferry's own errors (not
    mapped from the driver) are returned as they are.
    """
    if err.driver_error is None:
        return err
    exc, context = err.driver_error
    if not isinstance(exc, psycopg.Error):
        return err
    return map_db_error(exc, context, hidden=why)

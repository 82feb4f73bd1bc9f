"""A failed ``psycopg.connect``, sorted: the one place pgferry reads message text.

Contract: :func:`connect_failure` sorts a failed connection attempt into ``transient``,
``auth``, ``no_database``, ``bad_url`` or ``other`` (see its docstring): by class where
the server sent a SQLSTATE (the tables of :mod:`pgferry.pg.errors`), else by libpq's
English text, because libpq reports errors raised while a connection starts without one.
:func:`connect_reason` is the useful part of that message.
"""

from __future__ import annotations

import re
from typing import Literal

import psycopg

from pgferry.pg.errors import CONNECTION, LOGIN, NO_DATABASE, SERVER_GOING, TOO_MANY

ConnectFailure = Literal["transient", "auth", "no_database", "bad_url", "other"]

# English texts of PostgreSQL's auth.c/postinit.c/postmaster.c and of libpq's
# fe-connect.c, checked in this order: a temporary DNS failure is transient although it
# names a host.
_TRANSIENT_TEXT = (
    "temporary failure in name resolution",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "not yet accepting connections",
    "too many clients",
    "remaining connection slots",
    "connection refused",
    "no such file or directory",
    "timeout expired",
    "timed out",
    "server closed the connection",
    "connection reset",
    "network is unreachable",
    "no route to host",
    "could not receive data",
    "could not send data",
    "ssl syscall error",
    "terminating connection",
)
_AUTH_TEXT = (
    "password authentication failed",
    "no password supplied",
    "authentication failed for",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects",
    "is not permitted to log in",
    "password has expired",
    "certificate authentication failed",
    "scram",
)
_AUTH_RE = re.compile(r'role ".*" does not exist')
_NO_DB_RE = re.compile(r'database ".*" does not exist')
_BAD_URL_TEXT = (
    "invalid port number",
    "invalid integer value",
    "servname not supported",
    "invalid connection option",
    "invalid sslmode value",
    "invalid value for parameter",
    'missing "="',
    "unterminated quoted string",
    "invalid uri",
    "invalid percent-encoded",
    "unexpected spaces",
    "name or service not known",
    "nodename nor servname",
    "no address associated with hostname",
    "could not translate host name",
    "failed to resolve host",
    "invalid target_session_attrs",
    "invalid gssencmode",
    "invalid channel_binding",
    "invalid load_balance_hosts",
)


def connect_failure(exc: BaseException) -> ConnectFailure:
    """What kind of connection failure ``exc`` is.

    ``transient``    the server is not reachable *yet*: refused, no socket, starting up,
                     shutting down, in recovery, too many connections, a network timeout
                     or reset, a temporary DNS failure. :func:`pgferry.pg.connect.connect`
                     retries these with backoff, up to ``retry_for`` seconds, then exit 3.
    ``auth``         the server refused the login (28P01/28000): wrong password, no
                     password, unknown role, no pg_hba.conf entry. Never retried:
                     repeated failed logins lock accounts on some hosts. Exit 2.
    ``no_database``  the database does not exist (3D000). Exit 2.
    ``bad_url``      the DSN itself is wrong: it does not parse, a port that is not a
                     port, an unknown option or sslmode, a host name that does not exist.
                     Exit 2.
    ``other``        any other error (not retried; mapped by class).

    An error with a SQLSTATE (a failure after the connection started) is classified by
    its class. Without one, the server's FATAL text and libpq's own words are all there
    is; a server running with another ``lc_messages`` sends translated FATAL texts, and
    for those ``pgconn.used_password`` (the server asked for a password and got one,
    then said FATAL) and ``pgconn.needs_password`` (it asked and got none) still
    identify a failed login.
    """
    if isinstance(exc, psycopg.ProgrammingError) and not exc.sqlstate:  # DSN did not parse
        return "bad_url"
    if not isinstance(exc, psycopg.Error):
        return "other"
    if exc.sqlstate:
        return _failure_by_class(exc)
    if not isinstance(exc, psycopg.OperationalError):
        return "other"
    return _failure_by_text(exc)


def _failure_by_class(exc: psycopg.Error) -> ConnectFailure:
    if isinstance(exc, LOGIN):
        return "auth"
    if isinstance(exc, NO_DATABASE):
        return "no_database"
    return "transient" if isinstance(exc, CONNECTION + SERVER_GOING + TOO_MANY) else "other"


def _failure_by_text(exc: psycopg.Error) -> ConnectFailure:
    text = str(exc).lower()
    if "temporary failure in name resolution" in text:  # names a host, but may pass
        return "transient"
    if _NO_DB_RE.search(text):
        return "no_database"
    if any(m in text for m in _AUTH_TEXT) or _AUTH_RE.search(text):
        return "auth"
    if any(m in text for m in _BAD_URL_TEXT):
        return "bad_url"
    if any(m in text for m in _TRANSIENT_TEXT):
        return "transient"
    pgconn = getattr(exc, "pgconn", None)
    if pgconn is not None and "fatal" in text and (pgconn.used_password or pgconn.needs_password):
        return "auth"  # a translated FATAL right after the server asked for a password
    # anything else without a SQLSTATE happened on the way to the server: worth a retry
    return "transient"


def connect_reason(exc: BaseException) -> str:
    """The useful part of libpq's message, one line, with quoted tokens of a DSN that did not
    parse removed (libpq quotes the offending piece, which may be part of the password)."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^connection (failed|is bad): ", "", text)
    text = re.sub(r"^connection to server (at|on socket) .*? failed: ", "", text)
    text = text.replace("FATAL: ", "").strip()
    if isinstance(exc, psycopg.ProgrammingError):
        text = re.sub(r'"[^"]*"', '"…"', text)
    return text.removesuffix(".") or type(exc).__name__

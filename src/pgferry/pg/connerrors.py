"""Why a connection could not be opened: retry it, or tell the user what to fix.

Contract: :func:`classify` sorts a failed ``psycopg.connect`` into one of

``transient``    the server is not reachable *yet*: refused, no socket, starting up,
                 shutting down, in recovery, too many connections, a network timeout
                 or reset, a temporary DNS failure. :func:`pgferry.pg.connect.connect`
                 retries these with backoff, up to ``retry_for`` seconds, then exit 3.
``auth``         the server refused the login (SQLSTATE 28P01/28000): wrong password,
                 no password, unknown role, no pg_hba.conf entry. Never retried:
                 repeated failed logins lock accounts on some hosts. Exit 2.
``no_database``  the database does not exist (3D000). Exit 2.
``bad_url``      the DSN itself is wrong: it does not parse, a port that is not a
                 port, an unknown option or sslmode, a host name that does not exist.
                 Exit 2.
``other``        any other error (not retried; mapped by SQLSTATE).

Why message text: libpq reports errors raised while a connection starts without a
SQLSTATE (psycopg's ``OperationalError.sqlstate`` is None there), so the server's
FATAL text and libpq's own words are all there is. The markers below are the
English texts of PostgreSQL's ``auth.c``/``postinit.c``/``postmaster.c`` and of
libpq's ``fe-connect.c``. A server running with another ``lc_messages`` sends
translated FATAL texts; for those, :attr:`pgconn.used_password` (the server asked
for a password and got one, then said FATAL) and :attr:`pgconn.needs_password`
(it asked and got none) still identify a failed login. Errors that carry a
SQLSTATE (a failure after the connection started) are classified by it.
"""

from __future__ import annotations

import re
from typing import Literal

import psycopg

Kind = Literal["transient", "auth", "no_database", "bad_url", "other"]

#: SQLSTATEs of the same situations, when the driver has one
_STATES: dict[str, Kind] = {
    "28P01": "auth", "28000": "auth", "3D000": "no_database",
    "57P03": "transient", "53300": "transient", "57P01": "transient", "57P02": "transient",
}
# Checked in this order: a temporary DNS failure is transient although it names a host.
_TRANSIENT = (
    "temporary failure in name resolution", "the database system is starting up",
    "the database system is shutting down", "the database system is in recovery mode",
    "not yet accepting connections", "too many clients", "remaining connection slots",
    "connection refused", "no such file or directory", "timeout expired", "timed out",
    "server closed the connection", "connection reset", "network is unreachable",
    "no route to host", "could not receive data", "could not send data",
    "ssl syscall error", "terminating connection",
)
_AUTH = (
    "password authentication failed", "no password supplied", "authentication failed for",
    "no pg_hba.conf entry", "pg_hba.conf rejects", "is not permitted to log in",
    "password has expired", "certificate authentication failed", "scram",
)
_AUTH_RE = re.compile(r'role ".*" does not exist')
_NO_DB_RE = re.compile(r'database ".*" does not exist')
_BAD_URL = (
    "invalid port number", "invalid integer value", "servname not supported",
    "invalid connection option", "invalid sslmode value", "invalid value for parameter",
    "missing \"=\"", "unterminated quoted string", "invalid uri", "invalid percent-encoded",
    "unexpected spaces", "name or service not known", "nodename nor servname",
    "no address associated with hostname", "could not translate host name",
    "failed to resolve host", "invalid target_session_attrs", "invalid gssencmode",
    "invalid channel_binding", "invalid load_balance_hosts",
)


def classify(exc: BaseException) -> Kind:
    """What kind of connection failure ``exc`` is (see the module docstring)."""
    if isinstance(exc, psycopg.ProgrammingError):  # the DSN did not parse
        return "bad_url"
    if not isinstance(exc, psycopg.Error):
        return "other"
    if exc.sqlstate:
        if exc.sqlstate in _STATES:
            return _STATES[exc.sqlstate]
        return "transient" if exc.sqlstate.startswith("08") else "other"
    if not isinstance(exc, psycopg.OperationalError):
        return "other"
    text = str(exc).lower()
    if "temporary failure in name resolution" in text:  # names a host, but may pass
        return "transient"
    if _NO_DB_RE.search(text):
        return "no_database"
    if any(m in text for m in _AUTH) or _AUTH_RE.search(text):
        return "auth"
    if any(m in text for m in _BAD_URL):
        return "bad_url"
    if any(m in text for m in _TRANSIENT):
        return "transient"
    pgconn = getattr(exc, "pgconn", None)
    if pgconn is not None and "fatal" in text and (pgconn.used_password or pgconn.needs_password):
        return "auth"  # a translated FATAL right after the server asked for a password
    # anything else without a SQLSTATE happened on the way to the server: worth a retry
    return "transient"


def reason(exc: BaseException) -> str:
    """The useful part of libpq's message, one line, with quoted tokens of a DSN that did not
    parse removed (libpq quotes the offending piece, which may be part of the password)."""
    text = " ".join(str(exc).split())
    text = re.sub(r"^connection (failed|is bad): ", "", text)
    text = re.sub(r'^connection to server (at|on socket) .*? failed: ', "", text)
    text = text.replace("FATAL: ", "").strip()
    if isinstance(exc, psycopg.ProgrammingError):
        text = re.sub(r'"[^"]*"', '"…"', text)
    return text.removesuffix(".") or type(exc).__name__

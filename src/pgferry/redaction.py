"""Passwords out of any text: DSNs in messages, logs, reports and the journal.

Contract: :func:`redact` is pure apart from the set of known secrets and cheap
to import (only :mod:`re` and :mod:`urllib.parse`), so the CLI's error path can
use it without importing a database driver. It removes passwords in two ways:

- by shape: ``scheme://user:PASSWORD@host``, ``password=...`` pairs,
  ``?password=...`` query parameters, and SQL's ``PASSWORD '...'`` (``CREATE ROLE``,
  ``ALTER ROLE``, a user mapping's ``OPTIONS (password '...')``), where a migration's
  statements are shown (``migrate plan``, ``up --dry-run``, a service run's plan);
- by value: every password pgferry has seen in a configured URL is registered
  (:func:`register_dsn`, called when an environment is resolved) and replaced
  wherever it appears, also when the URL does not parse and a driver message
  echoes a piece of it, and also percent-encoded or decoded. Values shorter
  than :data:`MIN_SECRET` characters are left to the shapes (replacing every
  ``ab`` in a message would make it unreadable and hide nothing).

:func:`redact_dsn` shows a DSN without its password even when it does not parse
(a raw ``%``, ``@``, ``:``, ``/``, ``?``, ``#`` or space in the password): the
userinfo of a URL ends at its *last* ``@``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

_URL_PW = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<at>@)", re.I)
_KV_PW = re.compile(r"(?P<pre>(?<![?&])\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PW = re.compile(r"(?P<pre>[?&]password=)(?P<pw>[^&\s]*)", re.I)
#: SQL: PASSWORD, then a string constant ('...', E'...' with its escapes, or dollar-quoted)
_SQL_PW = re.compile(
    r"(?P<pre>\bpassword\s+)"
    r"(?P<pw>[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)",
    re.I | re.S,
)
MIN_SECRET = 4
_secrets: set[str] = set()
#: the secrets, longest first (a secret inside a longer one must not break the longer one)
_ordered: tuple[str, ...] = ()
#: what JSON writes escaped (orjson: nothing else, not even non-ASCII)
_JSON_ESCAPED = re.compile(r'["\\\x00-\x1f]')


def _maybe_shaped(text: str) -> bool:
    """Whether ``text`` has what any of the three shapes needs: most text has neither, and
    an answer of the admin service holds thousands of strings. (``casefold``, not
    ``lower``: the shapes' ``re.I`` also takes a long s, U+017F, for an s; substring
    tests are several times faster than one ``re.I`` alternation.)"""
    return "://" in text or "password" in text.casefold()


def register_secret(secret: str | None) -> None:
    """Remember ``secret`` (and its percent-encoded/decoded forms) so :func:`redact` hides it."""
    global _ordered
    if not secret:
        return
    for form in (secret, unquote(secret), quote(secret, safe="")):
        if len(form) >= MIN_SECRET:
            _secrets.add(form)
    _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def dsn_password(dsn: str) -> str | None:
    """The password in ``dsn``, found by shape alone (works when the DSN does not parse)."""
    text = dsn.strip()
    m = re.match(r"^[a-z][a-z0-9+.-]*://", text, re.I)
    if m:
        rest = text[m.end() :]
        userinfo = rest[: rest.rfind("@")] if "@" in rest else ""
        pw = userinfo.split(":", 1)[1] if ":" in userinfo else None
        q = _QUERY_PW.search(text)
        return pw or (unquote(q["pw"]) if q else None)
    kv = _KV_PW.search(text)
    if kv is None:
        return None
    value = kv["pw"]
    if value.startswith("'") and value.endswith("'") and len(value) >= 2:
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def register_dsn(dsn: str) -> None:
    """Register the password of ``dsn`` (see :func:`register_secret`)."""
    register_secret(dsn_password(dsn))


def redact_dsn(dsn: str) -> str:
    """``dsn`` for display: its password replaced by ``***``, even when it does not parse."""
    text = dsn.strip()
    m = re.match(r"^[a-z][a-z0-9+.-]*://", text, re.I)
    if m and "@" in text[m.end() :]:
        rest = text[m.end() :]
        at = rest.rfind("@")
        userinfo, host = rest[:at], rest[at + 1 :]
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        return redact(f"{m.group(0)}{userinfo}@{host}")
    return redact(text)


def redact(text: str) -> str:
    """``text`` with every password in a URL or ``password=...`` replaced by ``***``."""
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, "***")
    if not _maybe_shaped(text):
        return text
    text = _URL_PW.sub(lambda m: m["pre"] + "***" + m["at"], text)
    text = _QUERY_PW.sub(lambda m: m["pre"] + "***", text)
    text = _SQL_PW.sub(lambda m: m["pre"] + "'***'", text)
    return _KV_PW.sub(lambda m: m["pre"] + "***", text)


def may_need_redaction(json_text: str) -> bool:
    """False when no string inside ``json_text`` (a JSON text) holds anything
    :func:`redact` would replace: then :func:`redact_tree` of what it encodes would change
    nothing. One search over the text instead of one per string (JSON escapes only ``"``,
    ``\\`` and control characters: a shape's marks and most secrets read the same
    inside it; a secret holding one of those makes the answer True)."""
    if _maybe_shaped(json_text):
        return True
    return any(s in json_text or _JSON_ESCAPED.search(s) is not None for s in _ordered)


def redact_tree(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings ...) with :func:`redact` applied to every
    string in it (redacting serialized JSON instead could swallow its quotes)."""
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v) for v in value]
    return redact(value) if isinstance(value, str) else value

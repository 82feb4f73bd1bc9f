"""Passwords out of any text: DSNs in messages, logs, reports and the journal.

Contract: :func:`redact` is pure and cheap to import (only :mod:`re`), so the
CLI's error path can use it without importing a database driver.
"""

from __future__ import annotations

import re

_URL_PW = re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<at>@)", re.I)
_KV_PW = re.compile(r"(?P<pre>(?<![?&])\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.I)
_QUERY_PW = re.compile(r"(?P<pre>[?&]password=)(?P<pw>[^&\s]*)", re.I)


def redact(text: str) -> str:
    """``text`` with every password in a URL or ``password=...`` replaced by ``***``."""
    text = _URL_PW.sub(lambda m: m["pre"] + "***" + m["at"], text)
    text = _QUERY_PW.sub(lambda m: m["pre"] + "***", text)
    return _KV_PW.sub(lambda m: m["pre"] + "***", text)

"""The settings every sync and verify session runs with, whatever the server's defaults.

Contract: :func:`pin` sets, on a freshly opened connection and before any
transaction of the run, the output settings values are rendered and parsed
with (``DateStyle``, ``IntervalStyle``, ``extra_float_digits``,
``bytea_output``, ``TimeZone``, ``lc_monetary``, ``client_encoding``), the
same on the source and the target, so a value copied as text arrives as it
left (a source database with ``DateStyle = 'SQL, DMY'`` would otherwise send
2026-01-02 as ``02/01/2026``, and the target would read 2026-02-01).

It also sets ``row_security = off``, as pg_dump does: a role that row-level
security filters then gets an error instead of a silent subset (a sync that
saw a subset would delete every target row it could not see). The plan
stops such a table before that, with one sentence
(:func:`pgferry.sync.plan.build_plan`, from ``row_security_active`` in the
catalog). And it sets the
session's own timeouts to what a run needs (no ``statement_timeout``, no
``idle_in_transaction_session_timeout`` — a worker waits idle in its
snapshot transaction while others copy —, ``lock_timeout`` as given), so a
role or database default cannot break a long run half-way.

Settings go through ``set_config`` with bound parameters (never startup
``options``, which connection poolers refuse); a masking key goes the same way
into the session variable ``pgferry.mask_key``, so it never appears in SQL
text (``pg_stat_activity``, the server log of a failing query).
"""

from __future__ import annotations

from typing import Any

import psycopg

#: the value settings (text form of values) and the behaviour settings every session pins
PINNED: dict[str, str] = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "bytea_output": "hex",
    "TimeZone": "UTC",
    "lc_monetary": "C",
    "client_encoding": "UTF8",
    "standard_conforming_strings": "on",
    "row_security": "off",
    "statement_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
}

#: settings that exist only on newer servers: (setting, value, first server_version_num)
_NEWER = (("idle_session_timeout", "0", 140000), ("transaction_timeout", "0", 170000))

MASK_KEY_SETTING = "pgferry.mask_key"


def pin(
    conn: psycopg.Connection[Any],
    *,
    lock_timeout: str | None = None,
    mask_key: str | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """Pin the run's session settings on ``conn`` (idle; commits when not autocommit)."""
    values = dict(PINNED)
    for name, value, since in _NEWER:
        if conn.info.server_version >= since:
            values[name] = value
    if lock_timeout is not None:
        values["lock_timeout"] = lock_timeout
    values.update(extra or {})
    if mask_key is not None:
        values[MASK_KEY_SETTING] = mask_key
    names = list(values)
    q = "SELECT " + ", ".join("set_config(%s, %s, false)" for _ in names)
    conn.execute(q, [v for n in names for v in (n, values[n])])
    if not conn.autocommit:
        conn.commit()

"""Reading a gate's value: a PromQL query against Prometheus' HTTP API, or a SQL query.

Contract: :func:`read` returns a :class:`Reading`: the value, or why there is none
(``error``). Prometheus: ``GET <prometheus_url>/api/v1/query?query=...`` (instant
query); a vector's largest sample is the value, a scalar is the value, an empty vector
is "no data". SQL: the first column of the first row, as a number, read in a ``READ
ONLY`` transaction with ``statement_timeout`` = ``[gates] timeout``. Neither ever raises
for a failed read: a gate that cannot be read is *unknown* (``[gates] on_unknown``
decides what that means). :func:`check` reads every gate once before a backfill or a
watch starts and raises :class:`~pgferry.errors.BadInput` (exit 2) for a query that
Prometheus or the server rejects as bad (``bad_data``, a syntax error), naming the gate.
A URL with user information (``https://USER:TOKEN@host``, as hosted Prometheus services
hand out) is asked with HTTP basic authentication, the user information taken out of the
URL. No credentials are logged: the URL is shown without its password.
"""

from __future__ import annotations

import base64
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgferry.config import GateConfig, GatesConfig
from pgferry.errors import BadInput
from pgferry.pg import errors as pg_errors
from pgferry.redaction import redact


@dataclass(frozen=True)
class Reading:
    value: float | None
    error: str | None = None
    bad_query: bool = False  # the source rejected the query itself (not a passing failure)


def _timeout(cfg: GatesConfig) -> float:
    return cfg.timeout.total_seconds()


def _request(base: str, query: str) -> urllib.request.Request:
    """The instant query's request; user information in ``base`` becomes basic auth."""
    parts = urllib.parse.urlsplit(base.rstrip("/"))
    headers: dict[str, str] = {}
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        parts = parts._replace(netloc=host)
    url = (
        urllib.parse.urlunsplit(parts) + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    )
    return urllib.request.Request(url, headers=headers)


def prometheus(cfg: GatesConfig, query: str) -> Reading:
    """An instant query against ``cfg.prometheus_url``."""
    assert cfg.prometheus_url
    req = _request(cfg.prometheus_url, query)
    try:
        with urllib.request.urlopen(req, timeout=_timeout(cfg)) as r:  # noqa: S310 (config URL)
            body = json.loads(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read().decode("utf-8"))
        except (ValueError, OSError):
            why = (
                " (check the user and password in [gates] prometheus_url)"
                if e.code in (401, 403)
                else ""
            )
            return Reading(None, f"Prometheus answered HTTP {e.code}{why}")
        return Reading(
            None,
            f"Prometheus rejected the query: {body.get('error', e.code)}",
            bad_query=body.get("errorType") == "bad_data",
        )
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return Reading(
            None, f"Prometheus at {redact(cfg.prometheus_url)} did not answer ({reason})"
        )
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    values: list[float] = []
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        values = [float(result[1])]
    elif kind == "vector" and isinstance(result, list):
        values = [float(s["value"][1]) for s in result if "value" in s]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return Reading(None, "no data (the query returned no sample)")
    return Reading(max(values))


def sql_value(conn: psycopg.Connection[Any], cfg: GatesConfig, query: str) -> Reading:
    """The first column of the first row of ``query`` as a number (read-only)."""
    timeout = f"{int(_timeout(cfg) * 1000)}ms"
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SELECT set_config('statement_timeout', %s, true)", [timeout])
            row = conn.execute(sql.SQL(query)).fetchone()
    except psycopg.Error as e:
        msg = (e.diag.message_primary if e.diag else None) or str(e)
        return Reading(
            None, f"the query failed: {redact(msg).strip()}", bad_query=pg_errors.bad_query(e)
        )
    if row is None or row[0] is None:
        return Reading(None, "no data (the query returned no value)")
    try:
        return Reading(float(row[0]))
    except (TypeError, ValueError):
        return Reading(None, f"the query returned {row[0]!r}, not a number", bad_query=True)


def read(gate: GateConfig, cfg: GatesConfig, conn: psycopg.Connection[Any] | None) -> Reading:
    if gate.promql is not None:
        return prometheus(cfg, gate.promql)
    assert gate.sql is not None
    if conn is None:
        return Reading(None, "no connection to read a SQL gate on")
    return sql_value(conn, cfg, gate.sql)


def check(
    gates: list[GateConfig], cfg: GatesConfig, conn: psycopg.Connection[Any] | None
) -> dict[str, Reading]:
    """Read each gate once; BadInput (exit 2) for a query its source rejects."""
    out = {}
    for g in gates:
        r = read(g, cfg, conn)
        if r.bad_query:
            raise BadInput(
                f"gate {g.name!r}: {r.error}; fix its "
                f"{'promql' if g.promql is not None else 'sql'} in pgferry.toml",
                gate=g.name,
            )
        out[g.name] = r
    return out

"""Judging the guards of contract files against one environment.

Contract: :func:`evaluate` returns one :class:`GuardResult` per guard of a contract file
(:class:`~pgferry.migrate.phases.Header`), reading only:

- ``after backfill NAME``: ``pgferry.backfill_state`` (the whole-table run of NAME has
  ``completed`` here);
- ``require SQL``: the query, in a ``READ ONLY`` transaction under ``[contract]
  guard_timeout``, must return no row (the first rows it returned are shown); an error of
  the query holds the file and is shown, it is never raised;
- ``require-no-clients CONDITION``: no session of this database matching CONDITION in
  ``pg_stat_activity`` — in every sample taken by :func:`watch_clients` (``migrate up
  --contract`` samples for ``[contract] clients_window``), or in one sample now;
- ``wait DURATION``: the expand this contract belongs to (the newest applied file with
  ``-- pgferry:phase expand`` below the contract's version; without one, the newest applied
  file below it) was applied at least DURATION ago, by the server's clock.

Nothing here writes; the service decides what to do with the results
(:mod:`pgferry.migrate.contract`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from pgferry.backfill import state as bf_state
from pgferry.config import Config
from pgferry.migrate.files import MigrationSet, Version
from pgferry.migrate.history import HistoryRow
from pgferry.migrate.phases import CLIENT_QUERY, Guard, Header, parse_header
from pgferry.migrate.plan import fold
from pgferry.pg.connect import redact


@dataclass
class GuardResult:
    guard: Guard
    ok: bool
    why: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.guard.to_dict(),
            "label": self.guard.label,
            "ok": self.ok,
            "why": self.why,
            **({"hint": self.hint} if self.hint else {}),
        }


@dataclass
class Sightings:
    """What :func:`watch_clients` saw: per condition, the sessions matching it (first seen)."""

    seen: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    watched_s: float = 0.0
    samples: int = 0


def _sample(conn: psycopg.Connection[Any], condition: str) -> list[dict[str, Any]]:
    query = sql.SQL(CLIENT_QUERY).format(sql.SQL(condition))
    rows = conn.execute(query).fetchall()
    return [
        {
            "pid": r[0],
            "user": r[1],
            "application_name": r[2],
            "backend_start": r[3].isoformat() if r[3] else None,
        }
        for r in rows
    ]


def watch_clients(
    conn: psycopg.Connection[Any],
    conditions: list[str],
    window: float,
    interval: float,
    on_tick: Callable[[float, float, int], None] | None = None,
) -> Sightings:
    """Sample ``pg_stat_activity`` for each condition every ``interval`` seconds for
    ``window`` seconds (once when 0); stops early once every condition was seen."""
    out = Sightings()
    todo = list(dict.fromkeys(conditions))
    start = time.monotonic()
    while todo:
        for cond in list(todo):
            try:
                found = _sample(conn, cond)
            except psycopg.Error as e:
                found = [{"error": redact(str(e).strip())}]
            if found:
                out.seen[cond] = found
                todo.remove(cond)
        out.samples += 1
        out.watched_s = time.monotonic() - start
        if not todo or out.watched_s >= window:
            break
        if on_tick is not None:
            on_tick(out.watched_s, window, len(todo))
        time.sleep(min(interval, max(window - out.watched_s, 0.01)))
    out.watched_s = time.monotonic() - start
    return out


def _fmt(seconds: float) -> str:
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}min"
    if s >= 60:
        return f"{s // 60}min {s % 60}s"
    return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"


def _after_backfill(conn: psycopg.Connection[Any], cfg: Config, env: str, g: Guard) -> GuardResult:
    if not (cfg.backfills_dir / f"{g.arg}.sql").is_file():
        return GuardResult(
            g,
            False,
            f"there is no {cfg.backfill.dir}/{g.arg}.sql",
            f"write {cfg.backfill.dir}/{g.arg}.sql, or fix the guard's name",
        )
    st = bf_state.read(conn, g.arg, "")
    run = f"`pgferry backfill run {g.arg} --env {env}`"
    if st is None:
        return GuardResult(g, False, f"{g.arg} has not run in {env}", f"run {run}")
    if st.status != "completed":
        return GuardResult(
            g,
            False,
            f"{g.arg} is not completed in {env} ({st.describe()})",
            f"run {run}" + (" (it resumes)" if st.status != "reverted" else ""),
        )
    return GuardResult(g, True, f"{g.arg} {st.describe()}")


def _require(conn: psycopg.Connection[Any], cfg: Config, g: Guard) -> GuardResult:
    timeout = f"{int(cfg.contract.guard_timeout.total_seconds() * 1000)}ms"
    query = sql.SQL("SELECT * FROM ({}) AS pgferry_require LIMIT 3").format(sql.SQL(g.arg))
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SELECT set_config('statement_timeout', %s, true)", [timeout])
            cur = conn.execute(query)
            rows = cur.fetchall()
            names = [d.name for d in cur.description or []]
    except psycopg.Error as e:
        msg = redact((e.diag.message_primary if e.diag else None) or str(e)).strip()
        return GuardResult(
            g, False, f"the require query failed: {msg}", "fix the query in the file's header"
        )
    if not rows:
        return GuardResult(g, True, "the require query returns no row")
    first = ", ".join(f"{n}={v!r}" for n, v in zip(names, rows[0], strict=False))
    more = " (and more)" if len(rows) > 1 else ""
    return GuardResult(
        g,
        False,
        f"the require query still returns rows, e.g. ({first}){more}",
        "finish the backfill, or fix the rows it names",
    )


def _clients(g: Guard, sightings: Sightings | None, window: float) -> GuardResult:
    if sightings is None:
        return GuardResult(g, False, "not sampled")
    found = sightings.seen.get(g.arg)
    if found:
        if "error" in found[0]:
            return GuardResult(
                g,
                False,
                f"the condition failed: {found[0]['error']}",
                "fix the condition in the file's header",
            )
        s = found[0]
        who = f"pid {s['pid']} ({s['application_name'] or 'no application_name'}, user {s['user']})"
        n = len(found)
        return GuardResult(
            g,
            False,
            f"{n} session{'s' if n != 1 else ''} match, e.g. {who}",
            "wait until the old application version is gone",
        )
    if sightings.watched_s + 0.5 < window:
        return GuardResult(
            g,
            True,
            f"no matching session now ({sightings.samples} sample); "
            f"`migrate up --contract` watches for {_fmt(window)} first",
        )
    return GuardResult(
        g,
        True,
        f"no matching session in {sightings.samples} samples over {_fmt(sightings.watched_s)}",
    )


def expand_row(
    ms: MigrationSet, rows: list[HistoryRow], version: Version | None
) -> HistoryRow | None:
    """The applied row of the expand a contract at ``version`` belongs to (see the module
    docstring), or None."""
    applied = fold(rows).applied
    below = sorted((v for v in applied if version is None or v < version), reverse=True)
    files = ms.by_version()
    for v in below:
        f = files.get(v)
        if f is not None:
            try:
                if parse_header(f.sql, f.script).phase == "expand":
                    return applied[v]
            except Exception:  # noqa: BLE001 (a bad header elsewhere is not this guard's)
                continue
    return applied[below[0]] if below else None


def _wait(
    conn: psycopg.Connection[Any],
    ms: MigrationSet,
    rows: list[HistoryRow],
    version: Version | None,
    g: Guard,
) -> GuardResult:
    row = expand_row(ms, rows, version)
    if row is None:
        return GuardResult(
            g,
            False,
            "its expand is not applied here yet",
            "apply the expand first (`pgferry migrate up`)",
        )
    now = conn.execute("SELECT localtimestamp").fetchone()
    assert now is not None
    age = (now[0] - row.installed_on).total_seconds()
    name = f"{row.version} {row.script}"
    if age >= g.seconds:
        return GuardResult(g, True, f"{name} was applied {_fmt(age)} ago")
    left = timedelta(seconds=g.seconds - age)
    return GuardResult(
        g,
        False,
        f"{name} was applied {_fmt(age)} ago, {g.arg} are needed",
        f"wait {_fmt(left.total_seconds())} more",
    )


def evaluate(
    conn: psycopg.Connection[Any],
    cfg: Config,
    env: str,
    ms: MigrationSet,
    rows: list[HistoryRow],
    version: Version | None,
    header: Header,
    sightings: Sightings | None,
) -> list[GuardResult]:
    """Every guard of ``header`` judged now (``conn``: autocommit; only reads)."""
    window = cfg.contract.clients_window.total_seconds()
    out: list[GuardResult] = []
    for g in header.guards:
        if g.kind == "after_backfill":
            out.append(_after_backfill(conn, cfg, env, g))
        elif g.kind == "require":
            out.append(_require(conn, cfg, g))
        elif g.kind == "require_no_clients":
            out.append(_clients(g, sightings, window))
        else:
            out.append(_wait(conn, ms, rows, version, g))
    return out

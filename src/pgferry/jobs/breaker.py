"""A circuit breaker per environment, shared by every process through the control database.

Contract: after ``[service] breaker_failures`` connection failures in a row to one
environment (:class:`~pgferry.errors.Unreachable`: the database did not answer) the
breaker is **open**: :func:`check` raises :class:`CircuitOpen` at once, without
touching the database, for ``breaker_cooldown``; then it is **half-open**: the next
call goes through, and its outcome (:func:`record`) closes the breaker or opens it
again for another cool-down. :func:`states` is what ``GET /api/environments`` and the
service's health report show. Reads are cached in-process for a second (a burst of
requests costs the control database one query).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pgferry.config import Config
from pgferry.errors import Unreachable
from pgferry.jobs.control import Control
from pgferry.redaction import redact

BreakerState = Literal["closed", "open", "half_open"]


class CircuitOpen(Unreachable):
    """Calls to the environment fail fast: it failed too often in a row (exit 3, HTTP 503)."""


@dataclass(frozen=True)
class Breaker:
    env: str
    state: BreakerState
    failures: int
    opened_at: datetime | None
    last_error: str | None
    #: when an open breaker lets the next call through
    retry_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "failures": self.failures,
            "opened_at": self.opened_at.isoformat() if self.opened_at else None,
            "retry_at": self.retry_at.isoformat() if self.retry_at else None,
            "last_error": self.last_error,
        }


_cache: dict[str, tuple[float, dict[str, Breaker]]] = {}
_lock = threading.Lock()


def _judge(cfg: Config, env: str, row: dict[str, Any] | None, now: datetime) -> Breaker:
    if row is None:
        return Breaker(env, "closed", 0, None, None, None)
    failures, opened = int(row["failures"]), row["opened_at"]
    if failures < cfg.service.breaker_failures or opened is None:
        return Breaker(env, "closed", failures, None, row["last_error"], None)
    retry_at = opened + cfg.service.breaker_cooldown
    state: BreakerState = "open" if now < retry_at else "half_open"
    return Breaker(env, state, failures, opened, row["last_error"], retry_at)


def states(cfg: Config, ctl: Control, *, fresh: bool = False) -> dict[str, Breaker]:
    """Every configured environment's breaker."""
    key = ctl.dsn
    hit = None if fresh else cached_states(ctl)
    if hit is not None:
        return hit
    with ctl.conn() as c:
        rows = {
            r["env"]: r
            for r in c.execute(
                "SELECT env, failures, opened_at, last_error FROM pgferry_control.breakers"
            )
        }
    now = datetime.now(UTC)
    out = {env: _judge(cfg, env, rows.get(env), now) for env in cfg.environments}
    with _lock:
        _cache[key] = (time.monotonic(), out)
    return out


def cached_states(ctl: Control) -> dict[str, Breaker] | None:
    """What :func:`states` answers while its in-process copy is fresh (no query), else
    None."""
    with _lock:
        hit = _cache.get(ctl.dsn)
    return hit[1] if hit is not None and time.monotonic() - hit[0] < 1.0 else None


def check(cfg: Config, ctl: Control, env: str) -> Breaker:
    """The breaker of ``env``; :class:`CircuitOpen` while it is open."""
    b = states(cfg, ctl, fresh=True).get(env) or Breaker(env, "closed", 0, None, None, None)
    if b.state == "open":
        raise CircuitOpen(
            f"environment {env!r} failed {b.failures} time(s) in a row (last: {b.last_error}); "
            f"calls to it fail fast until {b.retry_at:%H:%M:%S} UTC (circuit breaker)",
            env=env,
            breaker=b.to_dict(),
        )
    return b


def record(cfg: Config, ctl: Control, env: str, *, ok: bool, error: str | None = None) -> None:
    """Count a call's outcome: a success closes the breaker; a connection failure counts,
    and the N-th in a row (or one in half-open) opens it."""
    with ctl.conn() as c:
        if ok:
            c.execute(
                "UPDATE pgferry_control.breakers SET failures = 0, opened_at = NULL,"
                " updated_at = now() WHERE env = %s AND failures > 0",
                [env],
            )
        else:
            c.execute(
                "INSERT INTO pgferry_control.breakers AS b (env, failures, last_error, opened_at)"
                " VALUES (%(env)s, 1, %(err)s, CASE WHEN 1 >= %(n)s THEN now() END)"
                " ON CONFLICT (env) DO UPDATE SET failures = b.failures + 1,"
                " last_error = %(err)s, updated_at = now(),"
                " opened_at = CASE WHEN b.failures + 1 >= %(n)s THEN now() ELSE b.opened_at END",
                {
                    "env": env,
                    "err": redact(error or "unreachable")[:500],
                    "n": cfg.service.breaker_failures,
                },
            )
    with _lock:
        _cache.pop(ctl.dsn, None)

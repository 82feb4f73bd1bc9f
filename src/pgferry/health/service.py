"""``pgferry health`` as a service function: the CLI and the admin service call :func:`run`.

Contract: :func:`run` returns the :class:`~pgferry.health.status.HealthReport` of one
environment at ``now``: gather the facts (:mod:`pgferry.health.checks`), judge them
(:mod:`pgferry.health.status`). Within ``[health] cache_interval`` of the last run
for the same config and environment it answers from its cache (``cached: true``)
without touching the database, so a scraper polling ``/metrics`` every second
cannot load it. It raises only for bad input (an unknown environment, a broken
URL: exit 2); a database that does not answer is a critical report, not an error.
Health is read-only: it writes nothing, not even the journal.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from pgferry.config import Config
from pgferry.errors import OperationFailed
from pgferry.health import backups, checks, status
from pgferry.health.facts import HealthFacts
from pgferry.health.status import HealthReport
from pgferry.pg.connect import redact

_cache: dict[tuple[str, str], HealthReport] = {}
_lock = threading.Lock()


def run(cfg: Config, env: str, *, now: datetime, use_cache: bool = True) -> HealthReport:
    """The health of ``env`` at ``now`` (from the cache when it is fresh enough)."""
    from pgferry.pg.connect import resolve_env

    th = cfg.health.thresholds(env)  # also: ConfigError for an unknown env
    hit = cached(cfg, env, now=now) if use_cache else None
    if hit is not None:
        return hit
    key = (str(cfg.path), env)
    try:
        target = resolve_env(cfg, env)
    except OperationFailed as e:  # the embedded server would not start: unreachable
        report = unreachable(cfg, env, now=now, why=e.message)
    else:
        report = status.evaluate(checks.gather(cfg, target, th, now), th, now)
    with _lock:
        _cache[key] = report
    return report


def unreachable(cfg: Config, env: str, *, now: datetime, why: str) -> HealthReport:
    """The report of ``env`` when it cannot be asked (its embedded server would not start,
    its circuit breaker is open): critical, reachability failed with ``why``, the backup
    checks still read from disk. Not cached."""
    facts = HealthFacts(env=env, checked_at=now, reachable=False, error=why)
    try:
        facts.backups = backups.read(cfg, env)
    except OSError as e:
        facts.failures["backups"] = facts.failures["restore_test"] = redact(str(e))
    return status.evaluate(facts, cfg.health.thresholds(env), now)


def cached(
    cfg: Config, env: str, *, now: datetime, interval_s: float | None = None
) -> HealthReport | None:
    """The cached report of ``env`` (``cached: true``) while it is fresh at ``now``, else
    None; never touches a database (an event loop may call it). ``interval_s``: the
    environment's ``cache_interval`` when the caller knows it (reading the thresholds
    is most of a call's cost)."""
    if interval_s is None:
        interval_s = cfg.health.thresholds(env).seconds("cache_interval")
    with _lock:
        hit = _cache.get((str(cfg.path), env))
    if hit is not None and 0 <= (now - hit.checked_at).total_seconds() < interval_s:
        return replace(hit, cached=True)
    return None

"""The service's state shared by every request: config, control database, caches, worker.

Contract: one :class:`Service` per app (``app.state.service``), made by
:func:`pgferry.server.app.create_app`. :meth:`Service.health` is the production
health report the ``/api/admin`` routes and ``/metrics`` share: the health
capability's own cache (``[health] cache_interval``) behind a per-environment lock,
so a burst of requests makes one health run per interval, not one each; an
environment whose circuit breaker is open is not asked at all. ``runs_answers`` keeps
the answers of ``GET /api/runs`` while ``runs_version`` says no run changed
(:mod:`pgferry.server.runs_cache`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgferry.config import Config
from pgferry.errors import BadInput
from pgferry.jobs.control import Control

if TYPE_CHECKING:
    from pgferry.health.status import HealthReport
    from pgferry.jobs.queue import Worker
    from pgferry.jobs.runs_version import VersionReader
    from pgferry.server.guard import Limiter, TokenCache
    from pgferry.server.runs_cache import AnswerCache


@dataclass
class Service:
    cfg: Config
    ctl: Control
    limiter: Limiter
    tokens: TokenCache
    #: fresh reads of the runs' version and the answers of GET /api/runs made at one
    runs_version: VersionReader
    runs_answers: AnswerCache
    worker: Worker | None = None
    #: the answer of production-health made from one cached report and breaker state,
    #: per environment (the report's time and the breaker say whether it still holds)
    health_answers: dict[str, tuple[Any, bytes]] = field(default_factory=dict)
    _intervals: dict[str, float] = field(default_factory=dict)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    @property
    def production(self) -> str:
        """``[service] production``, else the only protected environment, else BadInput."""
        if self.cfg.service.production:
            return self.cfg.service.production
        protected = [n for n, e in self.cfg.environments.items() if e.protected]
        if len(protected) == 1:
            return protected[0]
        raise BadInput(
            "set [service] production: "
            + (
                "no environment is protected"
                if not protected
                else f"several are protected ({', '.join(protected)})"
            ),
            field="env",
        )

    def _lock_of(self, env: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(env, threading.Lock())

    def cached_health(self, env: str) -> tuple[HealthReport, dict[str, Any]] | None:
        """What :meth:`health` answers when both the health cache and the breakers' cache
        are fresh and the breaker is closed, without any I/O (the event loop calls it);
        else None."""
        from pgferry.health import service as health_service
        from pgferry.jobs import breaker

        states = breaker.cached_states(self.ctl)
        b = states.get(env) if states is not None else None
        if b is None or b.state != "closed":
            return None
        interval = self._intervals.get(env)
        if interval is None:  # the config does not change while the service runs
            interval = self.cfg.health.thresholds(env).seconds("cache_interval")
            self._intervals[env] = interval
        rep = health_service.cached(self.cfg, env, now=datetime.now(UTC), interval_s=interval)
        return (rep, b.to_dict()) if rep is not None else None

    def health(self, env: str) -> tuple[HealthReport | None, dict[str, Any]]:
        """The health report of ``env`` (cached) and its circuit breaker; no report while
        the breaker is open."""
        from pgferry.commands import health
        from pgferry.jobs import breaker

        b = breaker.states(self.cfg, self.ctl).get(env)
        if b is not None and b.state == "open":
            return None, b.to_dict()
        with self._lock_of(env):  # one health run at a time per env: the others read its cache
            rep = health.health(self.cfg, env, now=datetime.now(UTC), use_cache=True)
        if not rep.cached:
            reach = next((c for c in rep.checks if c.name == "reachability"), None)
            ok = reach is None or reach.status != "critical"
            breaker.record(
                self.cfg,
                self.ctl,
                env,
                ok=ok,
                error=None if ok else (reach.message if reach else None),
            )
            b = breaker.states(self.cfg, self.ctl, fresh=True).get(env)
        return rep, (b.to_dict() if b is not None else {"state": "closed", "failures": 0})

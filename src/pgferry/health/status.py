"""Statuses: facts and thresholds in, one status per check and one overall, out. Pure.

Contract: :func:`evaluate` takes :class:`~pgferry.health.facts.HealthFacts`, the
environment's :class:`~pgferry.config.HealthThresholds` and ``now`` (no clock, no
I/O here) and returns a :class:`HealthReport`: one :class:`HealthCheck` per rule of
:mod:`pgferry.health.rules` (name, status, value, threshold, message, how to fix)
and the overall status by :func:`overall`:

- any check critical → critical; else any degraded → degraded;
- else every data threshold (``[health.tables]``) at optimal → optimal; else healthy.

A check that could not run (a privilege missing, an extension absent, the database
not answering) is ``unknown`` with the reason, never optimal; it does not change
the overall status by itself (the issue's rules), it is listed and exported as
``-1`` so an alert can watch for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from pgferry.config import HealthThresholds
from pgferry.health import rules
from pgferry.health.facts import HealthFacts
from pgferry.health.rules import Status

#: the metric value of each status: higher is worse; unknown is -1 (never reads as ok)
LEVELS: dict[Status, int] = {
    "optimal": 0,
    "healthy": 1,
    "degraded": 2,
    "critical": 3,
    "unknown": -1,
}


@dataclass
class HealthCheck:
    """One check's verdict: what it saw, against what, and what to do about it."""

    name: str
    status: Status
    value: str = ""
    threshold: str = ""
    message: str = ""
    fix: str = ""
    #: server, or data (a [health.tables] threshold)
    kind: Literal["server", "data"] = "server"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HealthReport:
    env: str
    status: Status
    checks: list[HealthCheck]
    checked_at: datetime
    duration_s: float
    facts: HealthFacts = field(repr=False)
    cached: bool = False

    @property
    def ok(self) -> bool:
        """Exit 0 for optimal and healthy, 1 for degraded and critical."""
        return self.status in ("optimal", "healthy")

    def check(self, name: str) -> HealthCheck:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "env": self.env,
            "status": self.status,
            "checked_at": self.checked_at.isoformat(),
            "duration_ms": round(self.duration_s * 1000, 1),
            "cached": self.cached,
            "checks": [c.to_dict() for c in self.checks],
        }


def overall(checks: list[HealthCheck]) -> Status:
    """The environment's status from its checks (see the module docstring)."""
    statuses = {c.status for c in checks}
    if "critical" in statuses:
        return "critical"
    if "degraded" in statuses:
        return "degraded"
    if all(c.status == "optimal" for c in checks if c.kind == "data"):
        return "optimal"
    return "healthy"


def evaluate(facts: HealthFacts, th: HealthThresholds, now: datetime) -> HealthReport:
    """Every check's status, and the overall one."""
    checks: list[HealthCheck] = []
    for name, rule in rules.RULES:
        if not facts.reachable and name != "reachability" and name not in rules.OFFLINE:
            checks.append(HealthCheck(name, "unknown", message=rules.NOT_REACHED))
        elif name in facts.failures:
            checks.append(
                HealthCheck(
                    name,
                    "unknown",
                    message=f"could not run: {facts.failures[name]}",
                    fix=rules.fix_for_failure(facts, facts.failures[name]),
                )
            )
        else:
            checks.append(HealthCheck(name, *rule(facts, th, now)))
    for table, cfg in sorted(th.tables.items()):
        name = f"rows:{table}"
        verdict: rules.Verdict
        if not facts.reachable:
            verdict = ("unknown", "", rules.table_threshold(cfg), rules.NOT_REACHED, "")
        else:
            verdict = rules.table_rows(facts, table, cfg)
        checks.append(HealthCheck(name, *verdict, kind="data"))
    return HealthReport(
        facts.env, overall(checks), checks, facts.checked_at, facts.duration_s, facts
    )

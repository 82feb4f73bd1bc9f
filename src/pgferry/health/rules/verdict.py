"""What a health rule returns, and the phrases every rule shares.

Contract: a rule is a :data:`Rule`: facts + thresholds + now → a :data:`Verdict`
(status, value, threshold, message, fix). :func:`dur` writes a duration a person reads
at a glance; :func:`fix_for_failure` says what to do when a check's query failed.
Pure (no I/O, no clock).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pgferry.config import HealthThresholds
from pgferry.health.facts import HealthFacts

#: a check's status, from best to worst; unknown: it could not be judged
Status = Literal["optimal", "healthy", "degraded", "critical", "unknown"]
Verdict = tuple[Status, str, str, str, str]  # status, value, threshold, message, fix
Rule = Callable[[HealthFacts, HealthThresholds, datetime], Verdict]


def dur(seconds: float) -> str:
    """``41 s``, ``5 min``, ``2.5 h``, ``3 d``: a duration a person reads at a glance."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def grant(f: HealthFacts) -> str:
    return f"GRANT pg_read_all_stats TO {f.role or 'the role pgferry connects as'}"


def fix_for_failure(f: HealthFacts, reason: str) -> str:
    """What to do when a check's query failed."""
    if "permission denied" in reason:
        return f"grant the role {f.role} read access to it (or {grant(f)})"
    if "statement timeout" in reason:
        return "raise [health] statement_timeout, or look at the server's load"
    return "fix what the message names, then run pgferry health again"

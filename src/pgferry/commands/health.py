"""``health``: the checks of one environment, one status.

Contract: :func:`health` returns the :class:`~pgferry.health.status.HealthReport`
of an environment (default: :func:`pgferry.commands.base.pick_env`), asked now
(a command line never answers from the service's cache); ``report.ok`` False
(degraded or critical) is exit 1. Read-only; nothing is journaled.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pgferry.commands import base
from pgferry.config import Config

if TYPE_CHECKING:
    from pgferry.health.status import HealthReport


def health(
    cfg: Config, env: str | None = None, *, now: datetime | None = None, use_cache: bool = False
) -> HealthReport:
    """Check ``env``: every check of :mod:`pgferry.health` and the status they add up to."""
    from pgferry.health import service

    return service.run(cfg, base.pick_env(cfg, env), now=base.now_or(now), use_cache=use_cache)

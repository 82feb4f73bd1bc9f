"""The gates of one run: which apply, when they are read, what fired.

Contract: :class:`GateSet` holds the ``[[gate]]`` entries that apply to an environment
and a phase (``"backfill"`` or ``"watch"``: a gate's ``envs`` and ``during``).
:meth:`GateSet.check` reads each once up front (a rejected query is exit 2 before anything
runs). :meth:`GateSet.poll` reads every gate when ``[gates] interval`` has passed since
the last reading (or when forced) and returns a :class:`Poll`: the gates that fired
(:mod:`pgferry.gates.evaluate`) and those that could not be read (unknown). Each reading
is kept in :attr:`GateSet.last_readings` for progress lines and the journal. The clock
is injectable (tests pass their own).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgferry.config import Config, GateConfig
from pgferry.gates import sources
from pgferry.gates.evaluate import Evaluator, Firing
from pgferry.gates.sources import Reading


@dataclass
class Poll:
    firings: list[Firing] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)  # gate -> why it has no value
    read: bool = False  # whether the gates were read this time

    def worst(self) -> Firing | None:
        """The firing with the strongest action (rollback > abort > pause)."""
        rank = {"rollback": 3, "abort": 2, "pause": 1}
        return max(self.firings, key=lambda f: rank[f.action], default=None)


class GateSet:
    def __init__(
        self,
        cfg: Config,
        env: str,
        during: str,
        conn: psycopg.Connection[Any] | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg, self.conn, self.clock = cfg, conn, clock
        self.gates: list[GateConfig] = [
            g for g in cfg.gate if (not g.envs or env in g.envs) and during in g.during
        ]
        self.interval = cfg.gates.interval.total_seconds()
        #: [gates] with its URL's ${VAR}s resolved (a token kept in .env or the environment)
        self.sources = cfg.gates
        if self.gates and cfg.gates.prometheus_url:
            url = cfg.resolve(cfg.gates.prometheus_url, "gates.prometheus_url")
            self.sources = cfg.gates.model_copy(update={"prometheus_url": url})
        self.evaluator = Evaluator()
        self.last_read = float("-inf")
        self.last_readings: dict[str, Reading] = {}
        self.fired: list[Firing] = []

    def __bool__(self) -> bool:
        return bool(self.gates)

    @property
    def rollback_gates(self) -> list[GateConfig]:
        return [g for g in self.gates if g.action == "rollback"]

    def check(self) -> dict[str, Reading]:
        out = sources.check(self.gates, self.sources, self.conn)
        self.last_readings.update(out)
        return out

    def poll(self, force: bool = False) -> Poll:
        now = self.clock()
        if not self.gates or (not force and now - self.last_read < self.interval):
            return Poll()
        self.last_read = now
        p = Poll(read=True)
        for g in self.gates:
            r = sources.read(g, self.sources, self.conn)
            self.last_readings[g.name] = r
            if r.value is None:
                p.unknown[g.name] = r.error or "no value"
                continue
            f = self.evaluator.observe(g, r.value, now)
            if f is not None:
                p.firings.append(f)
                self.fired.append(f)
        return p

    def summary(self) -> str:
        """``latency 0.21, errors 0.004`` from the last readings."""
        parts = []
        for g in self.gates:
            r = self.last_readings.get(g.name)
            if r is None:
                continue
            parts.append(f"{g.name} {r.value:g}" if r.value is not None else f"{g.name} ?")
        return ", ".join(parts)

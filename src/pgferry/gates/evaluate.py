"""When a gate fires: the pure part (values and times in, firings out).

Contract: an :class:`Evaluator` is fed one reading per gate at a time
(:meth:`Evaluator.observe`, with ``now`` in seconds from any monotonic clock). A gate
*breaches* when ``value OP threshold`` holds (with ``delta``: the increase since the
previous reading, so a counter such as ``pg_stat_database.deadlocks`` fires when it rises);
it *fires* once it has breached continuously for its ``for`` duration (``for = "0s"``: at
the first breach), as a Prometheus alert's ``for`` does. A reading without a value
(unknown) neither breaches nor clears a breach. No I/O, no clock.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field

from pgferry.config import GateConfig

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Firing:
    """A gate that fired: which, the value that did it, and since when it breached."""

    gate: GateConfig
    value: float
    breached_for: float  # seconds

    @property
    def action(self) -> str:
        assert self.gate.action is not None
        return self.gate.action

    def describe(self) -> str:
        what = "increase" if self.gate.delta else "value"
        held = f" for {_fmt(self.breached_for)}" if self.gate.for_seconds > 0 else ""
        return (
            f"gate {self.gate.name!r} fired: {what} {self.value:g} {self.gate.op} "
            f"{self.gate.threshold:g}{held} (action {self.action})"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "gate": self.gate.name,
            "value": self.value,
            "op": self.gate.op,
            "threshold": self.gate.threshold,
            "for_s": self.gate.for_seconds,
            "breached_for_s": round(self.breached_for, 3),
            "action": self.action,
            "source": "promql" if self.gate.promql is not None else "sql",
            "query": self.gate.promql or self.gate.sql,
            "message": self.describe(),
        }


def _fmt(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f}min"
    return f"{seconds:.1f}s"


def breaches(gate: GateConfig, value: float) -> bool:
    assert gate.threshold is not None
    return _OPS[gate.op](value, gate.threshold)


@dataclass
class Evaluator:
    """Tracks each gate's breach over time (see the module docstring)."""

    since: dict[str, float] = field(default_factory=dict)  # gate -> first breach
    previous: dict[str, float] = field(default_factory=dict)  # gate -> last raw value

    def observe(self, gate: GateConfig, value: float | None, now: float) -> Firing | None:
        if value is None:
            return None
        compared: float | None = value
        if gate.delta:
            prev = self.previous.get(gate.name)
            self.previous[gate.name] = value
            compared = None if prev is None else value - prev
            if compared is None:
                return None
        assert compared is not None
        if not breaches(gate, compared):
            self.since.pop(gate.name, None)
            return None
        start = self.since.setdefault(gate.name, now)
        if now - start >= gate.for_seconds:
            return Firing(gate, compared, now - start)
        return None

    def breaching(self, gate: GateConfig) -> bool:
        return gate.name in self.since

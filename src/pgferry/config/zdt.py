"""The sections of zero-downtime changes: ``[contract]``, ``[backfill]``, ``[gates]``, ``[[gate]]``.

Contract: one pydantic model per section. A ``[[gate]]`` may start from a preset
(:data:`GATE_PRESETS`: latency, errors, deadlocks) that fills the keys it does not give;
the model then insists on exactly one of promql and sql, a threshold and an action. That
gate names are unique, their environments configured and a PromQL gate has a Prometheus to
ask is checked when the file loads (:mod:`pgferry.config.loading`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pgferry.config.fields import Duration, DurationField, _Model


class ContractConfig(_Model):
    """``[contract]``: how the guards of contract-phase migrations are judged."""

    #: ``require-no-clients``: `migrate up --contract` watches pg_stat_activity this long
    clients_window: DurationField = Duration("5min")
    #: ... taking a sample this often
    clients_interval: DurationField = Duration("15s")
    #: statement_timeout of each guard query (``require``), run read-only
    guard_timeout: DurationField = Duration("30s")


class BackfillConfig(_Model):
    """``[backfill]``: how ``pgferry backfill run`` pages, paces and protects production."""

    dir: str = "backfills"
    #: keys per batch to start with (batches then grow or shrink toward target_duration)
    batch_size: int = Field(20_000, ge=1)
    min_batch: int = Field(100, ge=1)
    max_batch: int = Field(1_000_000, ge=1)
    #: each batch should take about this long ("0": never change the batch size)
    target_duration: DurationField = Duration("200ms")
    lock_timeout: DurationField = Duration("250ms")
    statement_timeout: DurationField = Duration("30s")
    #: retries of a batch after a lock timeout or deadlock (it shrinks each time)
    lock_retries: int = Field(8, ge=0, le=100)
    #: pause while a standby's replay lag is above this (where pg_stat_replication shows it)
    max_replication_lag: DurationField = Duration("10s")
    #: how long one pause lasts before the signals are sampled again
    pause: DurationField = Duration("5s")
    #: pausing longer than this in a row stops the backfill (exit 3, resumable)
    max_pause: DurationField = Duration("10min")
    #: keep what each batch changed, so a gate (or `backfill revert`) can undo it
    keep_before_images: bool = True
    keep_before_images_for: DurationField = Duration("14d")


class GatesConfig(_Model):
    """``[gates]``: where gate metrics come from and how often they are read."""

    prometheus_url: str | None = None
    #: how often every gate is evaluated (during backfills and watch windows)
    interval: DurationField = Duration("15s")
    #: the watch window of `migrate up --watch`
    watch: DurationField = Duration("10min")
    #: HTTP timeout of one Prometheus query
    timeout: DurationField = Duration("5s")
    #: a gate that cannot be read (Prometheus down, no data, SQL error): "pause" a backfill
    #: until it can, or "ignore" it (a warning either way)
    on_unknown: Literal["pause", "ignore"] = "pause"


GATE_PRESETS: dict[str, dict[str, Any]] = {
    # p95 latency above twice its SLO for 10 minutes: roll back (the multi-window burn-rate
    # practice of SRE workbooks, reduced to one window a deploy can wait for)
    "latency": {
        "promql": "max(app:http_request_duration_seconds:p95_5m)",
        "for_": Duration("10min"),
        "action": "rollback",
    },
    # more than 2% of requests failing for 5 minutes: roll back
    "errors": {
        "promql": "max(app:http_requests:error_ratio_5m)",
        "threshold": 0.02,
        "for_": Duration("5min"),
        "action": "rollback",
    },
    # deadlocks rising in the database: pause (a backfill waits them out)
    "deadlocks": {
        "sql": "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        "delta": True,
        "threshold": 0,
        "for_": Duration("0s"),
        "action": "pause",
    },
}


class GateConfig(_Model):
    """``[[gate]]``: a metric that pauses, stops or rolls back a change when it goes bad."""

    name: str
    #: "latency" (needs slo), "errors" or "deadlocks": fills the keys not given
    preset: Literal["latency", "errors", "deadlocks"] | None = None
    promql: str | None = None
    sql: str | None = None
    threshold: float | None = None
    #: how the value is compared with the threshold: fires when ``value OP threshold``
    op: Literal[">", ">=", "<", "<="] = ">"
    #: compare the increase since the previous sample (a counter), not the value
    delta: bool = False
    for_: DurationField = Field(Duration("0s"), alias="for")
    action: Literal["pause", "abort", "rollback"] | None = None
    #: the latency SLO (preset "latency": fires above twice this)
    slo: DurationField | None = None
    envs: list[str] = Field(default_factory=list)
    during: list[Literal["backfill", "watch"]] = Field(
        default_factory=lambda: ["backfill", "watch"]  # type: ignore[arg-type]
    )

    @model_validator(mode="after")
    def _complete(self) -> GateConfig:
        given = self.model_fields_set
        for key, value in GATE_PRESETS.get(self.preset or "", {}).items():
            if key not in given and not (key in ("promql", "sql") and ({"promql", "sql"} & given)):
                setattr(self, key, value)
        if self.preset == "latency" and self.threshold is None:
            if self.slo is None:
                raise ValueError('preset "latency" needs slo (e.g. slo = "300ms")')
            self.threshold = 2 * self.slo.total_seconds()
        if (self.promql is None) == (self.sql is None):
            raise ValueError("give exactly one of promql and sql")
        if self.threshold is None:
            raise ValueError("give a threshold")
        if self.action is None:
            raise ValueError('give an action: "pause", "abort" or "rollback"')
        return self

    @property
    def for_seconds(self) -> float:
        return self.for_.total_seconds()

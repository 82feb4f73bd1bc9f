"""``[health]``: the thresholds a health check judges an environment by.

Contract: :class:`HealthConfig` is ``[health]`` with its ``[health.environments.NAME]``
overrides; :meth:`HealthConfig.thresholds` merges them into the
:class:`HealthThresholds` of one environment. Each model checks its own keys (a critical
level not below its warning, row-count levels in order); that an overridden environment
exists is checked when the file loads (:mod:`pgferry.config.loading`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pgferry.config.fields import Duration, DurationField, _Model


class HealthTableConfig(_Model):
    """``[health.tables."schema.table"]``: row-count thresholds of one table."""

    optimal: int | None = Field(None, ge=0)  # at or above: optimal
    degraded_below: int | None = Field(None, ge=0)  # below: degraded
    critical_below: int | None = Field(None, ge=0)  # below: critical
    estimate: bool = False  # pg_class.reltuples instead of an exact count(*)

    @model_validator(mode="after")
    def _ordered(self) -> HealthTableConfig:
        levels = [(k, getattr(self, k)) for k in ("critical_below", "degraded_below", "optimal")]
        given = [(k, v) for k, v in levels if v is not None]
        if not given:
            raise ValueError("give at least one of optimal, degraded_below, critical_below")
        for (lo, a), (hi, b) in zip(given, given[1:], strict=False):
            if a > b:
                raise ValueError(f"{lo} ({a}) must not be above {hi} ({b})")
        return self


class HealthThresholds(_Model):
    """``[health]`` (and ``[health.environments.NAME]``, which overrides what it sets)."""

    #: connecting and SELECT 1; past it the env is unreachable
    timeout: DurationField = Duration("3s")
    #: each query of a health run (exact counts too)
    statement_timeout: DurationField = Duration("2s")
    #: the service answers from its cache for this long
    cache_interval: DurationField = Duration("15s")
    latency_warn: DurationField = Duration("200ms")
    connections_warn: float = Field(90, ge=0, le=100)  # percent of max_connections
    connections_critical: float = Field(95, ge=0, le=100)
    long_transaction_warn: DurationField = Duration("5min")
    long_transaction_critical: DurationField = Duration("30min")
    idle_in_transaction_warn: DurationField = Duration("60s")
    idle_in_transaction_critical: DurationField = Duration("300s")
    blocked_warn: DurationField = Duration("30s")  # a session waiting on a lock longer than this
    wraparound_warn: int = Field(1_300_000_000, ge=0)  # transaction ID / multixact age
    wraparound_critical: int = Field(1_400_000_000, ge=0)
    sequence_warn: float = Field(85, ge=0, le=100)  # percent of the range used
    sequence_critical: float = Field(95, ge=0, le=100)
    slow_query_ms: float = Field(100, ge=0)  # pg_stat_statements mean time
    #: WAL a replication slot keeps from being removed (its consumer behind or gone), MB
    slot_wal_warn_mb: float = Field(1024, ge=0)
    slot_wal_critical_mb: float = Field(16384, ge=0)
    #: unset: ``[backup] max_age`` (the same figure ``backup list`` calls stale)
    backup_max_age: DurationField = Duration("26h")
    restore_test_max_age: DurationField = Duration("8d")
    sync_max_age: DurationField | None = None  # the last sync into this env; none: not judged
    tables: dict[str, HealthTableConfig] = Field(default_factory=dict)

    @field_validator(
        "connections_critical",
        "long_transaction_critical",
        "idle_in_transaction_critical",
        "wraparound_critical",
        "sequence_critical",
        "slot_wal_critical_mb",
    )
    @classmethod
    def _not_below_warn(cls, v: Any, info: ValidationInfo) -> Any:
        name = (info.field_name or "").replace("_critical", "_warn")
        warn = info.data.get(name)
        as_num = (lambda x: x.total_seconds()) if isinstance(v, timedelta) else float
        if warn is not None and as_num(v) < as_num(warn):
            shown = [f"{x:g}" if isinstance(x, float) else x for x in (v, warn)]
            raise ValueError(f"{shown[0]} is below {name} ({shown[1]})")
        return v

    def seconds(self, name: str) -> float:
        """A duration field in seconds."""
        value: timedelta = getattr(self, name)
        return value.total_seconds()


class HealthConfig(HealthThresholds):
    environments: dict[str, HealthThresholds] = Field(default_factory=dict)

    def thresholds(self, env: str) -> HealthThresholds:
        """The thresholds of ``env``: ``[health]`` with what its own table sets."""
        base = self.model_dump(exclude={"environments", "tables"})
        own = self.environments.get(env)
        tables = dict(self.tables)
        if own is not None:
            base.update(own.model_dump(include=own.model_fields_set - {"tables"}))
            tables.update(own.tables)
        return HealthThresholds.model_validate({**base, "tables": tables})

"""pgferry.toml and .env: environments and policies, as pydantic models.

Contract: :func:`load_config` reads the file, validates it and returns a
:class:`Config`; any problem raises :class:`~pgferry.errors.ConfigError` whose
one-line message names the key and the line. ``${VAR}`` references are *not*
resolved at load time, so ``env check`` can report every missing variable;
they are resolved by :meth:`Config.resolve` (process environment first, then
the ``.env`` file beside the config).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pgferry.errors import ConfigError

DEFAULT_CONFIG = "pgferry.toml"
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|sec|min|m|h|d)?\s*$")
_UNIT_SECONDS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    None: 1e-3,  # a bare number is milliseconds, as in PostgreSQL's settings
}


def parse_duration(value: str | int | float) -> timedelta:
    """Parse ``250ms``, ``5s``, ``2min``, ``1h``; a bare number is milliseconds (as PostgreSQL)."""
    if isinstance(value, int | float):
        return timedelta(milliseconds=value)
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration (examples: 250ms, 5s, 2min, 1h)")
    return timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])


def pg_duration(value: str | int | float | timedelta) -> str:
    """A duration as a PostgreSQL setting value in milliseconds (``'250ms'``)."""
    td = value if isinstance(value, timedelta) else parse_duration(value)
    return f"{int(td.total_seconds() * 1000)}ms"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Duration(timedelta):
    """A duration of the config, parsed once when it loads: a :class:`~datetime.timedelta`
    that keeps the text it was written as (``250ms``, ``5min``), which is what ``str()``
    and every message show, and what ``model_dump`` writes back."""

    text: str

    def __new__(cls, value: str | int | float | timedelta) -> Duration:
        if isinstance(value, Duration):
            return value
        td = value if isinstance(value, timedelta) else parse_duration(value)
        self = super().__new__(cls, seconds=td.total_seconds())
        self.text = f"{td.total_seconds():g}s" if isinstance(value, timedelta) else str(value)
        return self

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __reduce__(self) -> tuple[type[Duration], tuple[str]]:
        return (Duration, (self.text,))


def _duration(value: Any) -> Duration:
    if not isinstance(value, str | int | float | timedelta) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (examples: 250ms, 5s, 2min, 1h)")
    return Duration(value)


#: a duration field: written as text (or a bare number of milliseconds) in pgferry.toml
DurationField = Annotated[
    Duration, PlainValidator(_duration), PlainSerializer(str, return_type=str)
]


class EnvironmentConfig(_Model):
    """``[environments.NAME]``: where a database lives and how careful to be with it."""

    url: str | None = None
    protected: bool = False
    #: database name on the embedded server when ``url`` is empty (default: pgferry_<env>)
    database: str | None = None


class MigrateConfig(_Model):
    dir: str = "migrations"
    schema_: str = Field("public", alias="schema")
    history_table: str = "flyway_schema_history"
    lock_timeout: DurationField = Duration("250ms")
    statement_timeout: DurationField | None = None
    lock_retries: int = Field(8, ge=0, le=100)
    #: how long a second ``migrate up`` waits for the advisory lock before exit 3
    lock_wait: DurationField = Duration("60s")
    strict_sum: bool = False
    #: how `migrate undo` records an undo: "flyway" (a DELETE row, as Flyway's repair marks a
    #: removed migration: every Flyway edition reads it) or "flyway-teams" (an UNDO_SQL row,
    #: which only Flyway's paid editions read)
    undo_history: Literal["flyway", "flyway-teams"] = "flyway"
    #: SQL assertion files run by `migrate test` (relative to the config file)
    tests_dir: str = "tests"


class Blackout(_Model):
    """``[[blackout]]``: a window in which every write to ``envs`` is refused (migrate,
    sync, sync revert, backup restore; see :mod:`pgferry.policy`)."""

    #: TOML dates/datetimes (``from = 2026-12-24``) or the same as strings
    from_: datetime | date | str | None = Field(None, alias="from")
    to: datetime | date | str | None = None
    weekly: str | None = None
    timezone: str = "UTC"
    envs: list[str] = Field(default_factory=list)
    reason: str = ""


class LintConfig(_Model):
    """``[lint]``: turn rules off or change their severity."""

    disable: list[str] = Field(default_factory=list)
    severity: dict[str, Literal["error", "warning"]] = Field(default_factory=dict)
    #: opt-in rules (off by default), e.g. require-lock-timeout
    enable: list[str] = Field(default_factory=list)
    pg_version: int | None = None
    #: a table with more rows than this (catalog estimate) is big: a whole-table
    #: UPDATE/DELETE on it is an error, not a warning
    big_table_rows: int = Field(100_000, ge=0)


OnConflict = Literal["stop", "source", "target"]


class SyncTableConfig(_Model):
    key: list[str] | None = None
    strategy: Literal["checksum", "watermark", "full"] | None = None
    watermark: str | None = None
    where: str | None = None
    deletes: bool = True
    triggers: Literal["enable", "disable"] = "enable"
    #: a target row changed since the last sync that this sync would change: stop the
    #: table, let the source win, or keep the target's row (default: [sync] on_conflict)
    on_conflict: OnConflict | None = None
    #: leave rows only the target changed (the source did not) as they are, and list them
    keep_target_changes: bool | None = None


class MaskRuleConfig(_Model):
    """A ``[sync.mask]`` rule written as a table: ``{ rule = "email", targets = ["qa"] }``."""

    rule: str
    #: environments this rule masks into, whatever their protection; by default a rule
    #: applies where personal data leaves a protected environment for an unprotected one
    targets: list[str] = Field(default_factory=list)


class SyncConfig(_Model):
    schemas: list[str] = Field(default_factory=lambda: ["public"])
    tables: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    batch_size: int = Field(5000, ge=1)
    jobs: int = Field(2, ge=1, le=64)
    overlap: DurationField = Duration("5min")
    #: how long a batch/table keeps retrying transient errors (connection loss) before exit 3
    retry: DurationField = Duration("30s")
    table: dict[str, SyncTableConfig] = Field(default_factory=dict, alias="tables_config")
    mask: dict[str, str | MaskRuleConfig] = Field(default_factory=dict)
    #: load an empty target table after a TRUNCATE (COPY FREEZE: faster, but readers wait
    #: on ACCESS EXCLUSIVE until the table commits); default: true, false on protected targets
    block_readers: bool | None = None
    #: load an empty target table with its secondary indexes (and unique constraints) set
    #: aside, then build them after the load, --jobs at a time; needs block_readers; never
    #: on protected targets; default: true
    defer_indexes: bool | None = None
    #: save every row a sync updates or deletes in pgferry.before_images, for `sync revert`;
    #: default: true on protected targets
    keep_before_images: bool | None = None
    keep_before_images_for: DurationField = Duration("14d")
    #: how long a sync waits for another sync into the same target tables before exit 3
    lock_wait: DurationField = Duration("60s")
    #: conflicts: "stop" (default on protected targets), "source" (default elsewhere),
    #: "target"; per table in [sync.tables."s.t"], and --on-conflict on the command line
    on_conflict: OnConflict | None = None
    keep_target_changes: bool = False
    #: keep pgferry.sync_base (what each synced row was after the last sync), which is how
    #: conflicts are found; false: no conflict detection, and no storage for it
    track_conflicts: bool = True


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "kB": 10**3,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def parse_size(value: str | int) -> int:
    """``10MB``, ``512kB``, ``1GiB`` or a bare number of bytes, as bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a size (examples: 0, 512kB, 10MB, 1GiB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


class BackupKeepConfig(_Model):
    """``[backup.keep]``: how many daily, weekly and monthly backups ``backup prune`` keeps."""

    daily: int = Field(7, ge=0)
    weekly: int = Field(4, ge=0)
    monthly: int = Field(12, ge=0)
    #: never fewer complete backups than this (and never fewer than one)
    min_count: int = Field(1, ge=1)


class BackupConfig(_Model):
    """``[backup]``: where backups live, how long they are kept, what the health check expects."""

    dir: str = "backups"
    keep: BackupKeepConfig = Field(default_factory=BackupKeepConfig)
    #: encrypt every file with the key in $PGFERRY_BACKUP_KEY
    encrypt: bool = False
    #: the newest complete backup older than this is stale (health check)
    max_age: DurationField = Duration("26h")
    #: a complete backup smaller than this is suspicious (health check); bytes or "10MB"
    min_size: int | str = 0
    #: pg_dump/pg_restore parallel jobs (``--jobs`` wins)
    jobs: int = Field(2, ge=1, le=64)
    #: the zone whose calendar days, ISO weeks and months retention counts in
    timezone: str = "UTC"

    @field_validator("min_size")
    @classmethod
    def _check_size(cls, v: int | str) -> int | str:
        parse_size(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
        return v

    @property
    def min_size_bytes(self) -> int:
        return parse_size(self.min_size)


class EmbeddedConfig(_Model):
    """``[embedded]``: where the embedded server keeps its data (relative to the config)."""

    dir: str = ".pgferry"
    #: stop the server after this long without a client ("0": keep it running)
    idle_stop: DurationField = Duration("30min")


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


class ControlConfig(_Model):
    """``[control]``: the admin service's own database (tokens, runs, approvals, the job
    queue). Default: a database on the embedded server."""

    url: str | None = None
    #: database name on the embedded server when ``url`` is empty
    database: str = "pgferry_control"


class ServiceConfig(_Model):
    """``[service]``: ``pgferry serve`` and ``pgferry worker``."""

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    #: the environment ``/api/admin/*`` calls production (default: the only protected one)
    production: str | None = None
    #: /metrics needs a token (viewer); false: open, for a scraper on the same host
    metrics_auth: bool = True
    #: jobs one worker runs at once (different environments; one environment runs one at a time)
    concurrency: int = Field(4, ge=1, le=64)
    #: how often a worker says it is alive, and after how long without it its jobs are
    #: taken over (resumed or failed) by another worker
    heartbeat: DurationField = Duration("5s")
    stalled_after: DurationField = Duration("30s")
    #: transient failures (the database unreachable) a run retries, with exponential backoff
    #: and jitter, before it fails for good (and lands in the dead letters)
    retries: int = Field(3, ge=0, le=20)
    retry_max_wait: DurationField = Duration("30s")
    #: circuit breaker: after this many connection failures in a row to one environment,
    #: calls to it fail fast for ``breaker_cooldown``
    breaker_failures: int = Field(5, ge=1)
    breaker_cooldown: DurationField = Duration("30s")
    #: failed token checks from one address within ``auth_window`` before 429
    auth_failures: int = Field(10, ge=1)
    auth_window: DurationField = Duration("60s")
    #: how long a session (cookie) made from a token lasts
    session_ttl: DurationField = Duration("12h")
    #: tables a release syncs (default: ``[sync] tables``, else every table)
    release_tables: list[str] = Field(default_factory=list)


ScheduleOperation = Literal[
    "sync", "verify", "backup", "backup_verify", "backup_prune", "health", "migrate_up"
]


class ScheduleConfig(_Model):
    """``[[schedule]]``: an operation the worker runs on a cron schedule."""

    name: str
    #: five fields, as crontab: minute hour day-of-month month day-of-week (UTC); an
    #: optional sixth is seconds (``* * * * * */10``: every ten seconds)
    cron: str
    operation: ScheduleOperation
    #: the environment of a backup, backup_verify, backup_prune, health or migrate_up
    env: str | None = None
    #: sync and verify: from where, into where
    source: str | None = None
    target: str | None = None
    mode: Literal["incremental", "full"] = "incremental"
    tables: list[str] = Field(default_factory=list)
    #: backup: prune afterwards (``[backup.keep]``)
    prune: bool = False

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, v: str) -> str:
        from croniter import croniter  # type: ignore[import-untyped]

        if len(v.split()) not in (5, 6) or not croniter.is_valid(v):
            raise ValueError(
                f"{v!r} is not a cron expression of five fields "
                '(e.g. "*/15 * * * *"; a sixth is seconds)'
            )
        return v

    @model_validator(mode="after")
    def _needs(self) -> ScheduleConfig:
        if self.operation in ("sync", "verify"):
            if not (self.source and self.target):
                raise ValueError(f"{self.operation} needs source and target")
        elif not self.env:
            raise ValueError(f"{self.operation} needs env")
        return self

    @property
    def envs(self) -> list[str]:
        return [e for e in (self.env, self.source, self.target) if e]


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


class Config(_Model):
    environments: dict[str, EnvironmentConfig] = Field(default_factory=dict)
    migrate: MigrateConfig = Field(default_factory=MigrateConfig)
    blackout: list[Blackout] = Field(default_factory=list)
    lint: LintConfig = Field(default_factory=LintConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    embedded: EmbeddedConfig = Field(default_factory=EmbeddedConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    backup: BackupConfig = Field(default_factory=BackupConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    schedule: list[ScheduleConfig] = Field(default_factory=list)
    contract: ContractConfig = Field(default_factory=ContractConfig)
    backfill: BackfillConfig = Field(default_factory=BackfillConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    gate: list[GateConfig] = Field(default_factory=list)

    # not from the file
    path: Path | None = Field(None, exclude=True)
    text: str = Field("", exclude=True, repr=False)

    @model_validator(mode="after")
    def _backup_age_once(self) -> Config:
        # one figure for "stale": [health] backup_max_age follows [backup] max_age unless set
        if "backup_max_age" not in self.health.model_fields_set:
            self.health.backup_max_age = self.backup.max_age
        return self

    @property
    def root(self) -> Path:
        """The project directory: where the config file lives."""
        return self.path.parent if self.path else Path.cwd()

    @property
    def migrations_dir(self) -> Path:
        return (self.root / self.migrate.dir).resolve()

    @property
    def backup_dir(self) -> Path:
        """The backup root: ``[backup] dir``, relative to the config file."""
        return (self.root / self.backup.dir).resolve()

    @property
    def backfills_dir(self) -> Path:
        """``[backfill] dir``, relative to the config file."""
        return (self.root / self.backfill.dir).resolve()

    @property
    def tests_dir(self) -> Path:
        """``[migrate] tests_dir``: the SQL assertion files of `migrate test`."""
        return (self.root / self.migrate.tests_dir).resolve()

    @property
    def embedded_dir(self) -> Path:
        return (self.root / self.embedded.dir).resolve()

    def env(self, name: str) -> EnvironmentConfig:
        """The environment called ``name``, or ConfigError naming the known ones."""
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(
                f"unknown environment {name!r} (configured: {known})", env=name
            ) from None

    def dotenv(self) -> dict[str, str]:
        """Variables from the ``.env`` file beside the config (empty when absent)."""
        env_file = self.root / ".env"
        if not env_file.is_file():
            return {}
        return {k: v or "" for k, v in dotenv_values(env_file).items()}

    def variables(self) -> Iterator[tuple[str, str, int]]:
        """Every ``${VAR}`` the config uses: (variable, key path, line)."""
        table: list[str] = []
        for lineno, line in enumerate(self.text.splitlines(), 1):
            code = line.split("#", 1)[0].strip()
            if code.startswith("["):
                table = _table_path(code.strip("[] "))
                continue
            for m in VAR_RE.finditer(code):
                key = ".".join([*table, *_table_path(code.split("=", 1)[0].strip())])
                yield m.group(1), key, lineno

    def resolve(self, value: str, where: str) -> str:
        """Replace ``${VAR}`` in ``value``; a missing variable is a ConfigError naming it."""
        dotenv = None

        def sub(m: re.Match[str]) -> str:
            nonlocal dotenv
            name = m.group(1)
            if name in os.environ:
                return os.environ[name]
            if dotenv is None:
                dotenv = self.dotenv()
            if name in dotenv:
                return dotenv[name]
            line = line_of(self.text, where.split("."))
            at = f" (line {line})" if line else ""
            raise ConfigError(
                f"variable {name} used by {where}{at} is not set; "
                f"put it in the environment or in {self.root / '.env'}",
                variable=name,
            )

        return VAR_RE.sub(sub, value)


def _table_path(header: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', header)
    return [a or b or c for a, b, c in parts]


def line_of(text: str, loc: list[str] | tuple[Any, ...]) -> int | None:
    """The line in TOML ``text`` that defines the key path ``loc`` (best match), or None."""
    want = [str(p) for p in loc]
    best: tuple[int, int] | None = None  # (matched parts, line)
    table: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            table = _table_path(line.strip("[] "))
            path = table
        elif "=" in line and not line.startswith("#"):
            path = table + _table_path(line.split("=", 1)[0].strip())
        else:
            continue
        n = 0
        for a, b in zip(path, want, strict=False):
            if a != b:
                break
            n += 1
        if n == len(path) and n and (best is None or n > best[0]):
            best = (n, lineno)
    return best[1] if best else None


def _fold_tables(data: dict[str, Any]) -> dict[str, Any]:
    """``[sync.tables."s.t"]`` collides with ``sync.tables = [...]``; split them apart."""
    sync = data.get("sync")
    if isinstance(sync, dict) and isinstance(sync.get("tables"), dict):
        sync["tables_config"] = sync.pop("tables")
    return data


def load_config(path: str | Path | None = None, *, required: bool = True) -> Config:
    """Read and validate pgferry.toml (default: $PGFERRY_CONFIG or ./pgferry.toml)."""
    p = Path(path or os.environ.get("PGFERRY_CONFIG") or DEFAULT_CONFIG)
    if not p.is_file():
        if not required:
            return Config()
        raise ConfigError(f"no config file at {p}; run `pgferry init` to create one", path=str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {p}: {e}") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: malformed TOML: {e}") from e
    try:
        cfg = Config.model_validate(_fold_tables(data))
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err["loc"]]
        if loc[:2] == ["sync", "tables_config"]:  # shown as the user wrote it
            loc[1] = "tables"
        key = ".".join(str(x) for x in loc)
        line = line_of(text, loc)
        where = f"{p}:{line}" if line else str(p)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(f"{where}: {key}: {msg}", key=key, line=line) from None
    cfg.path = p.resolve()
    cfg.text = text
    _check_health(cfg, p, text)
    _check_gates(cfg, p, text)
    for name in cfg.environments:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ConfigError(
                f"{p}:{line_of(text, ['environments', name])}: environment name "
                f"{name!r} may hold only letters, digits, '-' and '_'"
            )
        if name == "revert":  # `pgferry sync revert RUN_ID` is a command
            raise ConfigError(
                f"{p}:{line_of(text, ['environments', name])}: 'revert' cannot "
                "name an environment (pgferry sync revert is a command); rename it"
            )
    check_blackouts(cfg)  # every window, for every command: a broken freeze is not silently off
    _check_service(cfg, p, text)
    return cfg


def _check_service(cfg: Config, p: Path, text: str) -> None:
    """``[service] production`` and every ``[[schedule]]`` name configured environments;
    schedule names are unique."""
    known = ", ".join(sorted(cfg.environments)) or "none"
    prod = cfg.service.production
    if prod is not None and prod not in cfg.environments:
        raise ConfigError(
            f"{p}:{line_of(text, ['service', 'production'])}: service.production:"
            f" {prod!r} is not a configured environment (configured: {known})",
            key="service.production",
        )
    seen: set[str] = set()
    for i, s in enumerate(cfg.schedule):
        where = f"{p}: schedule #{i + 1} ({s.name!r})"
        if s.name in seen:
            raise ConfigError(f"{where}: another schedule has this name", key=f"schedule.{i}")
        seen.add(s.name)
        for e in s.envs:
            if e not in cfg.environments:
                raise ConfigError(
                    f"{where}: {e!r} is not a configured environment (configured: {known})",
                    key=f"schedule.{i}",
                )


def check_blackouts(cfg: Config) -> None:
    """ConfigError naming the ``[[blackout]]`` entry and line for an entry that is wrong:
    one that cannot be read, or whose ``envs`` names an environment that is not configured
    (a typo there would switch the freeze off without a word). :func:`load_config` calls it,
    so every command stops on a broken window, not only those that write."""
    from pgferry import windows

    headers = [
        i
        for i, ln in enumerate(cfg.text.splitlines(), 1)
        if ln.strip().replace(" ", "") == "[[blackout]]"
    ]
    for i, b in enumerate(cfg.blackout):
        try:
            windows.validate(b)
            unknown = [e for e in b.envs if e not in cfg.environments]
            if unknown:
                known = ", ".join(sorted(cfg.environments)) or "none"
                raise ValueError(
                    f"envs names {', '.join(map(repr, unknown))}, which "
                    f"{'is' if len(unknown) == 1 else 'are'} not a configured "
                    f"environment (configured: {known}); fix the name, or the "
                    "window would never apply"
                )
        except ValueError as e:
            where = cfg.path or "pgferry.toml"
            line = f"{where}:{headers[i]}: " if i < len(headers) else ""
            raise ConfigError(f"{line}blackout #{i + 1}: {e}", key=f"blackout.{i}") from None


def _check_health(cfg: Config, p: Path, text: str) -> None:
    """What the models cannot see: env names exist, tables are named schema.table."""
    h = cfg.health
    for env in h.environments:
        if env not in cfg.environments:
            loc = ["health", "environments", env]
            known = ", ".join(sorted(cfg.environments)) or "none"
            raise ConfigError(
                f"{p}:{line_of(text, loc)}: {'.'.join(loc)}: {env!r} is not a "
                f"configured environment (configured: {known})",
                key=".".join(loc),
            )
    for prefix, tables in [(["health"], h.tables)] + [
        (["health", "environments", e], t.tables) for e, t in h.environments.items()
    ]:
        for name in tables:
            if name.count(".") != 1 or not all(name.split(".")):
                loc = [*prefix, "tables", name]
                raise ConfigError(
                    f"{p}:{line_of(text, loc)}: {'.'.join(loc)}: name the table "
                    f'as schema.table, e.g. [health.tables."public.{name}"]',
                    key=".".join(loc),
                )


def _check_gates(cfg: Config, p: Path, text: str) -> None:
    """``[[gate]]`` entries: unique names, configured environments, a Prometheus to ask."""
    starts = [
        n for n, ln in enumerate(text.splitlines(), 1) if ln.strip().replace(" ", "") == "[[gate]]"
    ]
    seen: set[str] = set()
    for i, g in enumerate(cfg.gate):
        where = f"{p}:{starts[i]}" if i < len(starts) else str(p)
        if g.name in seen:
            raise ConfigError(
                f"{where}: gate #{i + 1}: a second gate named {g.name!r}; "
                "give each [[gate]] its own name",
                key=f"gate.{i}.name",
            )
        seen.add(g.name)
        for env in g.envs:
            if env not in cfg.environments:
                known = ", ".join(sorted(cfg.environments)) or "none"
                raise ConfigError(
                    f"{where}: gate {g.name!r}: envs names {env!r}, which is not "
                    f"a configured environment (configured: {known})",
                    key=f"gate.{i}.envs",
                )
        if g.promql is not None and not cfg.gates.prometheus_url:
            raise ConfigError(
                f"{where}: gate {g.name!r} is a PromQL gate, but [gates] prometheus_url is not set",
                key=f"gate.{i}.promql",
            )

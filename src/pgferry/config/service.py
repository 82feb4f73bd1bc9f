"""The admin service's sections: ``[control]``, ``[service]`` and ``[[schedule]]``.

Contract: one pydantic model per section, each checking only its own keys (a schedule's
cron expression, the environments its operation needs); that those environments are
configured, and that schedule names are unique, is checked when the file loads
(:mod:`pgferry.config.loading`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pgferry.config.fields import Duration, DurationField, _Model


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

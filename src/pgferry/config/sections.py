"""The sections of pgferry.toml that say where data lives and how it moves.

Contract: one pydantic model per section, each checking only its own keys:
``[environments.NAME]``, ``[migrate]``, ``[[blackout]]``, ``[lint]``, ``[sync]`` (with
``[sync.tables."s.t"]`` and ``[sync.mask]``), ``[backup]`` and ``[embedded]``. What needs
more than one section (a blackout naming an environment) is checked when the file loads
(:mod:`pgferry.config.loading`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field, field_validator

from pgferry.config.fields import Duration, DurationField, _Model, parse_size, pg_kilobytes


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
    #: maintenance_work_mem of the sessions that build set-aside indexes back, in
    #: PostgreSQL's units ("256MB", binary: 1MB = 1024kB); default: up to 256MB for a
    #: btree build, the server's for others (pgferry.sync.rebuild._memory). Each of the
    #: --jobs builds may use this much (docs/configuration.md)
    maintenance_work_mem: str | None = None

    @field_validator("maintenance_work_mem")
    @classmethod
    def _check_memory(cls, v: str | None) -> str | None:
        if v is not None:
            pg_kilobytes(v)
        return v

    @property
    def rebuild_memory(self) -> str | None:
        """``maintenance_work_mem`` in kB as PostgreSQL reads it, or None (pgferry's default)."""
        if self.maintenance_work_mem is None:
            return None
        return f"{pg_kilobytes(self.maintenance_work_mem)}kB"


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

"""pgferry.toml as one document: the :class:`Config` of every section, and its ``${VAR}``.

Contract: :class:`Config` holds the sections, the path and text of the file it came from,
and the directories its keys name (relative to the file). ``${VAR}`` references are kept
as written: :meth:`Config.variables` lists every one with its key and line, and
:meth:`Config.resolve` replaces them (process environment first, then the ``.env`` file
beside the config), or raises :class:`~pgferry.errors.ConfigError` naming the variable.
:func:`line_of` finds the line of a key path in the TOML text, for messages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from pgferry.config.fields import _Model
from pgferry.config.health import HealthConfig
from pgferry.config.sections import (
    BackupConfig,
    Blackout,
    EmbeddedConfig,
    EnvironmentConfig,
    LintConfig,
    MigrateConfig,
    SyncConfig,
)
from pgferry.config.service import ControlConfig, ScheduleConfig, ServiceConfig
from pgferry.config.zdt import BackfillConfig, ContractConfig, GateConfig, GatesConfig
from pgferry.errors import ConfigError

VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
        # imported only where there is a .env: ~24 ms of CPU off every command without one
        # (25 verifies of a tiny table each way, 0.587 -> 0.563 s median)
        from dotenv import dotenv_values

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

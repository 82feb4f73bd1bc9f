"""pgferry.toml and .env: environments and policies, as pydantic models.

Contract: :func:`load_config` reads the file, validates it and returns a
:class:`Config`; any problem raises :class:`~pgferry.errors.ConfigError` whose
one-line message names the key and the line. ``${VAR}`` references are *not*
resolved at load time, so ``env check`` can report every missing variable;
they are resolved by :meth:`Config.resolve` (process environment first, then
the ``.env`` file beside the config).

- :mod:`~pgferry.config.fields`: the strict base model, durations and sizes.
- :mod:`~pgferry.config.sections`: environments, migrate, blackout, lint, sync, backup,
  embedded.
- :mod:`~pgferry.config.health`: the health thresholds.
- :mod:`~pgferry.config.service`: control, service, schedule (the admin service).
- :mod:`~pgferry.config.zdt`: contract, backfill, gates (zero-downtime changes).
- :mod:`~pgferry.config.document`: :class:`Config`, the whole file, and ``${VAR}``.
- :mod:`~pgferry.config.loading`: :func:`load_config` and the checks across sections.

The names below are what the rest of pgferry imports from here.
"""

from pgferry.config.document import Config
from pgferry.config.fields import parse_duration, pg_duration
from pgferry.config.health import HealthTableConfig, HealthThresholds
from pgferry.config.loading import check_blackouts, load_config
from pgferry.config.sections import (
    Blackout,
    EnvironmentConfig,
    LintConfig,
    SyncConfig,
    SyncTableConfig,
)
from pgferry.config.service import ScheduleConfig
from pgferry.config.zdt import GATE_PRESETS, GateConfig, GatesConfig

__all__ = [
    "GATE_PRESETS",
    "Blackout",
    "Config",
    "EnvironmentConfig",
    "GateConfig",
    "GatesConfig",
    "HealthTableConfig",
    "HealthThresholds",
    "LintConfig",
    "ScheduleConfig",
    "SyncConfig",
    "SyncTableConfig",
    "check_blackouts",
    "load_config",
    "parse_duration",
    "pg_duration",
]

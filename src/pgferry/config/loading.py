"""Reading pgferry.toml: :func:`load_config`.

Contract: :func:`load_config` reads the file, validates it and returns a
:class:`~pgferry.config.document.Config`; any problem raises
:class:`~pgferry.errors.ConfigError` whose one-line message names the key and the line.
Past what each section's model checks, it checks what needs more than one section:
environment names, and the environments that ``[health]``, ``[[gate]]``, ``[service]``,
``[[schedule]]`` and ``[[blackout]]`` name (:func:`check_blackouts`).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pgferry.config.document import Config, line_of
from pgferry.errors import ConfigError

DEFAULT_CONFIG = "pgferry.toml"


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

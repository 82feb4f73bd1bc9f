"""``pgferry lint`` as a service: what to lint, against which catalog, in which format.

Contract:
- :func:`run` takes a :class:`Request` and returns (output text, exit code):
  1 when an error-level finding remains, 0 otherwise. Bad input raises
  :class:`~pgferry.errors.BadInput` (2): unreadable files, unparsable SQL
  (``SqlParseError`` naming file:line and the parser's message), bad options.
- Targets (:mod:`pgferry.lint.targets`): PATHS (files, or directories scanned
  as migration directories), always in version order however they were named;
  else the pending migrations of ``--env``; else every versioned, template and
  repeatable file of the migrations directory (undo files only when named).
- Catalog: ``--env`` snapshots the target once (and writes it to ``--catalog
  FILE`` when given); ``--catalog FILE`` alone reads a snapshot.
- Import-light: the config is read with :mod:`tomllib` unless ``--env`` needs
  the full model, and psycopg is only imported when a database is read.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgferry.errors import BadInput, ConfigError
from pgferry.lint import parallel, report, targets
from pgferry.lint.engine import Linter, Settings
from pgferry.lint.model import BIG_TABLE_ROWS, Finding

FORMATS = ("text", "json", "sarif")


@dataclass
class Request:
    paths: list[str] = field(default_factory=list)
    env: str | None = None
    catalog: str | None = None
    fmt: str = "text"
    pg_version: int | None = None
    list_rules: bool = False
    config_path: str | None = None
    #: processes to lint on (None: every CPU this process may use; 1: no fork)
    jobs: int | None = None
    #: directory mode: lint the files the catalog's history says ran, too
    all_files: bool = False


@dataclass
class LightConfig:
    """The parts of pgferry.toml lint needs, read without pydantic."""

    root: Path
    migrate_dir: str = "migrations"
    lint: Settings = field(default_factory=Settings)

    @property
    def migrations_dir(self) -> Path:
        return (self.root / self.migrate_dir).resolve()


def _config_file(req: Request) -> Path:
    return Path(req.config_path or os.environ.get("PGFERRY_CONFIG") or "pgferry.toml")


#: the keys of :class:`pgferry.config.LintConfig` (a test holds them equal)
LINT_KEYS = frozenset({"disable", "enable", "severity", "pg_version", "big_table_rows"})


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def plain_lint(lint: Any) -> Settings | None:
    """``[lint]`` as :class:`Settings` when it is plainly what
    :class:`pgferry.config.LintConfig` accepts unchanged, else None (then the pydantic
    model decides, and says what is wrong). Importing pydantic would more than double a
    one-file lint's start-up, so this narrow check runs first; a property test holds that
    whatever it accepts the model accepts, with the same result."""
    if not isinstance(lint, dict) or not set(lint) <= LINT_KEYS:
        return None
    severity = lint.get("severity", {})
    pg_version = lint.get("pg_version")
    rows = lint.get("big_table_rows", BIG_TABLE_ROWS)
    if not (_strings(lint.get("disable", [])) and _strings(lint.get("enable", []))
            and isinstance(severity, dict)
            and all(v in ("error", "warning") for v in severity.values())
            and (pg_version is None or type(pg_version) is int)
            and type(rows) is int and rows >= 0):
        return None
    return Settings(list(lint.get("disable", [])), list(lint.get("enable", [])),
                    dict(severity), pg_version, rows)


def light_config(req: Request) -> LightConfig:
    """[lint] and [migrate].dir from pgferry.toml; anything odd defers to the full loader."""
    p = _config_file(req)
    if not p.is_file():
        if req.config_path:
            raise ConfigError(f"no config file at {p}; run `pgferry init` to create one")
        return LightConfig(Path.cwd())
    settings = None
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
        settings = plain_lint(data.get("lint", {}))
        mdir = data.get("migrate", {}).get("dir", "migrations")
        ok = settings is not None and isinstance(mdir, str)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        ok = False
    if not ok or settings is None:  # the real loader produces its precise message
        from pgferry.config import load_config

        cfg = load_config(p)
        return LightConfig(cfg.root, cfg.migrate.dir, Settings.from_config(cfg.lint))
    return LightConfig(p.resolve().parent, mdir, settings)


def _read(p: Path, content: dict[Path, bytes] | None = None) -> str:
    """A file's text (from ``content`` when selecting the files read it already)."""
    data = content.get(p) if content else None
    try:
        return (data if data is not None else p.read_bytes()).decode("utf-8").removeprefix(
            "\ufeff")
    except OSError as e:
        raise BadInput(f"cannot read {p}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{p}: not UTF-8 ({e.reason} at byte {e.start})") from None


def _env_mode(req: Request) -> tuple[Any, list[Path] | None, Settings]:
    """With --env: (snapshot with the history, pending files or None when PATHS or
    --all were given, settings)."""
    from pgferry.config import load_config
    from pgferry.lint.gate import snapshot_target
    from pgferry.lint.snapshot import history_of
    from pgferry.migrate.service import read_history
    from pgferry.pg.connect import resolve_env

    cfg = load_config(req.config_path)
    target = resolve_env(cfg, req.env or "")
    snap = snapshot_target(target)
    rows, _ = read_history(cfg, target)
    snap.history = history_of(rows)
    if req.catalog:
        try:
            Path(req.catalog).write_text(snap.to_json(), encoding="utf-8")
        except OSError as e:
            raise BadInput(f"cannot write the catalog snapshot to {req.catalog}: "
                           f"{e.strerror}") from None
    pending_files = None
    if not req.paths and not req.all_files:
        from pgferry.migrate.files import scan
        from pgferry.migrate.plan import pending

        pending_files = [s.file.path for s in pending(scan(cfg.migrations_dir), rows)]
    return snap, pending_files, Settings.from_config(cfg.lint)


def run(req: Request) -> tuple[str, int]:
    """Lint as requested; (output, exit code). See the module docstring."""
    from pgferry import __version__
    from pgferry.lint.rules import ALL_RULES

    if req.fmt not in FORMATS and not (req.list_rules and req.fmt == "markdown"):
        raise BadInput(f"--format {req.fmt!r}: choose text, json or sarif")
    if req.list_rules:
        return report.rule_list(ALL_RULES, req.fmt), 0
    snap = None
    if req.env:
        snap, pending_files, settings = _env_mode(req)
        lc = light_config(req)
    else:
        lc = light_config(req)
        settings, pending_files = lc.lint, None
        if req.catalog:
            from pgferry.lint.snapshot import load

            snap = load(Path(req.catalog))
    if pending_files is not None:
        chosen = targets.Targets(pending_files)
    else:
        chosen = targets.select(req.paths, lc.migrations_dir, snap.history if snap else None,
                                req.all_files)
    paths = chosen.paths
    linter = Linter(settings, catalog=snap, pg_version=req.pg_version,
                    applied={_show(p) for p in chosen.applied})
    findings = _lint(linter, paths, req.jobs, chosen.content)
    code = 1 if report.counts(findings)["errors"] else 0
    meta = {"pg_version": linter.pg_version, "env": req.env,
            "catalog": (snap.source or req.catalog) if snap else None}
    if req.fmt == "json":
        return report.as_json(findings, len(paths), meta, chosen.skipped), code
    if req.fmt == "sarif":
        return report.sarif(findings, ALL_RULES, __version__), code
    header = ""
    if snap is not None:
        header = (f"catalog: {snap.source or req.catalog} (PostgreSQL {snap.major}, "
                  f"{len(snap.tables)} tables)")
    if req.env and pending_files is not None and not paths:
        header = (header + "\n" if header else "") + f"no pending migrations for {req.env}"
    return report.text(findings, len(paths), header, chosen.skipped), code


def _lint(linter: Linter, paths: list[Path], jobs: int | None,
          content: dict[Path, bytes] | None = None) -> list[Finding]:
    """Serial for a few files; forked workers for many (same findings, same order)."""
    if len(paths) < parallel.MIN_FILES or jobs == 1:
        return linter.lint_files((_show(p), _read(p, content)) for p in paths)
    return parallel.lint_many(linter, len(paths),
                              lambda i: (_show(paths[i]), _read(paths[i], content)),
                              jobs or parallel.default_jobs())


def _show(p: Path, _cwd: list[str] = []) -> str:  # noqa: B006 - a one-slot cache
    """A path as the user would write it: relative to the cwd when inside it."""
    if not _cwd:
        _cwd.append(os.getcwd().rstrip("/") + "/")
    text = str(p)
    return text[len(_cwd[0]):] if text.startswith(_cwd[0]) else text

"""``pgferry lint`` as a service: what to lint, against which catalog, in which format.

Contract:
- :func:`lint` takes a :class:`Request` (and, with ``--env``, the :class:`EnvMode`
  the command layer read from the target: :mod:`pgferry.commands.lint`) and returns
  :class:`Linted`: the findings and what the report says about them; its
  ``exit_code`` is 1 when an error-level finding remains, 0 otherwise;
  :func:`render` writes it in the requested format. Bad input raises
  :class:`~pgferry.errors.BadInput` (2): unreadable files, unparsable SQL
  (``SqlParseError`` naming file:line and the parser's message), bad options.
- Targets (:mod:`pgferry.lint.targets`): PATHS (files, or directories scanned
  as migration directories), always in version order however they were named;
  else the pending migrations of ``--env``; else every versioned, template and
  repeatable file of the migrations directory (undo files only when named).
- Catalog: ``--env`` snapshots the target once (the command layer; it writes it
  to ``--catalog FILE`` when given); ``--catalog FILE`` alone reads a snapshot.
- Import-light: the config is read with :mod:`tomllib` unless ``--env`` needs
  the full model, and psycopg is never imported here.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgferry.errors import BadInput, ConfigError
from pgferry.lint import parallel, report, targets
from pgferry.lint.engine import Linter, Settings
from pgferry.lint.model import BIG_TABLE_ROWS, Finding

if TYPE_CHECKING:
    from pgferry.lint.snapshot import Snapshot

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
    if not (
        _strings(lint.get("disable", []))
        and _strings(lint.get("enable", []))
        and isinstance(severity, dict)
        and all(v in ("error", "warning") for v in severity.values())
        and (pg_version is None or type(pg_version) is int)
        and type(rows) is int
        and rows >= 0
    ):
        return None
    return Settings(
        list(lint.get("disable", [])),
        list(lint.get("enable", [])),
        dict(severity),
        pg_version,
        rows,
    )


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
        return (data if data is not None else p.read_bytes()).decode("utf-8").removeprefix("\ufeff")
    except OSError as e:
        raise BadInput(f"cannot read {p}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{p}: not UTF-8 ({e.reason} at byte {e.start})") from None


@dataclass
class EnvMode:
    """What ``--env`` read from the target: its catalog (with its migration history), the
    pending files (None when PATHS or --all were given) and the config's [lint] settings."""

    snapshot: Snapshot
    pending: list[Path] | None
    settings: Settings


@dataclass
class Linted:
    findings: list[Finding]
    files: int
    meta: dict[str, Any]
    skipped: int = 0
    header: str = ""
    #: --list-rules: the rule list instead of findings
    rule_list: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if report.counts(self.findings)["errors"] else 0


def check_format(req: Request) -> None:
    if req.fmt not in FORMATS and not (req.list_rules and req.fmt == "markdown"):
        raise BadInput(f"--format {req.fmt!r}: choose text, json or sarif")


def lint(req: Request, env: EnvMode | None = None) -> Linted:
    """Lint as requested (see the module docstring)."""
    check_format(req)
    if req.list_rules:
        return Linted([], 0, {}, rule_list=True)
    snap: Snapshot | None = None
    pending_files: list[Path] | None = None
    if env is not None:
        snap, pending_files, settings = env.snapshot, env.pending, env.settings
        lc = light_config(req)
    else:
        lc = light_config(req)
        settings = lc.lint
        if req.catalog:
            from pgferry.lint.snapshot import load

            snap = load(Path(req.catalog))
    if pending_files is not None:
        chosen = targets.Targets(pending_files)
    else:
        chosen = targets.select(
            req.paths, lc.migrations_dir, snap.history if snap else None, req.all_files
        )
    paths = chosen.paths
    linter = Linter(
        settings,
        catalog=snap,
        pg_version=req.pg_version,
        applied={_show(p) for p in chosen.applied},
    )
    findings = _lint(linter, paths, req.jobs, chosen.content)
    meta = {
        "pg_version": linter.pg_version,
        "env": req.env,
        "catalog": (snap.source or req.catalog) if snap else None,
    }
    header = ""
    if snap is not None:
        header = (
            f"catalog: {snap.source or req.catalog} (PostgreSQL {snap.major}, "
            f"{len(snap.tables)} tables)"
        )
    if req.env and pending_files is not None and not paths:
        header = (header + "\n" if header else "") + f"no pending migrations for {req.env}"
    return Linted(findings, len(paths), meta, chosen.skipped, header)


def render(linted: Linted, fmt: str) -> str:
    """The report of ``linted`` as text, json or sarif (markdown: the rule list)."""
    from pgferry import __version__
    from pgferry.lint.rules import ALL_RULES

    if linted.rule_list:
        return report.rule_list(ALL_RULES, fmt)
    if fmt == "json":
        return report.as_json(linted.findings, linted.files, linted.meta, linted.skipped)
    if fmt == "sarif":
        return report.sarif(linted.findings, ALL_RULES, __version__)
    return report.text(linted.findings, linted.files, linted.header, linted.skipped)


def _lint(
    linter: Linter, paths: list[Path], jobs: int | None, content: dict[Path, bytes] | None = None
) -> list[Finding]:
    """Serial for a few files; forked workers for many (same findings, same order)."""
    if len(paths) < parallel.MIN_FILES or jobs == 1:
        return linter.lint_files((_show(p), _read(p, content)) for p in paths)
    return parallel.lint_many(
        linter,
        len(paths),
        lambda i: (_show(paths[i]), _read(paths[i], content)),
        jobs or parallel.default_jobs(),
    )


def _show(p: Path, _cwd: list[str] = []) -> str:  # noqa: B006 - a one-slot cache
    """A path as the user would write it: relative to the cwd when inside it."""
    if not _cwd:
        _cwd.append(os.getcwd().rstrip("/") + "/")
    text = str(p)
    return text[len(_cwd[0]) :] if text.startswith(_cwd[0]) else text

"""``lint``: the zero-downtime migration linter.

Contract: :func:`lint` lints what :class:`LintOptions` names (PATHS; else the
pending migrations of ``env`` against its catalog; else the migrations
directory) and returns :class:`LintResult`: the findings, the report in the
format asked (:attr:`LintResult.output`) and ``exit_code`` (1 when an
error-level finding remains). With ``env`` it reads the target's catalog and
migration history here (:mod:`pgferry.lint` itself never reads a database).
Import-light: without ``env`` nothing loads pydantic or psycopg (the CLI's fast
path runs this in well under 150 ms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgferry import jsonio
from pgferry.errors import BadInput

if TYPE_CHECKING:
    from pgferry.lint.service import EnvMode, Linted, Request


@dataclass(frozen=True)
class LintOptions:
    paths: list[str] = field(default_factory=list)
    env: str | None = None
    #: catalog snapshot JSON: written with ``env``, read without
    catalog: str | None = None
    #: text, json or sarif (markdown with list_rules)
    fmt: str = "text"
    pg_version: int | None = None
    list_rules: bool = False
    config_path: str | None = None
    #: processes to lint many files on (None: one per CPU; 1: no worker processes)
    jobs: int | None = None
    #: directory mode: lint the files the catalog's history marks as applied too
    all_files: bool = False


@dataclass
class LintResult:
    linted: Linted
    #: the report in the format asked
    output: str

    @property
    def exit_code(self) -> int:
        return self.linted.exit_code

    def to_dict(self) -> dict[str, Any]:
        from pgferry.lint import service

        out: dict[str, Any] = jsonio.loads(service.render(self.linted, "json"))
        return out


def _request(opts: LintOptions) -> Request:
    from pgferry.lint.service import Request

    return Request(
        list(opts.paths),
        opts.env,
        opts.catalog,
        opts.fmt,
        opts.pg_version,
        opts.list_rules,
        opts.config_path,
        opts.jobs,
        opts.all_files,
    )


def _env_mode(opts: LintOptions) -> EnvMode:
    """With ``env``: the target's catalog and history, and its pending files."""
    from pgferry.commands import base
    from pgferry.config import load_config
    from pgferry.lint.engine import Settings
    from pgferry.lint.gate import snapshot_target
    from pgferry.lint.service import EnvMode
    from pgferry.lint.snapshot import history_of
    from pgferry.migrate.files import scan
    from pgferry.migrate.plan import pending
    from pgferry.migrate.service import read_history
    from pgferry.pg.connect import resolve_env

    cfg = load_config(opts.config_path)
    target = resolve_env(cfg, opts.env or base.pick_env(cfg, None))
    snap = snapshot_target(target)
    rows, _ = read_history(cfg, target)
    snap.history = history_of(rows)
    if opts.catalog:
        try:
            Path(opts.catalog).write_text(snap.to_json(), encoding="utf-8")
        except OSError as e:
            raise BadInput(
                f"cannot write the catalog snapshot to {opts.catalog}: {e.strerror}"
            ) from None
    pending_files = None
    if not opts.paths and not opts.all_files:
        pending_files = [s.file.path for s in pending(scan(cfg.migrations_dir), rows)]
    return EnvMode(snap, pending_files, Settings.from_config(cfg.lint))


def lint(opts: LintOptions) -> LintResult:
    """Lint as :class:`LintOptions` says (see the module docstring)."""
    from pgferry.lint import service

    req = _request(opts)
    service.check_format(req)
    env = _env_mode(opts) if opts.env and not opts.list_rules else None
    linted = service.lint(req, env)
    return LintResult(linted, service.render(linted, opts.fmt))

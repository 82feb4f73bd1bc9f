"""Migration templates: ``migrate new`` writes them, ``migrate number`` gives them versions.

Contract:

- :func:`new` writes ``VXXX__<desc>.sql`` (and with ``undo`` also
  ``UXXX__<desc>.sql``) with a header comment, then rewrites ``pgferry.sum``.
  A developer on a branch never picks a number, so two branches never collide
  on one; they collide on ``pgferry.sum`` instead, which git reports.
- :func:`plan_numbering` is pure: given the migration set and the highest
  applied version anywhere pgferry could look, the renames to make. It uses
  :func:`pgferry.migrate.plan.template_versions`, so ``migrate up`` on a dev
  database records a template under the very number ``migrate number`` later
  gives it. An ``UXXX`` file follows the ``VXXX`` file of the same description.
- :func:`env_versions` asks every configured environment for its current
  version (:func:`pgferry.migrate.plan.template_base`: rows of templates
  applied there do not count); one that cannot be reached is reported and
  skipped.
- :func:`apply_renames` renames all files or none (targets are checked first)
  and rewrites ``pgferry.sum``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgferry.config import Config
from pgferry.errors import BadInput, PgferryError
from pgferry.migrate import files, history
from pgferry.migrate.files import MigrationSet, Version
from pgferry.migrate.plan import (
    applied_template_versions,
    numbered_script,
    template_base,
    template_versions,
)

_DESC_RE = re.compile(r"[^A-Za-z0-9]+")

V_HEADER = """\
-- Migration: {desc}
-- Created by `pgferry migrate new` on {today}. This is a template (VXXX): write your
-- SQL below; `pgferry migrate number` gives it a version before you merge.
--
-- What: <what this changes, in one sentence>
-- Why:  <the ticket or reason>
-- Undo: {undo_hint}
--
-- Zero-downtime checklist (`pgferry lint` checks it; see docs/lint.md):
--   * new index on an existing table: CREATE INDEX CONCURRENTLY, alone in its file
--   * new foreign key or CHECK on an existing table: ADD ... NOT VALID here,
--     ALTER TABLE ... VALIDATE CONSTRAINT in the next migration
--   * text, not varchar(n); timestamptz, not timestamp; bigint identity keys
--   * every file runs with lock_timeout from pgferry.toml and is retried on lock timeout

"""

U_HEADER = """\
-- Undo of: {desc} ({vpath})
-- Run by `pgferry migrate undo`; it must leave the schema as it was before the migration.

"""


def slug(description: str) -> str:
    """``"Add leads: territory index"`` → ``add_leads_territory_index``; BadInput when empty."""
    s = _DESC_RE.sub("_", description.strip()).strip("_").lower()
    if not s:
        raise BadInput(f"description {description!r} needs at least one letter or digit")
    if len(s) > 150:
        raise BadInput(f"description is {len(s)} characters; keep it under 150")
    return s


@dataclass
class Rename:
    """One file ``migrate number`` renames."""

    old: Path
    new: Path
    version: Version

    def to_dict(self) -> dict[str, str]:
        return {"from": self.old.name, "to": self.new.name, "version": str(self.version)}


def new(directory: Path, description: str, *, undo: bool = False, today: str = "") -> list[Path]:
    """Write the template file(s) for ``description``; returns the paths written."""
    if not directory.is_dir():
        raise BadInput(f"migrations directory {directory} does not exist; run `pgferry init`")
    s = slug(description)
    ms = files.scan(directory)
    vpath = directory / f"V{files.TEMPLATE_VERSION}__{s}.sql"
    upath = directory / f"U{files.TEMPLATE_VERSION}__{s}.sql"
    desc = s.replace("_", " ")
    for p in (vpath, upath) if undo else (vpath,):
        if p.exists():
            raise BadInput(f"{p.name} already exists; pick another description")
    if desc in {t.description for t in ms.templates}:
        raise BadInput(
            f"a template with description {desc!r} exists already; pick another description"
        )
    hint = (
        f"{upath.name} (run by `pgferry migrate undo`)"
        if undo
        else "<how to reverse it; `pgferry migrate new --undo` adds an UXXX file>"
    )
    written = [vpath]
    vpath.write_text(
        V_HEADER.format(desc=desc, today=today or "today", undo_hint=hint), encoding="utf-8"
    )
    if undo:
        upath.write_text(U_HEADER.format(desc=desc, vpath=vpath.name), encoding="utf-8")
        written.append(upath)
    files.write_sum(files.scan(directory))
    return written


def plan_numbering(
    ms: MigrationSet, applied_max: Version | None, keep: dict[str, Version] | None = None
) -> list[Rename]:
    """The renames that number every template (pure). Undo templates follow their V file;
    a template applied somewhere keeps the number it was recorded under (``keep``)."""
    numbers = template_versions(ms, applied_max, keep)
    out: list[Rename] = []
    for t in sorted(ms.templates, key=lambda m: m.script):
        v = numbers[t.script]
        out.append(Rename(t.path, t.path.with_name(numbered_script(t, v)), v))
        u = ms.undo_templates.get(t.description)
        if u is not None:
            out.append(Rename(u.path, u.path.with_name(numbered_script(u, v)), v))
    return out


def orphan_undo_templates(ms: MigrationSet) -> list[str]:
    """``UXXX`` files without a ``VXXX`` file of the same description (left as they are)."""
    descs = {t.description for t in ms.templates}
    return sorted(u.script for d, u in ms.undo_templates.items() if d not in descs)


@dataclass
class EnvVersion:
    """An environment's numbering facts: its version and the templates applied there."""

    env: str
    version: Version | None = None
    error: str | None = None
    templates: dict[str, Version] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "version": str(self.version) if self.version else None,
            "error": self.error,
            "applied_templates": {s: str(v) for s, v in self.templates.items()},
        }


def merged_keep(envs: list[EnvVersion]) -> dict[str, Version]:
    """Templates applied under the same number everywhere they were applied (they keep it)."""
    keep: dict[str, Version] = {}
    clash: set[str] = set()
    for e in envs:
        for script, v in e.templates.items():
            if keep.setdefault(script, v) != v:
                clash.add(script)
    return {s: v for s, v in keep.items() if s not in clash}


def env_versions(cfg: Config, ms: MigrationSet) -> list[EnvVersion]:
    """The current version of every configured environment; unreachable ones carry ``error``."""
    from pgferry.pg.connect import connect, resolve_env

    out: list[EnvVersion] = []
    for name in sorted(cfg.environments):
        try:
            target = resolve_env(cfg, name)
            with connect(target.dsn, autocommit=True, retry_for=3) as conn:
                rows = history.read(conn, cfg.migrate.schema_, cfg.migrate.history_table)
            out.append(
                EnvVersion(
                    name, template_base(ms, rows), templates=applied_template_versions(ms, rows)
                )
            )
        except PgferryError as e:
            out.append(EnvVersion(name, error=e.message))
        except Exception as e:  # noqa: BLE001 - e.g. the embedded server cannot start: a warning
            out.append(EnvVersion(name, error=f"{type(e).__name__}: {e}"))
    return out


def apply_renames(ms: MigrationSet, renames: list[Rename]) -> None:
    """Rename every file (all or nothing: targets are checked first), rewrite pgferry.sum."""
    clash = [r.new.name for r in renames if r.new.exists()]
    if clash:
        raise BadInput(
            f"cannot number templates: {', '.join(clash)} exists already; nothing was renamed"
        )
    done: list[Rename] = []
    try:
        for r in renames:
            r.old.rename(r.new)
            done.append(r)
    except OSError as e:
        for r in reversed(done):
            r.new.rename(r.old)
        raise BadInput(f"cannot rename {r.old.name}: {e.strerror}; nothing was renamed") from None
    files.write_sum(files.scan(ms.directory))

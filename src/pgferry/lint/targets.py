"""Which files ``pgferry lint`` lints, in which order.

Contract (pure apart from listing directories):
- :func:`run_order` sorts files the way the runner would meet them, whatever
  order they were named in (a shell glob puts ``V10`` before ``V2``): versioned
  files by version, then ``VXXX`` templates, repeatables, undo files, and last
  any other ``.sql`` file by path. A file named twice is linted once.
- :func:`select` expands PATHS (files, or directories read as migration
  directories, undo files included; no PATHS: the migrations directory without
  undo files) into that order. In directory mode, files the catalog's history
  says ran are skipped, or with ``all_files`` linted and marked applied; a file
  named on its own is always linted (marked applied when it ran).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pgferry.errors import BadInput

if TYPE_CHECKING:
    from pgferry.lint.snapshot import History
    from pgferry.migrate.files import MigrationFile


@dataclass
class Targets:
    """The files to lint in run order, which of them already ran, how many were skipped."""

    paths: list[Path]
    applied: set[Path] = field(default_factory=set)
    skipped: int = 0


def files_of_dir(d: Path, include_undo: bool) -> list[Path]:
    """A migration directory's files in run order (undo files only when asked)."""
    from pgferry.migrate.files import scan

    ms = scan(d)
    files = [*ms.versioned, *ms.templates, *ms.repeatable]
    if include_undo:
        files += sorted(ms.undo.values(), key=lambda m: m.sort_key)
    out = [m.path for m in files]
    out += sorted(p for p in ms.ignored)  # *.sql that are not migrations: still SQL
    return out


def migration_of(path: Path) -> MigrationFile | None:
    """The migration a file name describes; None for other SQL (or an odd version)."""
    from pgferry.migrate.files import parse_name

    try:
        return parse_name(path)
    except BadInput:
        return None


def _order_key(path: Path) -> tuple[int, tuple[int, ...], str, str]:
    m = migration_of(path)
    if m is None:
        return (4, (), "", str(path))
    if m.is_template:
        return (1, (), m.script, str(path))
    parts = m.version.parts if m.version is not None else ()
    group = {"V": 0, "R": 2, "U": 3}[m.kind]
    return (group, parts, m.description, str(path))


def run_order(paths: list[Path]) -> list[Path]:
    """``paths`` in run order, each file once (see the module docstring)."""
    seen: dict[Path, Path] = {}
    for p in paths:
        seen.setdefault(p.resolve(), p)
    return sorted(seen.values(), key=_order_key)


def select(raw_paths: list[str], default_dir: Path, history: History | None = None,
           all_files: bool = False) -> Targets:
    """PATHS as given on the command line (see the module docstring)."""
    named: list[Path] = []
    listed: list[Path] = []  # found in a directory
    if not raw_paths:
        listed = files_of_dir(default_dir, include_undo=False)
    for raw in raw_paths:
        p = Path(raw)
        if p.is_dir():
            listed += files_of_dir(p, include_undo=True)
        elif p.is_file():
            named.append(p)
        else:
            raise BadInput(f"{raw}: no such file or directory")
    out = Targets(run_order([*named, *listed]))
    if history is None:
        return out
    by_name = {p.resolve() for p in named}
    keep: list[Path] = []
    for p in out.paths:
        m = migration_of(p)
        if m is None or not history.ran(m):
            keep.append(p)
        elif all_files or p.resolve() in by_name:
            keep.append(p)
            out.applied.add(p)
        else:
            out.skipped += 1
    out.paths = keep
    return out

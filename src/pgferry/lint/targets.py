"""Which files ``pgferry lint`` lints, in which order.

Contract (pure apart from listing directories):
- :func:`run_order` sorts files the way the runner would meet them, whatever
  order they were named in (a shell glob puts ``V10`` before ``V2``): versioned
  files by version, then ``VXXX`` templates, repeatables, undo files, and last
  any other ``.sql`` file by path. A file named twice is linted once.
- :func:`collect` expands PATHS (files, or directories read as migration
  directories, undo files included) into that order; :func:`files_of_dir` is
  one directory without undo files (the default target).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pgferry.errors import BadInput

if TYPE_CHECKING:
    from pgferry.migrate.files import MigrationFile


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


def collect(raw_paths: list[str]) -> list[Path]:
    """PATHS as given on the command line, expanded and in run order."""
    out: list[Path] = []
    for raw in raw_paths:
        p = Path(raw)
        if p.is_dir():
            out += files_of_dir(p, include_undo=True)
        elif p.is_file():
            out.append(p)
        else:
            raise BadInput(f"{raw}: no such file or directory")
    return run_order(out)

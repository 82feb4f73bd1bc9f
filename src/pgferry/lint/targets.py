"""Which files ``pgferry lint`` lints, in which order.

Contract (pure apart from listing directories):
- Files are sorted the way the runner would meet them, whatever
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

import os
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
    #: the bytes of the files selecting them read already (migration files), by path
    content: dict[Path, bytes] = field(default_factory=dict)


#: a file to lint and the migration its name describes (None: other SQL)
Entry = tuple[Path, "MigrationFile | None"]


def _listed(d: Path, include_undo: bool) -> list[Entry]:
    """A migration directory's files in run order (undo files only when asked)."""
    from pgferry.migrate.files import scan

    ms = scan(d)
    files = [*ms.versioned, *ms.templates, *ms.repeatable]
    if include_undo:
        files += sorted(ms.undo.values(), key=lambda m: m.sort_key)
    out: list[Entry] = [(m.path, m) for m in files]
    out += [(p, None) for p in sorted(ms.ignored)]  # *.sql that are not migrations: still SQL
    return out


def migration_of(path: Path) -> MigrationFile | None:
    """The migration a file name describes; None for other SQL (or an odd version)."""
    from pgferry.migrate.files import parse_name

    try:
        mf = parse_name(path)
    except BadInput:
        return None
    return mf.read() if mf is not None else None


def _order_key(entry: Entry) -> tuple[int, tuple[int, ...], str, str]:
    path, m = entry
    if m is None:
        return (4, (), "", str(path))
    if m.is_template:
        return (1, (), m.script, str(path))
    parts = m.version.parts if m.version is not None else ()
    group = {"V": 0, "R": 2, "U": 3}[m.kind]
    return (group, parts, m.description, str(path))


def _key(p: Path, cwd: str) -> str:
    """The same file however it was named (``a/../a/V1.sql``, relative or absolute),
    without a system call per file."""
    return os.path.normpath(os.path.join(cwd, p))


def _run_order(entries: list[Entry], cwd: str) -> list[Entry]:
    """``entries`` in run order, each file once (see the module docstring)."""
    seen: dict[str, Entry] = {}
    for e in entries:
        seen.setdefault(_key(e[0], cwd), e)
    return sorted(seen.values(), key=_order_key)


def select(
    raw_paths: list[str], default_dir: Path, history: History | None = None, all_files: bool = False
) -> Targets:
    """PATHS as given on the command line (see the module docstring)."""
    named: list[Entry] = []
    listed: list[Entry] = []  # found in a directory
    if not raw_paths:
        listed = _listed(default_dir, include_undo=False)
    for raw in raw_paths:
        p = Path(raw)
        if p.is_dir():
            listed += _listed(p, include_undo=True)
        elif p.is_file():
            named.append((p, migration_of(p)))
        else:
            raise BadInput(f"{raw}: no such file or directory")
    cwd = os.getcwd()
    # one directory alone is in run order already
    entries = listed if not named and len(raw_paths) <= 1 else _run_order([*named, *listed], cwd)
    out = Targets(
        [p for p, _ in entries],
        content={p: m.content for p, m in entries if m is not None and m.content},
    )
    if history is None:
        return out
    by_name = {_key(p, cwd) for p, _ in named}
    keep: list[Path] = []
    for p, m in entries:
        if m is None or not history.ran(m):
            keep.append(p)
        elif all_files or _key(p, cwd) in by_name:
            keep.append(p)
            out.applied.add(p)
        else:
            out.skipped += 1
    out.paths = keep
    return out

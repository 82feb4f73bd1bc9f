"""Migration files: Flyway naming, version order, Flyway's checksum, templates, pgferry.sum.

Contract (pure apart from reading the directory and its files):
- ``V<version>__<desc>.sql`` (versioned), ``U<version>__<desc>.sql`` (undo),
  ``R__<desc>.sql`` (repeatable), and templates ``VXXX__<desc>.sql`` /
  ``UXXX__<desc>.sql`` that ``migrate number`` turns into real versions.
- Versions split on ``.`` or ``_`` and compare numerically (``1.10 > 1.9``,
  ``1 == 1.0``); two files with the same version are a :class:`BadInput`.
- :func:`flyway_checksum` is Flyway's: CRC32 over each line's UTF-8 bytes,
  line terminators and a leading BOM excluded, as a signed 32-bit int.
- Reading is explicit: :func:`scan` reads every migration file it lists
  (:meth:`MigrationFile.read`); :func:`parse_name` only names one. A file's text and
  checksum are computed from the bytes read, so the planners do no I/O.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from dataclasses import dataclass, field
from functools import cached_property, total_ordering
from pathlib import Path
from typing import Literal

from pgferry.errors import BadInput

TEMPLATE_VERSION = "XXX"
SUM_FILE = "pgferry.sum"
NAME_RE = re.compile(r"^(?P<kind>[VUR])(?P<version>[0-9][0-9._]*|XXX)?__(?P<desc>.+)\.sql$")
_LINE_SPLIT = re.compile(r"\r\n|\r|\n")
_PART_SPLIT = re.compile(r"[._]")


@total_ordering
@dataclass(frozen=True)
class Version:
    """A Flyway version: numeric parts, trailing zeros ignored for comparison."""

    text: str
    #: the numbers compared, trailing zeros dropped (computed once: versions are compared
    #: and hashed thousands of times in a long history)
    parts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = [int(p) for p in _PART_SPLIT.split(self.text) if p != ""]
        while len(raw) > 1 and raw[-1] == 0:
            raw.pop()
        object.__setattr__(self, "parts", tuple(raw))

    @classmethod
    def parse(cls, text: str) -> Version:
        if not re.fullmatch(r"[0-9]+([._][0-9]+)*", text):
            raise BadInput(f"{text!r} is not a migration version (digits split by '.' or '_')")
        return cls(text.replace("_", "."))

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.parts == other.parts

    def __lt__(self, other: Version) -> bool:
        return self.parts < other.parts

    def __hash__(self) -> int:
        return hash(self.parts)

    def next(self) -> Version:
        """The next free major version after this one (``1.3`` → ``2``)."""
        return Version(str(self.parts[0] + 1))


def flyway_checksum(data: bytes) -> int:
    """Flyway's checksum of a script: CRC32 over its lines without terminators or BOM."""
    text = data.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _LINE_SPLIT.split(text)
    if lines and lines[-1] == "":  # Java's readLine() yields no line after a final newline
        lines.pop()
    crc = 0
    for line in lines:
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= (1 << 31) else crc


#: versioned, undo or repeatable
MigrationKind = Literal["V", "U", "R"]


@dataclass
class MigrationFile:
    path: Path
    kind: MigrationKind
    version: Version | None  # None for repeatables and templates
    description: str
    is_template: bool = False

    @property
    def script(self) -> str:
        return self.path.name

    #: the file's bytes once :meth:`read` ran (:func:`scan` reads every file it lists)
    content: bytes | None = field(default=None, repr=False, compare=False)

    def read(self) -> MigrationFile:
        """Read the file (once): the one I/O of a migration file. Its text and checksum
        are then plain data, so the planners that compare them do no I/O."""
        if self.content is None:
            try:
                self.content = self.path.read_bytes()
            except OSError as e:
                raise BadInput(f"cannot read {self.path}: {e.strerror}") from None
        return self

    @property
    def data(self) -> bytes:
        if self.content is None:
            raise RuntimeError(f"{self.script} has not been read (MigrationFile.read)")
        return self.content

    @cached_property
    def sql(self) -> str:
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadInput(f"{self.path}: not UTF-8 ({e.reason} at byte {e.start})") from None
        return text.removeprefix("\ufeff")

    @cached_property
    def checksum(self) -> int:
        self.sql  # noqa: B018 - raises a clear error for non-UTF-8 files
        return flyway_checksum(self.data)

    @property
    def sort_key(self) -> tuple[int, tuple[int, ...], str]:
        if self.is_template:
            return (1, (), self.script)
        return (0, self.version.parts if self.version else (), self.description)


@dataclass
class MigrationSet:
    """Everything in a migrations directory, sorted and checked for duplicates."""

    directory: Path
    versioned: list[MigrationFile] = field(default_factory=list)
    undo: dict[Version, MigrationFile] = field(default_factory=dict)
    repeatable: list[MigrationFile] = field(default_factory=list)
    templates: list[MigrationFile] = field(default_factory=list)
    undo_templates: dict[str, MigrationFile] = field(default_factory=dict)
    ignored: list[Path] = field(default_factory=list)

    @property
    def highest(self) -> Version | None:
        return max((m.version for m in self.versioned if m.version), default=None)

    def by_version(self) -> dict[Version, MigrationFile]:
        return {m.version: m for m in self.versioned if m.version is not None}


def parse_name(path: Path) -> MigrationFile | None:
    """The migration a file name describes, or None when it is not one."""
    m = NAME_RE.match(path.name)
    if not m:
        return None
    kind: MigrationKind = "R" if m["kind"] == "R" else "U" if m["kind"] == "U" else "V"
    vtext, desc = m["version"], m["desc"].replace("_", " ")
    if kind == "R":
        if vtext:
            return None
        return MigrationFile(path, "R", None, desc)
    if not vtext:
        return None
    if vtext == TEMPLATE_VERSION:
        return MigrationFile(path, kind, None, desc, is_template=True)
    return MigrationFile(path, kind, Version.parse(vtext), desc)


def scan(directory: Path) -> MigrationSet:
    """Read ``directory`` (not recursive) and every migration file in it; BadInput on
    duplicate versions or a file that cannot be read."""
    if not directory.is_dir():
        raise BadInput(f"migrations directory {directory} does not exist; run `pgferry init`")
    ms = MigrationSet(directory)
    seen: dict[tuple[str, Version], Path] = {}
    # scandir: file type from the directory entry, and names sort faster than Paths
    with os.scandir(directory) as it:
        names = sorted(
            e.name
            for e in it
            if e.is_file() and e.name.endswith(".sql") and not e.name.startswith(".")
        )
    for name in names:
        path = directory / name
        mf = parse_name(path) if path.suffix == ".sql" else None
        if mf is None:
            if path.suffix == ".sql":
                ms.ignored.append(path)
            continue
        mf.read()
        if mf.is_template:
            if mf.kind == "V":
                ms.templates.append(mf)
            else:
                ms.undo_templates[mf.description] = mf
            continue
        if mf.version is not None:
            key = (mf.kind, mf.version)
            if key in seen:
                raise BadInput(
                    f"duplicate migration version {mf.version}: {seen[key].name} and {path.name}"
                )
            seen[key] = path
        if mf.kind == "V":
            ms.versioned.append(mf)
        elif mf.kind == "U":
            assert mf.version is not None
            ms.undo[mf.version] = mf
        else:
            ms.repeatable.append(mf)
    ms.versioned.sort(key=lambda m: m.sort_key)
    ms.repeatable.sort(key=lambda m: m.description)
    ms.templates.sort(key=lambda m: m.script)
    return ms


# -- pgferry.sum --------------------------------------------------------------

SUM_HEADER = "h1:"


def sum_text(ms: MigrationSet) -> str:
    """The content of pgferry.sum: a total hash on line 1, then one line per file.

    Two branches that each add a migration both rewrite line 1, so git reports a
    conflict instead of merging two migrations that were never run together.
    """
    files = sorted(
        [
            *ms.versioned,
            *ms.undo.values(),
            *ms.repeatable,
            *ms.templates,
            *ms.undo_templates.values(),
        ],
        key=lambda m: m.script,
    )
    lines = [f"{m.script} h1:{hashlib.sha256(m.data).hexdigest()}" for m in files]
    total = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return "\n".join([f"{SUM_HEADER}{total}", *lines]) + "\n"


def sum_state(ms: MigrationSet) -> str:
    """``"ok"``, ``"stale"`` or ``"missing"`` for the directory's pgferry.sum."""
    path = ms.directory / SUM_FILE
    if not path.exists():
        return "missing"
    return "ok" if path.read_text(encoding="utf-8") == sum_text(ms) else "stale"


def write_sum(ms: MigrationSet) -> Path:
    path = ms.directory / SUM_FILE
    path.write_text(sum_text(ms), encoding="utf-8")
    return path

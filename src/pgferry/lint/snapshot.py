"""The catalog snapshot catalog-aware lint reads: table sizes, columns, checks, functions.

Contract:
- :func:`take` reads one database's catalog once (every schema except the
  system ones and ``pgferry``) through a connection the caller opened, with the one
  catalog reader (:func:`pgferry.pg.catalog.read`, its lint view), and
  :func:`from_catalog` turns that into a :class:`Snapshot` of plain data. Nothing
  else in lint talks to a server.
- :meth:`Snapshot.to_json` / :func:`load` write and read it as JSON, so CI can
  lint against production's shape without production credentials
  (``pgferry lint --catalog FILE``).
- :attr:`Snapshot.history` is what the target's migration history says ran
  (:func:`history_of` folds the rows as ``migrate`` does); None in a snapshot
  written before pgferry recorded it, or for a bare database. With it,
  directory-mode lint skips the applied files and does not count the tables
  they created as new.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgferry import jsonio
from pgferry.errors import BadInput
from pgferry.pg.catalog_types import Check as Check
from pgferry.pg.catalog_types import Index as Index

if TYPE_CHECKING:
    from pgferry.migrate.files import MigrationFile
    from pgferry.pg.catalog_types import Catalog

FORMAT = "pgferry-lint-catalog/1"


@dataclass
class TableInfo:
    name: str  # "schema.table"
    rows: int = 0  # reltuples estimate; -1 when never vacuumed or analyzed (PostgreSQL 14+)
    total_bytes: int = 0  # heap + indexes + toast
    heap_bytes: int = 0  # 0 means no data page at all: truly empty
    columns: dict[str, str] = field(default_factory=dict)  # name -> format_type()
    not_null: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    indexes: list[Index] = field(default_factory=list)
    kind: str = "r"  # relkind: r table, p partitioned (sizes summed over leaves), m matview

    def not_null_proven(self, column: str) -> bool:
        """True when a validated CHECK (column IS NOT NULL) exists."""
        return any(c.validated and c.not_null_column == column for c in self.checks)


@dataclass
class History:
    """The target's migration history, folded: what is applied now (undone versions are
    not), with the checksum each ran with."""

    applied: dict[str, int | None] = field(default_factory=dict)  # version -> checksum
    repeatable: dict[str, int | None] = field(default_factory=dict)  # description -> checksum
    baseline: str | None = None  # versions at or below it never run

    def ran(self, mf: MigrationFile) -> bool:
        """True when ``mf`` already ran on the target (or never will: below the baseline);
        a repeatable ran when its current checksum did (an edited one runs again)."""
        from pgferry.migrate.files import Version

        if mf.kind == "R":
            return mf.description in self.repeatable and (
                self.repeatable[mf.description] == mf.checksum
            )
        if mf.kind != "V" or mf.version is None:  # undo files and templates are not run by up
            return False
        if self.baseline is not None and mf.version <= Version(self.baseline):
            return True
        parts = self.__dict__.get("_parts")
        if parts is None:  # versions compare by their numbers (1.0 == 1): once per run
            parts = self.__dict__["_parts"] = {Version(v).parts for v in self.applied}
        return mf.version.parts in parts


def history_of(rows: list[Any]) -> History:
    """A :class:`History` from ``flyway_schema_history`` rows (folded as ``migrate`` does)."""
    from pgferry.migrate.plan import fold

    h = fold(rows)
    return History(
        {str(v): r.checksum for v, r in h.applied.items()},
        {d: r.checksum for d, r in h.repeatable.items()},
        str(h.baseline_version) if h.baseline_version is not None else None,
    )


@dataclass
class Snapshot:
    server_version: int  # server_version_num, e.g. 180001
    taken_at: str = ""
    source: str = ""
    tables: dict[str, TableInfo] = field(default_factory=dict)
    #: "schema.name" and bare "name" -> "i" | "s" | "v" (the most volatile overload)
    functions: dict[str, str] = field(default_factory=dict)
    enums: dict[str, list[str]] = field(default_factory=dict)  # "schema.type" -> labels
    history: History | None = None

    @property
    def major(self) -> int:
        return self.server_version // 10000

    def volatility(self, schema: str, name: str) -> str | None:
        return self.functions.get(f"{schema}.{name}" if schema else name)

    def to_json(self) -> str:
        return jsonio.dumps({"format": FORMAT, **asdict(self)}, pretty=True, sort_keys=True)


def load(path: Path) -> Snapshot:
    """Read a snapshot written by ``pgferry lint --catalog FILE``; BadInput when it is not one."""
    try:
        data = jsonio.loads(path.read_bytes())
    except (OSError, jsonio.DecodeError) as e:
        raise BadInput(f"cannot read catalog snapshot {path}: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInput(
            f"{path} is not a pgferry lint catalog snapshot (expected format {FORMAT!r})"
        )
    try:
        return from_dict(data)
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput(f"{path}: malformed catalog snapshot ({e})") from None


def from_dict(data: dict[str, Any]) -> Snapshot:
    """A snapshot from its JSON form (``format`` key optional)."""
    tables = {}
    for name, t in data.get("tables", {}).items():
        t = {"name": name, **t}
        t["checks"] = [Check(**c) for c in t.get("checks", [])]
        t["indexes"] = [Index(**i) for i in t.get("indexes", [])]
        tables[name] = TableInfo(**t)
    hist = data.get("history")
    history = (
        None
        if hist is None
        else History(
            dict(hist.get("applied", {})), dict(hist.get("repeatable", {})), hist.get("baseline")
        )
    )
    return Snapshot(
        int(data["server_version"]),
        data.get("taken_at", ""),
        data.get("source", ""),
        tables,
        dict(data.get("functions", {})),
        {k: list(v) for k, v in data.get("enums", {}).items()},
        history,
    )


def from_catalog(cat: Catalog, source: str = "", now: str = "") -> Snapshot:
    """The snapshot of a catalog read with ``for_lint`` (:func:`pgferry.pg.catalog.read`)."""
    snap = Snapshot(
        cat.server_version,
        now,
        source,
        functions=dict(cat.functions),
        enums={k: list(v) for k, v in cat.enums.items()},
    )
    for name, t in cat.tables.items():
        m = t.measured
        if m is None:  # pg_class's page counts cannot tell an empty table from a new one
            raise ValueError(f"{name}: the lint snapshot needs a catalog read for lint")
        snap.tables[name] = TableInfo(
            name,
            m.rows,
            m.total_bytes,
            m.heap_bytes,
            {c.name: c.type for c in t.columns},
            [c.name for c in t.columns if c.not_null],
            list(t.checks),
            list(t.indexes),
            kind=t.kind,
        )
    return snap


def take(conn: Any, source: str = "", now: str = "") -> Snapshot:
    """Read the catalog through ``conn`` (a psycopg connection) into a :class:`Snapshot`."""
    from pgferry.pg import catalog

    return from_catalog(catalog.read(conn, for_lint=True), source, now)

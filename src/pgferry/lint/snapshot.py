"""The catalog snapshot catalog-aware lint reads: table sizes, columns, checks, functions.

Contract:
- :func:`take` reads one database's catalog once (every schema except the
  system ones and ``pgferry``) through a connection the caller opened, and
  returns a :class:`Snapshot` of plain data. Nothing else in lint talks to a server.
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

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgferry.errors import BadInput

if TYPE_CHECKING:
    from pgferry.migrate.files import MigrationFile

FORMAT = "pgferry-lint-catalog/1"
VOLATILITY = {"i": "immutable", "s": "stable", "v": "volatile"}


@dataclass
class Check:
    name: str
    definition: str
    validated: bool
    not_null_column: str | None = None  # set for CHECK (col IS NOT NULL)


@dataclass
class Index:
    name: str
    columns: list[str]
    unique: bool
    valid: bool


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
                self.repeatable[mf.description] == mf.checksum)
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
    return History({str(v): r.checksum for v, r in h.applied.items()},
                   {d: r.checksum for d, r in h.repeatable.items()},
                   str(h.baseline_version) if h.baseline_version is not None else None)


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
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1, sort_keys=True)


def load(path: Path) -> Snapshot:
    """Read a snapshot written by ``pgferry lint --catalog FILE``; BadInput when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"cannot read catalog snapshot {path}: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInput(f"{path} is not a pgferry lint catalog snapshot "
                       f"(expected format {FORMAT!r})")
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
    history = None if hist is None else History(
        dict(hist.get("applied", {})), dict(hist.get("repeatable", {})), hist.get("baseline"))
    return Snapshot(int(data["server_version"]), data.get("taken_at", ""),
                    data.get("source", ""), tables, dict(data.get("functions", {})),
                    {k: list(v) for k, v in data.get("enums", {}).items()}, history)


_SCHEMAS = """
SELECT nspname FROM pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'pgferry')
  AND nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
"""

# A partitioned parent has no storage of its own: sum its leaves (pg_partition_tree, 12+).
_TABLES = """
SELECT c.oid, n.nspname || '.' || c.relname,
       CASE WHEN c.relkind = 'p' THEN coalesce((
           SELECT sum(greatest(l.reltuples, 0)) FROM pg_partition_tree(c.oid) t
           JOIN pg_class l ON l.oid = t.relid WHERE t.isleaf), 0)
       ELSE c.reltuples END::bigint,
       CASE WHEN c.relkind = 'p' THEN coalesce((
           SELECT sum(pg_total_relation_size(t.relid)) FROM pg_partition_tree(c.oid) t
           WHERE t.isleaf), 0)
       ELSE pg_total_relation_size(c.oid) END::bigint,
       CASE WHEN c.relkind = 'p' THEN coalesce((
           SELECT sum(pg_relation_size(t.relid)) FROM pg_partition_tree(c.oid) t
           WHERE t.isleaf), 0)
       ELSE pg_relation_size(c.oid) END::bigint,
       c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname = ANY(%s)
"""

_COLUMNS = """
SELECT attrelid, attname, format_type(atttypid, atttypmod), attnotnull
FROM pg_attribute WHERE attrelid = ANY(%s) AND attnum > 0 AND NOT attisdropped
ORDER BY attrelid, attnum
"""

_CHECKS = """
SELECT conrelid, conname, pg_get_constraintdef(oid), convalidated,
       CASE WHEN array_length(conkey, 1) = 1 THEN
           (SELECT attname FROM pg_attribute WHERE attrelid = conrelid AND attnum = conkey[1])
       END
FROM pg_constraint WHERE conrelid = ANY(%s) AND contype = 'c'
"""

_INDEXES = """
SELECT i.indrelid, ic.relname, i.indisunique, i.indisvalid,
       ARRAY(SELECT coalesce(a.attname, '(expression)')
             FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
             ORDER BY k.o)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = ANY(%s)
"""

_FUNCTIONS = """
SELECT n.nspname, p.proname, p.provolatile::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = ANY(%s) OR n.nspname = 'pg_catalog'
"""

_ENUMS = """
SELECT n.nspname || '.' || t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = ANY(%s) GROUP BY 1
"""

_RANK = {"i": 0, "s": 1, "v": 2}


def _nn_column(definition: str, column: str | None) -> str | None:
    if column is None:
        return None
    norm = " ".join(definition.replace("(", " ").replace(")", " ").split()).lower()
    quoted = column if column.islower() and column.isidentifier() else f'"{column}"'
    return column if norm == f"check {quoted.lower()} is not null" else None


def take(conn: Any, source: str = "", now: str = "") -> Snapshot:
    """Read the catalog through ``conn`` (a psycopg connection) into a :class:`Snapshot`."""
    schemas = [r[0] for r in conn.execute(_SCHEMAS)]
    snap = Snapshot(int(conn.info.server_version), now, source)
    by_oid: dict[int, TableInfo] = {}
    for oid, name, rows, total, heap, kind in conn.execute(_TABLES, [schemas]):
        by_oid[oid] = snap.tables[name] = TableInfo(name, rows, total, heap, kind=kind)
    oids = list(by_oid)
    if oids:
        for rel, col, typ, notnull in conn.execute(_COLUMNS, [oids]):
            by_oid[rel].columns[col] = typ
            if notnull:
                by_oid[rel].not_null.append(col)
        for rel, name, definition, validated, col in conn.execute(_CHECKS, [oids]):
            by_oid[rel].checks.append(
                Check(name, definition, validated, _nn_column(definition, col)))
        for rel, name, unique, valid, cols in conn.execute(_INDEXES, [oids]):
            by_oid[rel].indexes.append(Index(name, list(cols), unique, valid))
    for schema, name, vol in conn.execute(_FUNCTIONS, [schemas]):
        for key in (f"{schema}.{name}", name):
            if _RANK[vol] > _RANK.get(snap.functions.get(key, "i"), 0) or key not in snap.functions:
                snap.functions[key] = vol
    for name, labels in conn.execute(_ENUMS, [schemas]):
        snap.enums[name] = list(labels)
    return snap

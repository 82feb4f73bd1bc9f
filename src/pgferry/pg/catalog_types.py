"""What pgferry knows about a database's tables: plain data, no driver.

Contract: :mod:`pgferry.pg.catalog` (the one catalog reader) fills these; the sync
planner, masking and the lint snapshot (:mod:`pgferry.lint.snapshot`) read them
without a connection. Importing this module loads no driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: types whose equality is looser than identity (citext: 'Alice' = 'alice'; interval:
#: '1 mon' = '30 days'): the sync hashes (:mod:`pgferry.sync.columns`) and compares them
#: as text, they and arrays of them, so that such a change is reported and written
LOOSE_EQUALITY = frozenset(("citext", "interval"))


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(), e.g. "character varying(20)", "timestamp with time zone"
    not_null: bool
    has_default: bool
    identity: str  # "" | "a" (ALWAYS) | "d" (BY DEFAULT)
    generated: str  # "" | "s" (stored generated) | "v" (virtual generated, PostgreSQL 18)
    type_oid: int = 0
    #: pg_type.typtype: b(ase), e(num), d(omain), c(omposite), r(ange), m(ultirange), p(seudo)
    typtype: str = "b"
    #: its collation is nondeterministic (ICU, e.g. case-insensitive): values it calls
    #: equal may differ byte for byte
    nondeterministic: bool = False
    #: written only when its text differs (the comparison's hash tells such values
    #: apart): its values (through domains and arrays) have no equality, or one looser
    #: than identity: composite, range, multirange, json, box, citext, interval; floats
    #: and numeric inside an array (see _COLUMNS in pgferry.pg.catalog)
    compare_text: bool = False
    #: a domain over an enum: PostgreSQL resolves no ``=`` or ``<`` for it (the enum's
    #: are polymorphic, and a domain is not taken as ``anyenum``), so it cannot be a key
    enum_domain: bool = False


@dataclass(frozen=True)
class TriggerFunction:
    """What a trigger runs, as far as a sync needs to know whether it can return NULL."""

    language: str  # pg_language.lanname: "plpgsql", "c", "internal", ...
    definition: str  # a PL/pgSQL function's CREATE FUNCTION (pg_get_functiondef); else ""
    source: str  # prosrc: the body, or a C or internal function's symbol
    library: str  # probin: a C function's library ("$libdir/moddatetime"); else ""


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    ref_table: str  # "schema.table"
    ref_columns: tuple[str, ...]
    deferrable: bool
    validated: bool
    #: pg_constraint.confdeltype: a(no action), r(estrict), c(ascade), n (set null), d (set
    #: default)
    on_delete: str = "a"


@dataclass
class Check:
    """A CHECK constraint (the field names are part of the lint catalog's JSON format)."""

    name: str
    definition: str
    validated: bool
    not_null_column: str | None = None  # set for CHECK (col IS NOT NULL)


@dataclass
class Index:
    """An index (the field names are part of the lint catalog's JSON format)."""

    name: str
    columns: list[str]  # "(expression)" for an expression
    unique: bool
    valid: bool


@dataclass(frozen=True)
class Measured:
    """Sizes and rows as catalog-aware lint reads them: exact sizes (which wait behind an
    ACCESS EXCLUSIVE lock on the table), a partitioned table summed over its leaves."""

    rows: int  # reltuples; -1 when never vacuumed or analyzed (PostgreSQL 14+)
    total_bytes: int  # heap + indexes + toast
    heap_bytes: int  # 0 means no data page at all: truly empty


@dataclass
class Table:
    schema: str
    name: str
    columns: list[Column] = field(default_factory=list)
    primary_key: tuple[str, ...] = ()
    unique_keys: list[tuple[str, ...]] = field(default_factory=list)
    #: the primary key and unique constraints among those that are DEFERRABLE
    deferrable_keys: list[tuple[str, ...]] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    sequences: dict[str, str] = field(default_factory=dict)  # column -> "schema.sequence"
    #: user triggers that fire in an ordinary session (enabled, or ENABLE ALWAYS)
    user_triggers: list[str] = field(default_factory=list)
    #: those of them that are BEFORE INSERT or UPDATE, FOR EACH ROW: able to skip a row
    #: without an error (by returning NULL)
    skipping_triggers: list[str] = field(default_factory=list)
    #: their functions, by trigger
    trigger_functions: dict[str, TriggerFunction] = field(default_factory=dict)
    #: those a partition of a partitioned table has of its own, named "name (partition)"
    #: in the lists above: the partition ("schema.table") and the trigger's own name
    trigger_tables: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: their pg_trigger.tgenabled ("O" enabled, "A" always), to re-enable them as they were
    trigger_modes: dict[str, str] = field(default_factory=dict)
    #: relkind: "r" table, "p" partitioned, "m" materialized view (lint reads those too)
    kind: str = "r"
    #: rows (partitions summed): reltuples, or the statistics' live rows where reltuples is
    #: unknown; never negative (an estimate for planning and progress)
    row_estimate: int = 0
    #: heap, TOAST and indexes from pg_class (partitions summed): read without taking a lock
    total_bytes: int = 0
    owner: str = ""
    #: the connected role is the owner or a member of it (it may drop and build the table's
    #: indexes, disable its triggers); and may TRUNCATE it
    owned: bool = True
    may_truncate: bool = True
    #: row-level security filters what the connected role sees in (or may write to) this table
    #: (``row_security_active``: policies enabled and the role neither owns it, unless
    #: FORCE ROW LEVEL SECURITY, nor has BYPASSRLS)
    rls_active: bool = False
    #: its child tables by ``INHERITS`` (not partitions), "schema.table": reading the
    #: table reads their rows too
    inherited_by: list[str] = field(default_factory=list)
    #: sequences the table's column defaults call (``DEFAULT nextval('s')``) that no column
    #: owns: column -> "schema.sequence"
    default_sequences: dict[str, str] = field(default_factory=dict)
    #: those sequences (of either kind) the connected role may not set (no UPDATE on them)
    unsettable_sequences: set[str] = field(default_factory=set)
    #: read for lint only (:func:`pgferry.pg.catalog.read` with ``for_lint``)
    checks: list[Check] = field(default_factory=list)
    indexes: list[Index] = field(default_factory=list)
    measured: Measured | None = None

    @property
    def qualname(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def partitioned(self) -> bool:
        return self.kind == "p"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass
class Catalog:
    """One database as :func:`pgferry.pg.catalog.read` saw it."""

    server_version: int  # server_version_num, e.g. 180001
    tables: dict[str, Table] = field(default_factory=dict)  # by "schema.table"
    #: lint only: "schema.name" and bare "name" -> "i" | "s" | "v" (the most volatile overload)
    functions: dict[str, str] = field(default_factory=dict)
    #: lint only: "schema.type" -> labels in order
    enums: dict[str, list[str]] = field(default_factory=dict)

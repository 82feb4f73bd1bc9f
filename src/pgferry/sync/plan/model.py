"""What a sync plan is: :class:`SyncPlan`, one :class:`TablePlan` per table.

Contract: plain dataclasses, filled by :func:`pgferry.sync.plan.build_plan` and read by
everything that runs a sync (the workers, the strategies, the verifier, which takes a
:class:`TablePlan` as its ``TableSpec``). ``to_dict`` is the plan as ``--json`` shows it;
:meth:`TablePlan.locks` says what a run's writes lock beyond the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["incremental", "full", "verify"]
Strategy = Literal["full", "checksum", "watermark", "verify"]


@dataclass
class TablePlan:
    """How one table is synced; also the ``TableSpec`` the verifier reads.

    ``key`` orders and identifies rows (primary key or ``[sync.tables] key``;
    empty when the table has none, which allows only full mode). ``columns``
    are the synced columns in target order; ``key`` columns are always among
    them. ``order`` is the position in FK order (parents first).
    """

    schema: str
    name: str
    qualname: str
    key: tuple[str, ...]
    columns: list[str]
    mode: Mode
    strategy: Strategy
    watermark: str | None = None
    #: the watermark column allows NULL on the source: a row without a watermark is in no
    #: window, so such rows are read on every run
    watermark_nullable: bool = False
    where: str | None = None
    deletes: bool = True
    triggers: Literal["enable", "disable"] = "enable"
    warnings: list[str] = field(default_factory=list)
    identity_always: bool = False
    #: GENERATED ALWAYS identity columns that are not key columns (never in an UPDATE SET)
    always_columns: list[str] = field(default_factory=list)
    order: int = 0
    #: why this table cannot be synced (it is then skipped and the run fails)
    error: str | None = None
    #: no constraint of the source keeps ``key`` unique (the target's primary key or a
    #: configured key is used): the source is asked for rows sharing a key before any
    #: write (:func:`pgferry.sync.shared_keys.check`)
    check_source_keys: bool = False
    #: column -> type (format_type) on the target; "" when the table is only planned
    column_types: dict[str, str] = field(default_factory=dict)
    #: True when every synced column has the same type on both sides (COPY binary is safe)
    same_types: bool = True
    #: False when the two servers are of different major versions: a binary format may
    #: differ between them (numeric's infinities are new in 14), so COPY goes as text and
    #: a value the target cannot hold becomes a dead letter, not a failed batch
    binary_copy: bool = True
    #: column -> "schema.sequence" on the target, for the sequences step
    sequences: dict[str, str] = field(default_factory=dict)
    #: selected tables this one references (FK parents), and its own self-reference
    parents: list[str] = field(default_factory=list)
    self_referencing: bool = False
    #: FKs of unselected tables that reference this one: (table, fk columns, key columns)
    referenced_by_unselected: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=list
    )
    #: FKs of selected tables (itself included) that act on a delete of this table's rows
    #: (ON DELETE CASCADE, SET NULL, SET DEFAULT): (table, fk columns, key columns, action)
    acting_on_delete: list[tuple[str, tuple[str, ...], tuple[str, ...], str]] = field(
        default_factory=list
    )
    #: True when any FK (from any table but itself) references this table: no TRUNCATE
    referenced: bool = False
    #: cycle members when this table is in an FK cycle (deferrable or not)
    cycle: list[str] = field(default_factory=list)
    partitioned: bool = False
    user_triggers: list[str] = field(default_factory=list)
    #: those of them that can skip a row without an error (BEFORE INSERT or UPDATE, FOR
    #: EACH ROW; :mod:`pgferry.sync.skipped`)
    skipping_triggers: list[str] = field(default_factory=list)
    row_estimate: int = 0
    total_bytes: int = 0
    missing_on_target: list[str] = field(default_factory=list)
    missing_on_source: list[str] = field(default_factory=list)
    #: schema drift the run reports as a problem (exit 1): source columns the target lacks,
    #: columns whose types differ ("apply the migrations first")
    findings: list[str] = field(default_factory=list)
    #: user triggers' pg_trigger.tgenabled, to re-enable them as they were
    trigger_modes: dict[str, str] = field(default_factory=dict)
    #: triggers a partition has of its own: name in the lists -> (partition, trigger name)
    trigger_tables: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: column -> type (format_type) on the source
    source_types: dict[str, str] = field(default_factory=dict)
    #: columns staged and copied as text, then cast to the target type row by row (so a
    #: value the target refuses is one dead letter, not a failed COPY): types that differ,
    #: and target types whose input can refuse a value the source holds (enum labels,
    #: domain checks, composite and other user-defined types)
    text_columns: list[str] = field(default_factory=list)
    #: text columns of an enum type (the same on both sides): binary COPY carries their
    #: labels, so the fast path into an empty table may still go in binary
    enum_columns: list[str] = field(default_factory=list)
    #: columns whose target collation is nondeterministic (ICU, case-insensitive): a
    #: write compares them byte for byte (``COLLATE "C"``), so that a change its
    #: collation calls equal ('Alice' to 'alice') is written, not skipped
    bytewise_columns: list[str] = field(default_factory=list)
    #: columns a write compares by their text form: types without equality (json, xml,
    #: geometric), whose equality is looser than identity (citext, interval; composite,
    #: range and multirange values, whose parts may be either), arrays of those, and of
    #: floats (0 = -0 inside them; hashed as text too)
    text_compare: list[str] = field(default_factory=list)
    #: an empty target table may be loaded after a TRUNCATE (COPY FREEZE), which holds
    #: ACCESS EXCLUSIVE until the table commits: readers wait ([sync] block_readers)
    block_readers: bool = True
    #: an empty target table is loaded with its secondary indexes set aside, rebuilt after
    #: the unit commits ([sync] defer_indexes; never on a protected target)
    defer_indexes: bool = False
    #: save every row this run updates or deletes in pgferry.before_images (sync revert)
    before_images: bool = False
    #: masked columns -> the rule's text (filled by the engine)
    masked: dict[str, str] = field(default_factory=dict)
    #: what a conflict does (see :mod:`pgferry.sync.conflicts`) and whether rows only the
    #: target changed are kept; ``track``: conflicts are looked for (checksum strategy)
    on_conflict: str = "source"
    keep_target_changes: bool = False
    track: bool = False
    #: this run leaves some rows alone (they are in its skip table; set by the conflicts step)
    skip: bool = False

    def across_versions(self) -> None:
        """The two servers are of different major versions: no binary COPY (a type's binary
        format may differ: numeric's infinities are new in 14), and every non-key column
        staged as text, so a value the target's version cannot hold (numeric 'Infinity'
        into 13) is one dead letter, not a failed batch."""
        self.binary_copy = False
        self.text_columns = self.value_columns

    @property
    def value_columns(self) -> list[str]:
        """Synced columns that are not key columns (the ones an upsert may update)."""
        return [c for c in self.columns if c not in self.key]

    @property
    def loose_keys(self) -> list[str]:
        """Key columns whose equality is looser than identity (citext, interval, a
        nondeterministic collation): a row matched by such a key may still hold another
        spelling of it ('ann@x' for 'Ann@x'), which an upsert also writes."""
        return [k for k in self.key if k in self.text_compare or k in self.bytewise_columns]

    def to_dict(self) -> dict[str, object]:
        return {
            "table": self.qualname,
            "order": self.order,
            "mode": self.mode,
            "strategy": self.strategy,
            "key": list(self.key),
            "columns": list(self.columns),
            "watermark": self.watermark,
            "where": self.where,
            "deletes": self.deletes,
            "triggers": self.triggers,
            "estimated_rows": self.row_estimate,
            "estimated_bytes": self.total_bytes,
            "missing_on_target": self.missing_on_target,
            "missing_on_source": self.missing_on_source,
            "cycle": self.cycle,
            "warnings": list(self.warnings),
            "error": self.error,
            "findings": list(self.findings),
            "sequences": dict(self.sequences),
            "user_triggers": list(self.user_triggers) if self.triggers == "enable" else [],
            # those whose writes are checked for rows they skip (they may return NULL)
            "skipping_triggers": (
                list(self.skipping_triggers) if self.triggers == "enable" else []
            ),
            "text_columns": list(self.text_columns),
            "locks": self.locks(),
            "before_images": self.before_images,
            "masked": dict(self.masked),
            "on_conflict": self.on_conflict,
            "keep_target_changes": self.keep_target_changes,
            "conflicts_tracked": self.track,
            "defer_indexes": self.defer_indexes,
        }

    def locks(self) -> list[str]:
        """What the run's writes to this table lock beyond its rows (shown in the plan)."""
        out = []
        if self.mode != "verify" and self.strategy != "verify":
            if self.block_readers and not self.referenced and not self.partitioned:
                out.append(
                    "ACCESS EXCLUSIVE while loading when the target table is empty "
                    "(TRUNCATE + COPY FREEZE: readers wait)"
                )
            if self.defer_indexes:
                out.append(
                    "when the target table is empty: ACCESS EXCLUSIVE while loading "
                    "without its secondary indexes, then SHARE until they are rebuilt "
                    "(readers go on, other writers wait)"
                )
            if self.triggers == "disable" and self.user_triggers:
                out.append(
                    "SHARE ROW EXCLUSIVE (DISABLE TRIGGER) until the table commits: "
                    "other writers wait"
                )
        return out


@dataclass
class SyncPlan:
    """The whole plan: tables in FK order plus run-level warnings."""

    mode: Mode
    tables: list[TablePlan]
    warnings: list[str] = field(default_factory=list)
    #: non-deferrable FK cycles (each a list of tables); their tables carry an error
    cycles: list[list[str]] = field(default_factory=list)
    #: schema drift that is a problem (exit 1): tables of the source the target lacks
    findings: list[str] = field(default_factory=list)
    #: tables of the source the target lacks (each also a finding)
    missing_tables: list[str] = field(default_factory=list)

    def table(self, qualname: str) -> TablePlan:
        return next(t for t in self.tables if t.qualname == qualname)

    @property
    def runnable(self) -> list[TablePlan]:
        return [t for t in self.tables if t.error is None]

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "tables": [t.to_dict() for t in self.tables],
            "warnings": list(self.warnings),
            "cycles": self.cycles,
            "findings": list(self.findings),
            "missing_tables": list(self.missing_tables),
        }

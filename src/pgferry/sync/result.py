"""What a sync or verify run did: plain dataclasses the engine fills and the report renders.

Contract: the sync engine creates one :class:`SyncResult` per run and one
:class:`TableResult` per selected table, fills the counters as batches commit,
and sets ``finished_at`` / ``outcome`` at the end. :meth:`SyncResult.to_dict`
is the ``--json`` object and the journal's details; :mod:`pgferry.sync.report`
renders the same data as Markdown. Nothing here talks to a database, and no
field may hold a password: ``source_display`` / ``target_display`` are redacted
DSNs (:attr:`pgferry.pg.connect.Target.display`).

Outcomes and exit codes (DESIGN.md §2):

========  ====  ================================================================
outcome   exit  meaning
========  ====  ================================================================
ok        0     every table done, nothing differs, nothing dead-lettered
problem   1     done, but rows were dead-lettered or verify found differences
failed    3     a table failed (server error, retries exhausted, interrupted)
refused   4     refused by policy before anything was written
========  ====  ================================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from pgferry.sync.plan import Mode, Strategy

TableStatus = Literal[
    "pending",
    "ok",
    "dead_letters",
    "differs",
    "failed",
    "skipped",
    "planned",
    "missing",
    "conflicts",
]
Outcome = Literal["ok", "problem", "failed", "refused", "planned"]

_EXIT = {"ok": 0, "planned": 0, "problem": 1, "failed": 3, "refused": 4}


@dataclass
class DeadLetter:
    """One row a sync could not write (also stored in ``pgferry.dead_letters``)."""

    key: dict[str, Any]
    error: str
    sqlstate: str = ""


@dataclass
class TableResult:
    """The outcome for one table (``schema.table``).

    Counters are row counts. ``unchanged`` counts rows compared and found equal
    (checksum strategy) or upserted without a change (watermark strategy).
    The verify fields (``matched`` ... ``first_differing_keys``) are filled by
    ``--mode verify`` and by the verification that follows a sync.
    """

    table: str
    mode: Mode = "incremental"
    strategy: Strategy | Literal[""] = ""
    status: TableStatus = "pending"
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    dead_lettered: int = 0
    #: rows of the source the run read for this table (compared or copied): inserted +
    #: updated + unchanged + dead_lettered add up to it
    source_rows: int = 0
    duration_s: float = 0.0
    #: per-table checksum after the run, computed on each side (None when not computed)
    checksum_source: str | None = None
    checksum_target: str | None = None
    # verify counts
    matched: int = 0
    differing: int = 0
    only_in_source: int = 0
    only_in_target: int = 0
    first_differing_keys: list[Any] = field(default_factory=list)
    #: columns whose values were masked in the source SELECT, with their rule
    masked: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)  # first few, for the report
    error: str | None = None
    #: estimated rows/bytes (dry run and progress ETA)
    estimated_rows: int = 0
    estimated_bytes: int = 0
    #: schema drift found on this table (exit 1): "apply the migrations first"
    findings: list[str] = field(default_factory=list)
    #: what the status alone does not say (user triggers fired on the target, ...)
    note: str = ""
    #: the comparison after the sync ran (True), failed (False) or was not asked for (None)
    checked_after: bool | None = None
    #: the dry run's comparison: rows the sync would insert, update and delete
    would_insert: int = 0
    would_update: int = 0
    would_delete: int = 0
    #: rows this run changed were saved in pgferry.before_images (``sync revert``)
    before_images: bool = False
    #: conflicts: target rows changed since the last sync that this sync would change;
    #: None when not looked for, False when they could not be known (no previous sync)
    conflicts_known: bool | None = None
    conflicts: int = 0
    #: the first conflicts: key, kind (update/delete/insert), target_row, source_row
    conflict_rows: list[dict[str, Any]] = field(default_factory=list)
    #: rows only the target changed since the last sync, and rows left as the target has them
    target_only: int = 0
    kept: int = 0
    #: secondary indexes loaded without and rebuilt after the unit ([sync] defer_indexes)
    rebuilt_indexes: list[str] = field(default_factory=list)

    @property
    def written(self) -> int:
        """Rows changed on the target (inserted + updated + deleted)."""
        return self.inserted + self.updated + self.deleted

    @property
    def checksums_match(self) -> bool | None:
        """True/False once both checksums are known, else None."""
        if self.checksum_source is None or self.checksum_target is None:
            return None
        return self.checksum_source == self.checksum_target

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["written"] = self.written
        d["checksums_match"] = self.checksums_match
        d["duration_s"] = round(self.duration_s, 3)
        return d


@dataclass
class SyncResult:
    """One run of ``pgferry sync`` / ``pgferry verify``."""

    source: str  # environment name
    target: str
    source_display: str = ""  # redacted DSN
    target_display: str = ""
    mode: Mode = "incremental"
    dry_run: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    tables: list[TableResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    outcome: Outcome | None = None  # None: derive from the tables (see :meth:`derive_outcome`)
    error: str | None = None
    #: ``--no-mask --reason TEXT``: why personal columns were copied unmasked
    no_mask_reason: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # batch_size, jobs, tables, ...
    #: the run's id (journal, dead letters, before-images: ``sync revert RUN_ID``)
    run_id: str = ""
    #: schema drift of the whole selection (a source table the target lacks): exit 1
    findings: list[str] = field(default_factory=list)

    def table(self, name: str) -> TableResult:
        """The result for ``name``, created (and appended) on first use."""
        for t in self.tables:
            if t.table == name:
                return t
        t = TableResult(name, mode=self.mode)
        self.tables.append(t)
        return t

    def totals(self) -> dict[str, int]:
        keys = (
            "inserted",
            "updated",
            "deleted",
            "unchanged",
            "dead_lettered",
            "matched",
            "differing",
            "only_in_source",
            "only_in_target",
            "source_rows",
            "would_insert",
            "would_update",
            "would_delete",
            "conflicts",
            "kept",
        )
        return {k: sum(int(getattr(t, k)) for t in self.tables) for k in keys}

    @property
    def duration_s(self) -> float:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return sum(t.duration_s for t in self.tables)

    def derive_outcome(self) -> Outcome:
        """The outcome implied by the tables unless one was set explicitly."""
        if self.outcome is not None:
            return self.outcome
        if self.dry_run:
            # a table the plan stops would fail the sync: the dry run says so (exit 1)
            return "problem" if any(t.status == "failed" for t in self.tables) else "planned"
        if self.error or any(t.status == "failed" for t in self.tables):
            return "failed"
        if self.findings or any(
            t.dead_lettered
            or t.differing
            or t.only_in_source
            or t.only_in_target
            or t.status in ("dead_letters", "differs", "missing", "conflicts")
            or t.checksums_match is False
            or t.findings
            for t in self.tables
        ):
            return "problem"
        return "ok"

    @property
    def exit_code(self) -> int:
        return _EXIT[self.derive_outcome()]

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object (also the journal's details)."""
        outcome = self.derive_outcome()
        return {
            "ok": outcome in ("ok", "planned"),
            "outcome": outcome,
            "exit_code": _EXIT[outcome],
            "source": {"env": self.source, "dsn": self.source_display},
            "target": {"env": self.target, "dsn": self.target_display},
            "mode": self.mode,
            "dry_run": self.dry_run,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_s": round(self.duration_s, 3),
            "totals": self.totals(),
            "tables": [t.to_dict() for t in self.tables],
            "warnings": list(self.warnings),
            "error": self.error,
            "no_mask_reason": self.no_mask_reason,
            "options": dict(self.options),
            "run_id": self.run_id,
            "findings": list(self.findings),
        }

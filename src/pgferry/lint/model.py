"""The linter's data: findings, rules, statements and the state a lint run carries.

Contract:
- A :class:`Rule` is one small class: ``code``, ``name``, ``severity``, one-line
  ``message``, ``help`` (the safe way, one line), the PostgreSQL versions it
  applies to, the node kinds it looks at, and :meth:`Rule.check`, which reads
  one statement (:class:`~pgferry.sqltext.model.Statement`, the one SQL front end's,
  also the runner's) and the run's :class:`Context` and yields :class:`Hit`.
  Its docstring is its documentation (anti-pattern and safe rewrite as SQL).
- Rules are pure: they read parse trees (pglast's JSON form, plain dicts) and
  the optional catalog snapshot, and never touch a database, a file or a clock.
- :class:`Finding` is what reaches users (text, JSON, SARIF, the migrate gate).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pgferry.sqltext.model import SqlFile, Statement
from pgferry.sqltext.nodes import DEFAULT_SCHEMA as DEFAULT_SCHEMA
from pgferry.sqltext.nodes import Node as Node

if TYPE_CHECKING:
    from pgferry.lint.snapshot import Snapshot

#: the PostgreSQL version rules assume without a target or ``--pg-version``
DEFAULT_PG = 18
#: ``[lint] big_table_rows``: a table with more rows (catalog estimate) is big
BIG_TABLE_ROWS = 100_000


Severity = Literal["error", "warning"]


@dataclass
class Finding:
    """One problem at one place; ``severity`` is ``"error"`` or ``"warning"``."""

    rule: str
    code: str
    severity: Severity
    path: str
    line: int
    column: int
    message: str
    help: str = ""
    statement: str = ""
    impact: str = ""
    suppressed: str | None = None  # the reason, when an ignore comment silenced it
    stmt_index: int | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "rule": self.rule,
            "code": self.code,
            "severity": self.severity,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "help": self.help,
            "statement": self.statement,
        }
        if self.impact:
            d["impact"] = self.impact
        if self.suppressed is not None:
            d["suppressed"] = self.suppressed
        return d

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.path, self.line, self.column, self.code)


@dataclass
class Hit:
    """What a rule reports: where (byte offset in the file, None = the statement
    start), on which table (for catalog impact), and an optional sharper message."""

    loc: int | None = None
    table: str | None = None
    message: str | None = None
    work: str | None = None  # overrides Rule.work ("rewrite", "scan", "index", "")
    severity: Severity | None = None  # overrides the rule's default (not a [lint] severity)


#: a statement as the one SQL front end gives it (lint rules read ``kind``, ``node``,
#: ``start``/``end``, ``in_tx``/``explicit_tx``, and keep scratch data in ``cache``)
Stmt = Statement
#: a parsed file (its text, bytes, statements and whether it runs in one transaction)
FileInfo = SqlFile


@dataclass
class Context:
    """What a lint run knows while it walks statements in order, across files.

    The state that carries from file to file (tables created, column types,
    NOT NULL checks) is keyed by table and read and written only through the
    methods below, so a parallel run can record which tables each file touched
    (``touched``/``written`` sets, None when not tracking) and prove that a file
    linted without its predecessors' state saw the same answers.

    A table is *new* (no rows, nobody uses it yet) when it was created earlier in
    the same file, or when it is absent from the catalog and a pending file of
    the run created it (:meth:`end_file` carries it over). Without a catalog
    pgferry cannot tell a pending file from one applied years ago, so a table
    from an earlier file is an existing table with rows.
    """

    pg_version: int = DEFAULT_PG
    catalog: Snapshot | None = None
    big_table_rows: int = BIG_TABLE_ROWS
    #: tables pending files of this run created that the catalog lacks ("schema.table")
    created: set[str] = field(default_factory=set)
    #: tables created earlier in the current file (reset per file)
    file_created: set[str] = field(default_factory=set)
    #: column types known from this run: table -> column -> type name
    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    file: FileInfo | None = None
    #: the current file is still to run (False: the catalog's history says it ran)
    pending: bool = True
    stmts: list[Stmt] = field(default_factory=list)
    #: per transaction facts (reset at COMMIT and at each file's end)
    tx_not_valid: dict[str, str] = field(default_factory=dict)  # constraint -> table
    tx_ddl_tables: set[str] = field(default_factory=set)
    #: CHECK (col IS NOT NULL) constraints added in this run: (table, name) -> column
    nn_checks: dict[tuple[str, str], str] = field(default_factory=dict)
    #: columns proven not null by a validated CHECK added in this run: table -> columns
    nn_validated: dict[str, set[str]] = field(default_factory=dict)
    #: per-file scratch space for rules that need memory within a file (reset per file)
    scratch: dict[str, Any] = field(default_factory=dict)
    #: indexes created in this run ("schema.index") -> their table, for DROP INDEX
    indexes: dict[str, str] = field(default_factory=dict)
    #: when tracking: tables whose cross-file state was read or written / written
    #: (an index's entry in :attr:`indexes` is tracked as ``"index:schema.name"``)
    touched: set[str] | None = field(default=None, repr=False)
    written: set[str] | None = field(default=None, repr=False)

    def _wrote(self, table: str) -> None:
        if self.written is not None:
            self.written.add(table)
            self.touched.add(table)  # type: ignore[union-attr]

    def is_new(self, table: str) -> bool:
        """True when ``table`` is new (see the class docstring): nobody uses it yet."""
        if table in self.file_created:
            return True
        if self.touched is not None:
            self.touched.add(table)
        return table in self.created

    def in_catalog(self, table: str) -> bool:
        """True when the catalog has ``table`` (False without a catalog)."""
        return self.catalog is not None and table in self.catalog.tables

    def is_empty(self, table: str) -> bool:
        """True when the catalog says the table exists and has no data pages."""
        if self.catalog is None:
            return False
        t = self.catalog.tables.get(table)
        return t is not None and t.heap_bytes == 0

    def existing(self, table: str) -> bool:
        """True when ``table`` may hold rows that other sessions use right now
        (not created in this run, not empty in the catalog)."""
        if self.is_new(table):
            return False
        return self.catalog is None or not self.is_empty(table)

    def column_type(self, table: str, column: str) -> str | None:
        """The type this run gave ``table.column`` (CREATE TABLE, ADD COLUMN, TYPE), if any."""
        if self.touched is not None:
            self.touched.add(table)
        cols = self.columns.get(table)
        return cols.get(column) if cols else None

    def validated_not_null(self, table: str, column: str) -> bool:
        """True when a validated CHECK (column IS NOT NULL) was added in this run."""
        if self.touched is not None:
            self.touched.add(table)
        return column in self.nn_validated.get(table, ())

    def nn_check_column(self, table: str, name: str) -> str | None:
        """The column of the CHECK (col IS NOT NULL) constraint ``name`` added in this run."""
        if self.touched is not None:
            self.touched.add(table)
        return self.nn_checks.get((table, name))

    def index_table(self, index: str) -> str | None:
        """The table of ``index`` ("schema.name") when this run created it."""
        if self.touched is not None:
            self.touched.add(f"index:{index}")
        return self.indexes.get(index)

    def add_index(self, index: str, table: str) -> None:
        self._wrote(f"index:{index}")
        self.indexes[index] = table

    def drop_index(self, index: str) -> None:
        self._wrote(f"index:{index}")
        self.indexes.pop(index, None)

    def add_created(self, table: str) -> None:
        """``table`` was created by the current file (new until the file ends)."""
        self.file_created.add(table)

    def drop_created(self, table: str) -> None:
        self.file_created.discard(table)
        self._wrote(table)
        self.created.discard(table)

    def end_file(self) -> None:
        """Carry the tables the file created into later files when they count as new
        there: the file is pending and the catalog lacks them."""
        if self.pending and self.catalog is not None:
            for table in self.file_created:
                if table not in self.catalog.tables:
                    self._wrote(table)
                    self.created.add(table)
        self.file_created.clear()

    def set_column_type(self, table: str, column: str, type_: str) -> None:
        self._wrote(table)
        self.columns.setdefault(table, {})[column] = type_

    def add_nn_check(self, table: str, name: str, column: str) -> None:
        self._wrote(table)
        self.nn_checks[(table, name)] = column

    def add_validated_not_null(self, table: str, column: str) -> None:
        self._wrote(table)
        self.nn_validated.setdefault(table, set()).add(column)

    def reset_tx(self) -> None:
        self.tx_not_valid.clear()
        self.tx_ddl_tables.clear()

    def save_state(self) -> tuple[Any, ...]:
        """A copy of the state that carries from file to file (see :meth:`restore_state`)."""
        return (
            set(self.created),
            {t: dict(c) for t, c in self.columns.items()},
            dict(self.nn_checks),
            {t: set(c) for t, c in self.nn_validated.items()},
            dict(self.indexes),
        )

    def restore_state(self, saved: tuple[Any, ...]) -> None:
        """Go back to a :meth:`save_state` copy (which stays untouched, for reuse)."""
        created, columns, nn_checks, nn_validated, indexes = saved
        self.created = set(created)
        self.indexes = dict(indexes)
        self.columns = {t: dict(c) for t, c in columns.items()}
        self.nn_checks = dict(nn_checks)
        self.nn_validated = {t: set(c) for t, c in nn_validated.items()}


class Rule:
    """Base of every rule; subclasses set the class attributes and :meth:`check`."""

    code: ClassVar[str]
    name: ClassVar[str]
    severity: ClassVar[Severity] = "warning"
    message: ClassVar[str]
    help: ClassVar[str] = ""
    #: statement node kinds this rule reads (``()`` means every statement)
    kinds: ClassVar[tuple[str, ...]] = ()
    #: ALTER TABLE action subtypes it reads (empty: all); lets the engine skip it cheaply
    subtypes: ClassVar[frozenset[str]] = frozenset()
    min_pg: ClassVar[int] = 9
    max_pg: ClassVar[int | None] = None
    #: off unless listed in ``[lint] enable``
    opt_in: ClassVar[bool] = False
    #: the lock taken, for catalog-mode impact ("" when none worth naming)
    lock: ClassVar[str] = ""
    #: "rewrite" (table rewritten), "scan" (full scan under the lock), "index" (index build)
    work: ClassVar[str] = ""
    #: squawk's name for the same check, when squawk has one (bench agreement)
    squawk: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def applies(cls, pg_version: int) -> bool:
        return cls.min_pg <= pg_version and (cls.max_pg is None or pg_version <= cls.max_pg)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        """Findings for one statement (the default: none)."""
        return iter(())

    def finish(self, cx: Context) -> Iterator[Hit]:
        """Findings about the file as a whole, after its last statement (default: none)."""
        return iter(())

    @classmethod
    def versions(cls) -> str:
        if cls.max_pg is None:
            return "all" if cls.min_pg <= 9 else f"{cls.min_pg}+"
        return f"{cls.min_pg}-{cls.max_pg}"

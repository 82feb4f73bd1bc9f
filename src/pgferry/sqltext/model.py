"""A SQL file as statements: where each starts, what it is, how it runs.

Contract (pure):
- :func:`split` parses a text with the real PostgreSQL parser (pglast, JSON trees) into a
  :class:`SqlFile` of :class:`Statement`: kind (the parse node's name), tree, byte
  offsets of the first token (comments skipped) and of the end, 0-based index. A text
  that does not parse raises :class:`~pgferry.errors.SqlParseError` naming the file,
  the line and the parser's message.
- Transactions: a file runs in one transaction unless a statement cannot
  (:func:`pgferry.sqltext.classify.non_tx`; :attr:`Statement.non_tx` says why), or it
  adds an enum label (``ALTER TYPE ... ADD VALUE``) that a later statement of the same
  file uses as a string: a new label cannot be used before the transaction that added
  it commits, so that ``ADD VALUE`` is marked non-transactional and
  :attr:`SqlFile.notes` says why (before PostgreSQL 12, when the caller says the server
  is that old, every ``ADD VALUE`` is). :attr:`SqlFile.transactional` is the verdict;
  :attr:`Statement.in_tx` says whether a statement runs inside a transaction (the
  file's, or an explicit ``BEGIN`` block of a file lint reads; the runner refuses
  transaction control in migrations), :attr:`Statement.explicit_tx` whether inside such
  a block.
- A statement's text (:attr:`Statement.text`, what the runner sends), line and digest
  come from the file's bytes; what it needs of the target (:attr:`Statement.needs`,
  :attr:`Statement.extension`) from :mod:`pgferry.sqltext.features`.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from pgferry.errors import SqlParseError
from pgferry.sqltext import classify, parser
from pgferry.sqltext.nodes import Node

_LEAD = re.compile(rb"(?:\s+|--[^\n]*|/\*.*?\*/)*", re.S)


@dataclass(slots=True)
class Statement:
    """One parsed statement of a :class:`SqlFile`."""

    kind: str  # pglast node name, e.g. "AlterTableStmt"
    node: Node
    start: int  # byte offset of the first token (comments skipped)
    end: int  # byte offset after the last token
    index: int  # position in the file (0-based)
    #: the file's UTF-8 bytes (shared, not copied; no reference back to the SqlFile, so a
    #: file's statements and trees are freed as soon as nobody needs them, without the
    #: cycle collector walking thousands of trees)
    data: bytes = field(repr=False)
    #: why it cannot run in a transaction block, or None
    non_tx: str | None = None
    in_tx: bool = False  # runs inside a transaction (the file's or an explicit block)
    explicit_tx: bool = False  # inside an explicit BEGIN ... COMMIT of the file
    #: per-statement scratch space of readers (lint rules)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def text(self) -> str:
        """The statement as the runner sends it (no leading comments, no ``;``)."""
        return self.data[self.start : self.end].decode("utf-8", "replace").strip()

    @property
    def line(self) -> int:
        """1-based line of the first token."""
        return self.data.count(b"\n", 0, self.start) + 1

    @property
    def digest(self) -> str:
        """A short hash of the statement text (whitespace-normalised) for resume checks."""
        return hashlib.sha256(" ".join(self.text.split()).encode()).hexdigest()[:16]

    @property
    def needs(self) -> tuple[tuple[str, int], ...]:
        """(feature, PostgreSQL major) the statement needs (see :mod:`~.features`)."""
        from pgferry.sqltext.features import requirements

        return tuple(requirements(self.kind, self.node))

    @property
    def extension(self) -> str | None:
        """The extension a ``CREATE EXTENSION`` needs."""
        from pgferry.sqltext.features import extension

        return extension(self.kind, self.node)

    @property
    def index_table(self) -> str | None:
        """The table of a ``CREATE INDEX CONCURRENTLY`` (as written: schema only when
        given), for the cleanup of an INVALID index a failed build left behind."""
        if self.kind != "IndexStmt" or not self.node.get("concurrent"):
            return None
        rv = self.node.get("relation") or {}
        return ".".join(p for p in (rv.get("schemaname"), rv.get("relname")) if p) or None

    @property
    def index_name(self) -> tuple[str | None, str, str] | None:
        """(schema, index, table) of a named ``CREATE INDEX CONCURRENTLY``."""
        table = self.index_table
        name = self.node.get("idxname")
        if table is None or not name:
            return None
        return (self.node.get("relation") or {}).get("schemaname"), str(name), table

    @property
    def table_lock(self) -> tuple[str, str] | None:
        """(``schema.table``, lock mode) it takes on the table it acts on, if weighed."""
        return classify.table_lock(self.kind, self.node)


@dataclass
class SqlFile:
    """A parsed file: its text and bytes, its statements, how it runs."""

    path: str
    text: str
    data: bytes
    statements: list[Statement] = field(default_factory=list)
    #: why the file runs the way it does, when that is not obvious (plan and up show them)
    notes: list[str] = field(default_factory=list)
    #: no statement needs to run outside a transaction
    transactional: bool = True
    _bols: list[int] | None = field(default=None, repr=False)  # byte offset of each line

    def text_at(self, start: int, end: int) -> str:
        return self.data[start:end].decode("utf-8", "replace")

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column in characters) of a byte offset; O(log lines) in big files."""
        data = self.data
        offset = max(0, min(offset, len(data)))
        if len(data) <= 65536:  # a C-level scan beats building a line index
            line = data.count(b"\n", 0, offset) + 1
            bol = data.rfind(b"\n", 0, offset) + 1
        else:
            if self._bols is None:
                self._bols = [0]
                find = data.find
                i = find(b"\n")
                while i >= 0:
                    self._bols.append(i + 1)
                    i = find(b"\n", i + 1)
            line = bisect_right(self._bols, offset)
            bol = self._bols[line - 1]
        if len(data) == len(self.text):  # ASCII: bytes are characters
            return line, offset - bol + 1
        return line, len(data[bol:offset].decode("utf-8", "replace")) + 1


def split(
    text: str, path: str, data: bytes | None = None, *, pg_major: int | None = None
) -> SqlFile:
    """Parse ``text`` (``data``: its UTF-8 bytes, when the caller has them) into a
    :class:`SqlFile`; :class:`~pgferry.errors.SqlParseError` names ``path``, the line and
    the parser's message. ``pg_major``: the server's major version, when known and older
    than 12 (there ``ALTER TYPE ... ADD VALUE`` cannot run in a transaction at all)."""
    data = text.encode("utf-8") if data is None else data
    pg = parser.parser()
    try:
        tree = parser.tree(text)
    except pg.ParseError as e:
        message, pos = parser.error_at(e)
        line = text.count("\n", 0, pos) + 1 if pos is not None else None
        at = f":{line}" if line else ""
        raise SqlParseError(
            f"{path}{at}: {message}", file=path, line=line, parser_message=message
        ) from None
    f = SqlFile(path, text, data)
    out = f.statements
    lead = _LEAD.match
    non_tx = classify.non_tx
    enums = control = False
    for i, raw in enumerate(tree.get("stmts", ())):
        loc = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0)
        end = loc + length if length else len(data.rstrip())
        start = lead(data, loc).end()  # type: ignore[union-attr]
        kind, body = next(iter(raw["stmt"].items()))
        out.append(Statement(kind, body, start, max(end, start), i, data, non_tx(kind, body)))
        if kind == "AlterEnumStmt":
            enums = True
        elif kind == "TransactionStmt":
            control = True
    if enums:
        _enum_additions(f, pg_major)
    _transactions(f, control)
    return f


def _enum_additions(f: SqlFile, pg_major: int | None) -> None:
    """An ``ADD VALUE`` whose label a later statement uses leaves the transaction."""
    stmts = f.statements
    for i, st in enumerate(stmts):
        label = classify.adds_enum_value(st.kind, st.node)
        if label is None:
            continue
        if pg_major is not None and pg_major < 12:
            st.non_tx = "ALTER TYPE ... ADD VALUE (PostgreSQL 11 and older)"
            continue
        user = next((s for s in stmts[i + 1 :] if label in classify.string_constants(s.node)), None)
        if user is None:
            continue
        st.non_tx = f"ALTER TYPE ... ADD VALUE '{label}' used at line {user.line}"
        f.notes.append(
            f"line {st.line} adds enum value '{label}' and line {user.line} uses it: "
            "PostgreSQL cannot use a new enum value before the transaction that added it "
            "commits, so this file runs outside a transaction, statement by statement; move "
            "the use into a later file to keep this one atomic"
        )


def _transactions(f: SqlFile, control: bool) -> None:
    """Which statements run inside a transaction (the file's, or an explicit block)."""
    f.transactional = transactional = not any(s.non_tx for s in f.statements)
    if not control:  # no BEGIN/COMMIT in the file: the file's verdict is every statement's
        if transactional:
            for st in f.statements:
                st.in_tx = True
        return
    depth = 0
    for st in f.statements:
        st.explicit_tx = depth > 0
        st.in_tx = st.explicit_tx or transactional
        ctl = classify.tx_control(st.kind, st.node)
        if ctl == "begin":  # PostgreSQL does not nest BEGIN (a second one only warns)
            depth = 1
        elif ctl == "end":
            depth = 0

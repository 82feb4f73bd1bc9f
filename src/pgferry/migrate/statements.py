"""A migration file as the runner runs it: the shared SQL front end, plus the runner's rule.

Contract (pure apart from the file read :func:`~pgferry.migrate.files.scan` did):

- :func:`parse_file` splits a migration with the one SQL front end
  (:func:`pgferry.sqltext.model.split`: the same statements, lines and transaction
  verdict the lint gate sees) into a :class:`ParsedFile`. A file that does not parse
  raises :class:`~pgferry.errors.SqlParseError` naming the file, the line and the
  parser's message, so ``up`` stops before anything runs.
- A file holding a statement that cannot run in a transaction block is
  *non-transactional*: the runner runs it statement by statement in autocommit mode and
  records progress. ``ALTER TYPE ... ADD VALUE`` runs inside the file's transaction
  (allowed since PostgreSQL 12) unless a later statement of the same file uses the new
  label; then :attr:`ParsedFile.notes` says why the file runs statement by statement.
- ``BEGIN``/``COMMIT``/``ROLLBACK`` inside a file are refused (BadInput): the runner
  owns the transaction of each file.
- Each statement carries what the target must have (:attr:`Statement.extension`,
  :attr:`Statement.needs`); :mod:`pgferry.migrate.preflight` checks both against the
  target before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pgferry.errors import BadInput
from pgferry.migrate.files import MigrationFile
from pgferry.sqltext.model import SqlFile, split
from pgferry.sqltext.model import Statement as Statement


@dataclass
class ParsedFile:
    file: MigrationFile
    statements: list[Statement] = field(default_factory=list)
    #: why the file runs the way it does, when that is not obvious (shown by plan and up)
    notes: list[str] = field(default_factory=list)

    @property
    def transactional(self) -> bool:
        return not any(s.non_tx for s in self.statements)

    @property
    def mode(self) -> Literal["transaction", "autocommit"]:
        return "transaction" if self.transactional else "autocommit"

    @property
    def reasons(self) -> list[str]:
        return sorted({s.non_tx for s in self.statements if s.non_tx})


def _split(text: str, where: str) -> SqlFile:
    """``text`` split as a migration; transaction control is refused (BadInput)."""
    f = split(text, where)
    for st in f.statements:
        if st.kind == "TransactionStmt":
            raise BadInput(
                f"{where}:{st.line}: transaction control ({st.text.split()[0].upper()}) is "
                "not allowed in a migration; pgferry runs each file in its own transaction"
                " (or statement by statement when it holds CREATE INDEX CONCURRENTLY & co.)",
                file=where,
                line=st.line,
            )
    return f


def parse_sql(text: str, where: str) -> list[Statement]:
    """Split ``text`` into statements; SqlParseError names ``where``, the line and message."""
    return _split(text, where).statements


def parse_file(mf: MigrationFile, where: str | None = None) -> ParsedFile:
    """The statements of a migration file (see :func:`parse_sql`)."""
    f = _split(mf.sql, where or mf.script)
    return ParsedFile(mf, f.statements, f.notes)

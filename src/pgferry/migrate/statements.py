"""SQL files split into statements with pglast, and what cannot run in a transaction.

Contract (pure apart from reading the file once):

- :func:`parse_file` splits a migration with the real PostgreSQL parser
  (pglast) into :class:`Statement` objects carrying their text, 1-based line
  and why they cannot run inside a transaction block (``None`` when they can).
  A file that does not parse raises :class:`~pgferry.errors.SqlParseError`
  naming the file, the line and the parser's message, so ``up`` stops before
  anything runs.
- A file holding any such statement is *non-transactional*: the runner runs
  it statement by statement in autocommit mode and records progress.
- ``BEGIN``/``COMMIT``/``ROLLBACK`` inside a file are refused (BadInput): the
  runner owns the transaction of each file.
- ``ALTER TYPE ... ADD VALUE`` runs inside the file's transaction (allowed since
  PostgreSQL 12) unless a later statement of the same file uses the new label
  as a string constant: a new enum value cannot be used before the transaction
  that added it commits, so only then the file runs statement by statement,
  and :attr:`ParsedFile.notes` says why.
- Each statement carries what the target must have: the extension a ``CREATE
  EXTENSION`` needs, and syntax that needs a newer server
  (:func:`pgferry.migrate.syntax.requirements`); :mod:`pgferry.migrate.preflight`
  checks both against the target before anything runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pgferry.errors import BadInput, SqlParseError
from pgferry.migrate.files import MigrationFile


@dataclass(frozen=True)
class Statement:
    index: int  # 0-based position in the file
    text: str
    line: int  # 1-based line where the statement starts
    non_tx: str | None  # why it cannot run in a transaction block, or None
    index_name: tuple[str | None, str, str] | None = None  # (schema, index, table) for CIC
    index_table: str | None = None  # the table of a CREATE INDEX CONCURRENTLY (named or not)
    extension: str | None = None  # the extension a CREATE EXTENSION needs
    needs: tuple[tuple[str, int], ...] = ()  # (feature, PostgreSQL major) it needs

    @property
    def digest(self) -> str:
        """A short hash of the statement text (whitespace-normalised) for resume checks."""
        return hashlib.sha256(" ".join(self.text.split()).encode()).hexdigest()[:16]


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


def line_at(text: str, offset: int) -> int:
    """1-based line of a 0-based character offset."""
    return text.count("\n", 0, max(0, offset)) + 1


def _rangevar_name(rv: Any) -> str:
    return ".".join(p for p in (rv.schemaname, rv.relname) if p)


def _non_tx(stmt: Any) -> str | None:
    """Why ``stmt`` cannot run in a transaction block (PostgreSQL's rules), else None."""
    from pglast import ast

    if isinstance(stmt, ast.IndexStmt) and stmt.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if isinstance(stmt, ast.DropStmt) and stmt.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if isinstance(stmt, ast.ReindexStmt):
        params = [p.defname for p in (stmt.params or ())]
        if "concurrently" in params:
            return "REINDEX CONCURRENTLY"
        kind = stmt.kind.name if stmt.kind is not None else ""
        if kind in ("REINDEX_OBJECT_DATABASE", "REINDEX_OBJECT_SYSTEM"):
            return "REINDEX DATABASE/SYSTEM"
    if isinstance(stmt, ast.VacuumStmt) and stmt.is_vacuumcmd:
        return "VACUUM"
    if isinstance(stmt, ast.AlterTableStmt):
        for cmd in stmt.cmds or ():
            d = getattr(cmd, "def_", None)
            if isinstance(d, ast.PartitionCmd) and d.concurrent:
                return "DETACH PARTITION CONCURRENTLY"
    simple = {
        ast.CreatedbStmt: "CREATE DATABASE", ast.DropdbStmt: "DROP DATABASE",
        ast.AlterSystemStmt: "ALTER SYSTEM", ast.CreateTableSpaceStmt: "CREATE TABLESPACE",
        ast.DropTableSpaceStmt: "DROP TABLESPACE",
        ast.CreateSubscriptionStmt: "CREATE SUBSCRIPTION",
        ast.DropSubscriptionStmt: "DROP SUBSCRIPTION",
    }
    for cls, why in simple.items():
        if isinstance(stmt, cls):
            return why
    if isinstance(stmt, ast.ClusterStmt) and stmt.relation is None:
        return "CLUSTER (all tables)"
    return None


def _strings(stmt: Any) -> set[str]:
    """Every string constant in ``stmt`` (where a new enum label could be used)."""
    from pglast import ast

    from pgferry.migrate.syntax import walk

    return {str(n.val.sval) for n, _ in walk(stmt)
            if isinstance(n, ast.A_Const) and isinstance(n.val, ast.String)}


def _enum_additions(raws: Any, out: list[Statement]) -> list[str]:
    """Keep ``ADD VALUE`` in the transaction unless a later statement uses the new label;
    then mark it non-transactional. Returns a note per such fallback."""
    from pglast import ast

    notes = []
    for i, raw in enumerate(raws):
        stmt = raw.stmt
        if not (isinstance(stmt, ast.AlterEnumStmt) and stmt.newVal and not stmt.oldVal):
            continue
        user = next((out[j] for j in range(i + 1, len(raws))
                     if stmt.newVal in _strings(raws[j].stmt)), None)
        if user is None:
            continue
        why = f"ALTER TYPE ... ADD VALUE '{stmt.newVal}' used at line {user.line}"
        out[i] = replace(out[i], non_tx=why)
        notes.append(
            f"line {out[i].line} adds enum value '{stmt.newVal}' and line {user.line} uses it: "
            "PostgreSQL cannot use a new enum value before the transaction that added it "
            "commits, so this file runs outside a transaction, statement by statement; move "
            "the use into a later file to keep this one atomic")
    return notes


def parse_sql(text: str, where: str) -> list[Statement]:
    """Split ``text`` into statements; SqlParseError names ``where``, the line and message."""
    return _parse(text, where)[0]


def _parse(text: str, where: str) -> tuple[list[Statement], list[str]]:
    # imported here: commands that only read history (status, validate) start faster
    import pglast
    from pglast import ast
    from pglast.parser import ParseError

    try:
        raws = pglast.parse_sql(text)
    except ParseError as e:
        message, pos = (e.args + (None,))[:2] if e.args else ("syntax error", None)
        line = line_at(text, int(pos)) if isinstance(pos, int) else None
        at = f":{line}" if line else ""
        raise SqlParseError(f"{where}{at}: {message}", file=where, line=line,
                            parser_message=str(message)) from None
    from pgferry.migrate.syntax import requirements

    out: list[Statement] = []
    for i, raw in enumerate(raws):
        start = raw.stmt_location or 0
        body = text[start: start + raw.stmt_len] if raw.stmt_len else text[start:]
        body = body.strip()
        stmt = raw.stmt
        line = line_at(text, start + (len(text[start:]) - len(text[start:].lstrip())))
        if isinstance(stmt, ast.TransactionStmt):
            raise BadInput(
                f"{where}:{line}: transaction control ({body.split()[0].upper()}) is not allowed "
                "in a migration; pgferry runs each file in its own transaction"
                " (or statement by statement when it holds CREATE INDEX CONCURRENTLY & co.)",
                file=where, line=line,
            )
        index_name, index_table = None, None
        if isinstance(stmt, ast.IndexStmt) and stmt.concurrent and stmt.relation:
            index_table = _rangevar_name(stmt.relation)
            if stmt.idxname:
                index_name = (stmt.relation.schemaname, stmt.idxname, index_table)
        extension = stmt.extname if isinstance(stmt, ast.CreateExtensionStmt) else None
        out.append(Statement(i, body, line, _non_tx(stmt), index_name, index_table, extension,
                             tuple(requirements(stmt))))
    return out, _enum_additions(raws, out)


def parse_file(mf: MigrationFile, where: str | None = None) -> ParsedFile:
    """The statements of a migration file (see :func:`parse_sql`)."""
    statements, notes = _parse(mf.sql, where or mf.script)
    return ParsedFile(mf, statements, notes)

"""``backfills/NAME.sql``: one statement over a key range ``:lo`` .. ``:hi``.

Contract (pure apart from reading the file):

- :func:`load` reads ``[backfill] dir``/NAME.sql and returns a :class:`BackfillFile`, or
  raises :class:`~pgferry.errors.BadInput` (exit 2) in one sentence naming the file (and
  line): missing file, not exactly one statement, no ``:lo`` or ``:hi``, SQL that does
  not parse, a statement that is not ``UPDATE``, ``INSERT ... SELECT`` or ``DELETE``.
- ``:lo`` and ``:hi`` are the first and last key of a batch (both inclusive: write
  ``id BETWEEN :lo AND :hi``). They are bound as parameters, never pasted into the text:
  :meth:`BackfillFile.statement` returns the statement with psycopg placeholders
  (``%(lo)s``, ``%(hi)s``; every other ``%`` doubled).
- Which table is paged: ``-- pgferry:table schema.table`` in the header, else the
  ``UPDATE``/``DELETE`` target, else the first table of the ``INSERT``'s ``FROM``; the key
  is ``-- pgferry:key column``, else the table's single-column primary key (read from the
  catalog by the runner).
- With ``--where`` the condition is ANDed into the statement's own ``WHERE`` (through
  pglast's tree and deparser, not by pasting), so a batch's key range never touches rows
  outside it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pgferry.config import Config
from pgferry.errors import BadInput

#: a ``-- pgferry:name rest`` directive line (the same syntax as migration headers:
#: :mod:`pgferry.migrate.phases`)
DIRECTIVE_RE = re.compile(r"^\s*--\s*pgferry:(?P<name>[A-Za-z][A-Za-z-]*)(?P<rest>.*)$")
#: a backfill's name: the file backfills/NAME.sql
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")

Kind = Literal["update", "insert", "delete"]


def _end_quoted(text: str, i: int) -> int:
    """Index just past the string or quoted identifier that starts at ``i``."""
    c, n, j = text[i], len(text), i + 1
    escapes = c == "'" and i > 0 and text[i - 1] in "eE"
    while j < n:
        if escapes and text[j] == "\\":
            j += 2
        elif text[j] == c and j + 1 < n and text[j + 1] == c:
            j += 2
        elif text[j] == c:
            return j + 1
        else:
            j += 1
    return n


def _end_block_comment(text: str, i: int) -> int:
    depth, j, n = 1, i + 2, len(text)
    while j < n and depth:
        if text.startswith("/*", j):
            depth, j = depth + 1, j + 2
        elif text.startswith("*/", j):
            depth, j = depth - 1, j + 2
        else:
            j += 1
    return j


def _end_not_sql(text: str, i: int) -> int:
    """Index just past a string, quoted identifier, comment or dollar quote starting at
    ``i``; ``i`` itself when none starts there."""
    c = text[i]
    if c in "'\"":
        return _end_quoted(text, i)
    if text.startswith("--", i):
        j = text.find("\n", i)
        return len(text) if j < 0 else j
    if text.startswith("/*", i):
        return _end_block_comment(text, i)
    if c == "$":
        m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])
        if m:
            tag = m.group(0)
            j = text.find(tag, i + len(tag))
            return len(text) if j < 0 else j + len(tag)
    return i


def _token_at(text: str, i: int, mapping: dict[str, str]) -> str | None:
    n = len(text)
    for k in mapping:
        end = i + len(k)
        if not text.startswith(k, i):
            continue
        if end < n and (text[end].isalnum() or text[end] == "_"):
            continue
        if k.startswith(":") and i > 0 and text[i - 1] == ":":  # a cast: x::lo
            continue
        return k
    return None


def rewrite(text: str, mapping: dict[str, str], *, escape_percent: bool = False) -> str:
    """``text`` with each token of ``mapping`` (``:lo``, ``$1`` ...) replaced where it is SQL,
    not inside a string, quoted identifier, dollar quote or comment; with
    ``escape_percent``, every ``%`` doubled (psycopg placeholders follow)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = _end_not_sql(text, i)
        if j > i:
            out.append(text[i:j])
            i = j
            continue
        hit = _token_at(text, i, mapping)
        if hit is not None:
            out.append(mapping[hit])
            i += len(hit)
            continue
        out.append(text[i])
        i += 1
    result = "".join(out)
    if escape_percent:
        # placeholders were inserted already: double every % that is not one of them
        marks = {v: f"\x00{k}\x00" for k, v in enumerate(mapping.values())}
        for v, mark in marks.items():
            result = result.replace(v, mark)
        result = result.replace("%", "%%")
        for v, mark in marks.items():
            result = result.replace(mark, v)
    return result


_PARAMS = {":lo": "$1", ":hi": "$2"}
_PSYCOPG = {"$1": "%(lo)s", "$2": "%(hi)s"}


@dataclass
class BackfillFile:
    name: str
    path: Path
    text: str
    kind: Kind
    table: tuple[str | None, str]  # the table whose keys are paged
    target: tuple[str | None, str]  # the table written
    key: str | None = None  # from -- pgferry:key
    set_columns: list[str] = field(default_factory=list)  # UPDATE: the columns it sets
    dollar_text: str = ""  # the statement with $1/$2 (what pglast parsed)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def rel(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    def statement(self, where: str | None = None) -> str:
        """The statement to execute, with ``%(lo)s``/``%(hi)s``; ``where`` ANDed into it."""
        text = self.dollar_text
        if where:
            text = _with_where(self, where)
        return rewrite(text, _PSYCOPG, escape_percent=True)


def _rangevar(rv: Any) -> tuple[str | None, str]:
    return (rv.schemaname or None, rv.relname)


def _parse(text: str, where: str) -> Any:
    import pglast
    from pglast.parser import ParseError

    try:
        stmts = pglast.parse_sql(text)
    except ParseError as e:
        msg, pos = (e.args + (None,))[:2] if e.args else ("syntax error", None)
        line = text.count("\n", 0, int(pos)) + 1 if isinstance(pos, int) else None
        raise BadInput(
            f"{where}{f':{line}' if line else ''}: {msg}", file=where, line=line
        ) from None
    return stmts


def _with_where(bf: BackfillFile, condition: str) -> str:
    """The statement with ``condition`` ANDed into its WHERE (pglast tree and deparser)."""
    from pglast import ast
    from pglast.stream import RawStream

    stmt: Any = _parse(bf.dollar_text, bf.rel)[0].stmt
    cond = where_node(condition)
    holder: Any = stmt.selectStmt if isinstance(stmt, ast.InsertStmt) else stmt
    old = holder.whereClause
    holder.whereClause = (
        cond
        if old is None
        else ast.BoolExpr(
            boolop=ast.BoolExprType.AND_EXPR if hasattr(ast, "BoolExprType") else 0,
            args=(old, cond),
        )
    )
    return str(RawStream()(stmt))


def where_node(condition: str) -> Any:
    """``--where`` as a parse tree; BadInput when it is not one boolean expression."""
    from pglast import ast

    stmts = _parse(f"SELECT 1 WHERE {condition}", "--where")
    node = stmts[0].stmt if len(stmts) == 1 else None
    if not isinstance(node, ast.SelectStmt) or node.whereClause is None or node.fromClause:
        raise BadInput(f"--where {condition!r} is not one condition (e.g. territory = 'EU')")
    return node.whereClause


def _header(text: str, where: str) -> tuple[tuple[str | None, str] | None, str | None]:
    table: tuple[str | None, str] | None = None
    key: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        m = DIRECTIVE_RE.match(line)
        if m is None:
            continue
        name, rest = m["name"], m["rest"].strip()
        if name == "table":
            parts = rest.split(".")
            if not (1 <= len(parts) <= 2 and all(NAME_RE.fullmatch(p) for p in parts)):
                raise BadInput(f"{where}:{n}: write `-- pgferry:table schema.table`", line=n)
            table = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
        elif name == "key":
            if not NAME_RE.fullmatch(rest):
                raise BadInput(f"{where}:{n}: write `-- pgferry:key column` (one column)", line=n)
            key = rest
        elif name not in ("ignore", "ignore-file"):
            raise BadInput(
                f"{where}:{n}: unknown directive pgferry:{name} in a backfill (known: table, key)",
                line=n,
            )
    return table, key


def path_of(cfg: Config, name: str) -> Path:
    if not NAME_RE.fullmatch(name):
        raise BadInput(f"backfill name {name!r} may hold only letters, digits, '_' and '-'")
    return cfg.backfills_dir / f"{name}.sql"


def load(cfg: Config, name: str) -> BackfillFile:
    """Read and check ``backfills/NAME.sql`` (see the module docstring)."""
    from pglast import ast

    path = path_of(cfg, name)
    rel = f"{cfg.backfill.dir}/{name}.sql"
    if not path.is_file():
        known = (
            sorted(p.stem for p in cfg.backfills_dir.glob("*.sql"))
            if cfg.backfills_dir.is_dir()
            else []
        )
        raise BadInput(
            f"there is no {rel}"
            + (
                f" (there are: {', '.join(known)})"
                if known
                else f" ({cfg.backfills_dir} has no backfill)"
            )
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {rel}: {e}") from None
    table, key = _header(text, rel)
    dollar = rewrite(text, _PARAMS)
    for token in (":lo", ":hi"):
        if rewrite(text, {token: "\x00"}).count("\x00") == 0:
            raise BadInput(
                f"{rel}: the statement never uses {token}; a backfill runs over a key "
                "range: write e.g. `WHERE id BETWEEN :lo AND :hi`"
            )
    stmts = _parse(dollar, rel)
    if len(stmts) != 1:
        raise BadInput(f"{rel}: a backfill is one statement, this file has {len(stmts)}")
    raw = stmts[0]
    start = raw.stmt_location or 0
    body = dollar[start : start + raw.stmt_len] if raw.stmt_len else dollar[start:]
    stmt: Any = raw.stmt
    kind: Kind
    cols: list[str] = []
    if isinstance(stmt, ast.UpdateStmt):
        kind, target = "update", _rangevar(stmt.relation)
        cols = [str(t.name) for t in stmt.targetList or () if isinstance(t, ast.ResTarget)]
        paged = target
    elif isinstance(stmt, ast.DeleteStmt):
        kind, target = "delete", _rangevar(stmt.relation)
        paged = target
    elif (
        isinstance(stmt, ast.InsertStmt)
        and isinstance(stmt.selectStmt, ast.SelectStmt)
        and stmt.selectStmt.fromClause
        and stmt.relation is not None
    ):
        kind, target = "insert", _rangevar(stmt.relation)
        if stmt.returningClause is not None:
            raise BadInput(
                f"{rel}: drop the RETURNING clause: pgferry adds its own to record "
                "what each batch inserted"
            )
        if stmt.relation.alias is not None:
            raise BadInput(f"{rel}: write the INSERT's target table without an alias")
        first = stmt.selectStmt.fromClause[0]
        paged = _rangevar(first) if isinstance(first, ast.RangeVar) else target
        if not isinstance(first, ast.RangeVar) and table is None:
            raise BadInput(
                f"{rel}: name the table whose keys are paged with `-- pgferry:table schema.table`"
            )
    else:
        raise BadInput(
            f"{rel}: a backfill is one statement that writes rows: an UPDATE, a "
            "DELETE, or an INSERT of a query's rows"
        )
    return BackfillFile(
        name, path, text, kind, table or paged, target, key, cols, body.strip().rstrip(";").strip()
    )

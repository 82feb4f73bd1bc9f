"""Phase headers of migration files: expand and contract, and the guards of a contract.

Contract (pure: text in, data out; no connections, no clock):

- A migration file may declare, in its header (comment lines above its first
  statement), one directive per line::

      -- pgferry:phase expand | contract
      -- pgferry:after backfill NAME             the backfill NAME completed here
      -- pgferry:require SELECT ...              this query returns no row
      -- pgferry:require-no-clients CONDITION    no session matching CONDITION (a
                                                 pg_stat_activity predicate) for a while
      -- pgferry:wait 24h                        this long since the expand was applied

  ``-- pgferry:ignore`` and ``ignore-file`` are the linter's (:mod:`pgferry.lint.suppress`)
  and are left alone here.
- A file without a ``phase`` is an ordinary migration (it runs like an expand file).
  A ``contract`` file is held back by ``migrate up`` until every guard passes and
  ``--contract`` is given (:mod:`pgferry.migrate.contract`).
- :func:`parse_header` returns a :class:`Header`; anything wrong (unknown directive or
  phase, a guard without ``phase contract``, a directive below the first statement, SQL
  that does not parse, a duration that is not one) is
  :class:`~pgferry.errors.BadInput` (exit 2) in one sentence naming the file and line.
- :func:`declares_contract` is the cheap, lenient test :func:`pgferry.migrate.plan.classify`
  uses to call an unapplied contract file ``held`` (never ``ignored``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pgferry.backfill.files import DIRECTIVE_RE, NAME_RE
from pgferry.config import parse_duration
from pgferry.errors import BadInput

Phase = Literal["expand", "contract"]
GuardKind = Literal["after_backfill", "require", "require_no_clients", "wait"]

_CONTRACT_RE = re.compile(r"^\s*--\s*pgferry:phase\s+contract\s*$", re.MULTILINE)
LINT_DIRECTIVES = ("ignore", "ignore-file")
GUARDS = ("after", "require", "require-no-clients", "wait")
REQUIRE_EXAMPLE = "a query, e.g. `-- pgferry:require SELECT id FROM t WHERE new IS NULL`"


@dataclass(frozen=True)
class Guard:
    """One guard of a contract file."""

    kind: GuardKind
    arg: str  # backfill name, SQL, pg_stat_activity condition, or duration text
    line: int
    seconds: float = 0.0  # for ``wait``

    @property
    def label(self) -> str:
        return {
            "after_backfill": "after backfill",
            "require": "require",
            "require_no_clients": "require-no-clients",
            "wait": "wait",
        }[self.kind]

    def describe(self) -> str:
        return {
            "after_backfill": f"after backfill {self.arg}",
            "require": f"require {self.arg}",
            "require_no_clients": f"require-no-clients {self.arg}",
            "wait": f"wait {self.arg}",
        }[self.kind]

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "arg": self.arg, "line": self.line, "directive": self.describe()}


@dataclass(frozen=True)
class Header:
    """What a file's header declares."""

    phase: Phase | None = None
    guards: tuple[Guard, ...] = ()
    phase_line: int | None = None

    @property
    def contract(self) -> bool:
        return self.phase == "contract"

    def backfills(self) -> list[str]:
        return [g.arg for g in self.guards if g.kind == "after_backfill"]


def declares_contract(text: str) -> bool:
    """True when ``text`` has a ``-- pgferry:phase contract`` line (lenient, no validation)."""
    return "pgferry:phase" in text and _CONTRACT_RE.search(text) is not None


def _first_statement_line(lines: list[str]) -> int:
    """1-based line of the first line that is neither blank nor a ``--`` comment."""
    in_block = False
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if in_block:
            if "*/" in s:
                in_block = False
            continue
        if not s or s.startswith("--"):
            continue
        if s.startswith("/*"):
            in_block = "*/" not in s[2:]
            continue
        return n
    return len(lines) + 1


def _check_query(sql: str, where: str, what: str) -> None:
    """``sql`` must be one query that returns rows (pglast); BadInput naming ``where``."""
    import pglast
    from pglast import ast
    from pglast.parser import ParseError

    try:
        stmts = pglast.parse_sql(sql)
    except ParseError as e:
        msg = e.args[0] if e.args else "syntax error"
        raise BadInput(f"{where}: {what} does not parse: {msg}") from None
    if len(stmts) != 1:
        raise BadInput(f"{where}: {what} must be one query, not {len(stmts)} statements")
    if not isinstance(stmts[0].stmt, ast.SelectStmt):
        raise BadInput(
            f"{where}: {what} must be a query (SELECT ...) that returns the rows "
            "that are still wrong"
        )


CLIENT_QUERY = (
    "SELECT pid, usename, application_name, backend_start FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid() AND ({})"
)


def client_query(condition: str) -> str:
    """The query text a ``require-no-clients`` condition becomes, for the parser only (the
    evaluator composes :data:`CLIENT_QUERY` with :class:`psycopg.sql.SQL`)."""
    return CLIENT_QUERY.format(condition)


def parse_header(text: str, where: str) -> Header:
    """The phase and guards ``text`` declares; BadInput ``where:line: ...`` when wrong."""
    if "pgferry:" not in text:
        return Header()
    lines = text.splitlines()
    first = _first_statement_line(lines)
    phase: Phase | None = None
    phase_line: int | None = None
    guards: list[Guard] = []
    for n, line in enumerate(lines, 1):
        m = DIRECTIVE_RE.match(line)
        if m is None:
            continue
        name, rest = m["name"], m["rest"].strip()
        at = f"{where}:{n}"
        if name in LINT_DIRECTIVES:
            continue
        if name not in ("phase", *GUARDS):
            raise BadInput(
                f"{at}: unknown directive pgferry:{name} (known: phase, after "
                "backfill, require, require-no-clients, wait; pgferry:ignore is the "
                "linter's)",
                file=where,
                line=n,
            )
        if n > first:
            raise BadInput(
                f"{at}: pgferry:{name} must be in the file's header, above the "
                f"first statement (line {first})",
                file=where,
                line=n,
            )
        if name == "phase":
            if rest not in ("expand", "contract"):
                raise BadInput(
                    f"{at}: unknown phase {rest!r} (write `-- pgferry:phase expand` "
                    "or `-- pgferry:phase contract`)",
                    file=where,
                    line=n,
                )
            if phase is not None:
                raise BadInput(
                    f"{at}: a second pgferry:phase (the first is on line {phase_line})",
                    file=where,
                    line=n,
                )
            phase, phase_line = rest, n  # type: ignore[assignment]
            continue
        guards.append(_guard(name, rest, at, n))
    if guards and phase != "contract":
        g = guards[0]
        raise BadInput(
            f"{where}:{g.line}: pgferry:{g.describe().split()[0]} guards a contract "
            "file: add `-- pgferry:phase contract` to the header (guards of "
            f"{'an expand' if phase == 'expand' else 'a'} file would never be "
            "checked)",
            file=where,
            line=g.line,
        )
    return Header(phase, tuple(guards), phase_line)


def _guard(name: str, rest: str, at: str, n: int) -> Guard:
    if name == "after":
        parts = rest.split()
        if len(parts) != 2 or parts[0] != "backfill" or not NAME_RE.fullmatch(parts[1]):
            raise BadInput(
                f"{at}: write `-- pgferry:after backfill NAME` (NAME: the file "
                "backfills/NAME.sql without .sql)",
                line=n,
            )
        return Guard("after_backfill", parts[1], n)
    if name == "wait":
        try:
            seconds = parse_duration(rest).total_seconds() if rest else 0.0
        except ValueError:
            seconds = -1
        if seconds <= 0 or not re.search(r"[a-z]\s*$", rest):
            raise BadInput(
                f"{at}: pgferry:wait needs a duration with its unit, e.g. "
                f"`-- pgferry:wait 24h` (got {rest!r})",
                line=n,
            )
        return Guard("wait", rest, n, seconds)
    sql = rest.rstrip().rstrip(";").rstrip()
    if not sql:
        example = (
            REQUIRE_EXAMPLE
            if name == "require"
            else "a pg_stat_activity condition, e.g. "
            "`-- pgferry:require-no-clients application_name LIKE 'app-v1%'`"
        )
        raise BadInput(f"{at}: pgferry:{name} needs {example}", line=n)
    if name == "require":
        _check_query(sql, at, "the pgferry:require query")
        return Guard("require", sql, n)
    _check_query(client_query(sql), at, "the pgferry:require-no-clients condition")
    return Guard("require_no_clients", sql, n)

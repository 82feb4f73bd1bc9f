"""Before anything runs: does the target have what the pending files need?

Contract:

- :func:`problems` (pure) compares the parsed steps with facts about the target
  (its PostgreSQL version and the extensions it offers): every ``CREATE
  EXTENSION`` of an extension the server does not have, and every statement
  whose syntax needs a newer server (:mod:`pgferry.migrate.syntax`), one
  sentence each, with what to do.
- :func:`check` reads those facts (one read-only query) and raises
  :class:`~pgferry.errors.BadInput` (exit 2, nothing applied) listing them all.
  ``migrate plan`` and ``migrate up``/``undo`` call it after the files parse and
  before the first one runs.
- :func:`notes` (pure) is what is worth a warning in ``plan`` and ``up``: a file
  that runs outside a transaction because it uses an enum value it adds, and a
  file without a single statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from pgferry.errors import BadInput
from pgferry.pg.connect import Target, connect, map_db_error

if TYPE_CHECKING:
    from pgferry.migrate.plan import Step
    from pgferry.migrate.statements import ParsedFile

#: extensions people reach for to make UUIDs, which PostgreSQL 13+ makes itself
UUID_EXTENSIONS = ("pgcrypto", "uuid-ossp")


@dataclass(frozen=True)
class Facts:
    """What the target offers."""

    version_num: int  # server_version_num, e.g. 150004
    version: str  # e.g. "15.4"
    extensions: frozenset[str]  # available (or installed) extension names

    @property
    def major(self) -> int:
        return self.version_num // 10000


def read_facts(conn: psycopg.Connection[Any], wanted: list[str]) -> Facts:
    """The server's version and which of ``wanted`` it offers."""
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version'),"
        " ARRAY(SELECT name FROM pg_available_extensions WHERE name = ANY(%(w)s)"
        "       UNION SELECT extname FROM pg_extension WHERE extname = ANY(%(w)s))",
        {"w": wanted},
    ).fetchone()
    assert row is not None
    return Facts(int(row[0]), str(row[1]).split(" ")[0], frozenset(row[2]))


def _extension_advice(target: Target, name: str) -> str:
    uuid = (
        " (for UUIDs use gen_random_uuid(), built into PostgreSQL since 13)"
        if name in UUID_EXTENSIONS
        else ""
    )
    where = f"point environments.{target.name}.url at a server that has it"
    if target.embedded:
        return (
            f"the embedded server ships without pgcrypto and uuid-ossp: drop the extension"
            f"{uuid}, or {where}"
        )
    return f"install it on that server or ask its provider to enable it{uuid}, or {where}"


def problems(target: Target, facts: Facts, steps: list[tuple[Step, ParsedFile]]) -> list[str]:
    """One sentence per missing extension and per statement too new for the server."""
    out: list[str] = []
    for step, pf in steps:
        for st in pf.statements:
            if st.extension is not None and st.extension not in facts.extensions:
                out.append(
                    f"{step.script}:{st.line} creates extension {st.extension!r}, which the "
                    f"server of {target.name} (PostgreSQL {facts.version}) does not have; "
                    + _extension_advice(target, st.extension)
                )
            for feature, major in st.needs:
                if major > facts.major:
                    out.append(
                        f"{step.script}:{st.line} uses {feature}, which needs PostgreSQL "
                        f"{major}, but {target.name} runs PostgreSQL {facts.version}; rewrite "
                        f"it for PostgreSQL {facts.major} or upgrade the server"
                    )
    return out


def check(target: Target, steps: list[tuple[Step, ParsedFile]]) -> None:
    """BadInput (exit 2) naming everything the target lacks for ``steps``; nothing runs."""
    if not steps:
        return
    wanted = sorted({st.extension for _, pf in steps for st in pf.statements if st.extension})
    try:
        with connect(target.dsn, autocommit=True) as conn:
            facts = read_facts(conn, wanted)
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot read the server facts of {target.name}") from None
    found = problems(target, facts, steps)
    if found:
        raise BadInput(
            f"cannot migrate {target.name}, nothing was applied: " + "; ".join(found),
            problems=found,
            server_version=facts.version,
        )


def notes(steps: list[tuple[Step, ParsedFile]]) -> list[str]:
    """Warnings about how files will run (see the module docstring)."""
    out: list[str] = []
    for step, pf in steps:
        out += [f"{step.script}: {n}" for n in pf.notes]
        if not pf.statements:
            out.append(
                f"{step.script} has no SQL statement (empty, or only comments): it would "
                "be recorded as applied, and editing it afterwards is a checksum "
                "mismatch; write its SQL first"
            )
    return out

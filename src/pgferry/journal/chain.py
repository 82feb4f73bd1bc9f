"""The journal's hash chain, recomputed outside the database: ``pgferry journal verify``.

Contract: :func:`row_hash` is the SHA-256 (hex) of one row's fields, each written as
``<length>:<text>;`` (``-;`` for NULL) in the order of :data:`FIELDS`, exactly as the
insert trigger of :mod:`pgferry.journal.schema` computes it. The text of each field is
what the server's built-in casts print (``jsonb``, ``bigint``, a UTC timestamp with
microseconds), so nothing the journal's owner can redefine takes part.

:func:`check` walks the rows in id order and returns the first problem as one sentence
(None when the chain is whole):

- a row whose ``row_hash`` does not match its content was **changed**;
- a row whose ``prev_hash`` is not the previous row's hash follows a **removed** row,
  or was **inserted out of order** (its ``prev_hash`` names another row);
- a row dated before the row before it was **inserted out of order** (back-dated).

:func:`verify` reads the rows and the triggers (read-only: it never creates anything)
and returns a :class:`ChainReport`. The chain proves that nobody edited, removed or slipped
in a row *without recomputing every later hash*; anyone who owns the table can still
rewrite it all, and rows removed from the end leave a shorter chain that is whole: so
keep the head hash it prints somewhere else (a CI log, a ticket) and pass it back
(``--head``, :func:`find_kept`): a rewritten or shortened chain does not hold it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from pgferry.journal import schema

#: the fields in hash order, as SQL expressions over pgferry.journal_log
FIELDS = (
    "id::text",
    "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')",
    "phase",
    "run_id::text",
    "os_user",
    "db_role",
    "env",
    "command",
    "arguments::text",
    "outcome",
    "exit_code::text",
    "duration_ms::text",
    "error",
    "details::text",
    "prev_hash",
)


# FIELDS written out (a test checks they agree)
_ROWS_SQL = """
SELECT id, at, id::text, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), phase,
       run_id::text, os_user, db_role, env, command, arguments::text, outcome,
       exit_code::text, duration_ms::text, error, details::text, prev_hash, row_hash
FROM pgferry.journal_log ORDER BY journal_log.id
"""


def row_hash(fields: list[str | None]) -> str:
    """The chain hash of one row from its fields' text (see the module docstring)."""
    text = "".join("-;" if f is None else f"{len(f)}:{f};" for f in fields)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Row:
    id: int
    at: datetime
    fields: list[str | None]
    prev_hash: str
    row_hash: str


def check(rows: list[Row]) -> str | None:
    """The first break in the chain, in one sentence, or None."""
    by_hash = {r.row_hash: r for r in rows}
    prev: Row | None = None
    for r in rows:
        if row_hash(r.fields) != r.row_hash:
            return (
                f"row {r.id} was changed after it was written: its hash does not match its content"
            )
        want = prev.row_hash if prev else ""
        if r.prev_hash != want:
            other = by_hash.get(r.prev_hash)
            if other is not None and other is not r:
                return (
                    f"row {r.id} was inserted out of order: it chains to row {other.id}, "
                    f"not to row {prev.id if prev else 'none'} before it"
                )
            before = f"between row {prev.id} and row {r.id}" if prev else f"before row {r.id}"
            return f"a row was removed {before}: row {r.id} chains to a row that is gone"
        if prev is not None and r.at < prev.at:
            return (
                f"row {r.id} was inserted out of order: it is dated {r.at.isoformat()}, "
                f"before row {prev.id} ({prev.at.isoformat()})"
            )
        prev = r
    return None


@dataclass
class ChainReport:
    exists: bool
    rows: int = 0
    head: str | None = None
    problems: list[str] = field(default_factory=list)
    #: with a head kept elsewhere (``--head``): the row it is, and the rows written since
    kept_row: int | None = None
    since: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exists": self.exists,
            "rows": self.rows,
            "head": self.head,
            "problems": self.problems,
            **({"kept_row": self.kept_row, "rows_since": self.since} if self.kept_row else {}),
        }


def find_kept(rows: list[Row], kept: str) -> tuple[int, int] | str:
    """Where the head kept elsewhere (a hash, or its first 12+ hex digits) is in the chain:
    (its row id, rows written since), or the problem when it is not there. Pure.

    The chain alone cannot tell rows removed from its *end* (the last row is then just
    another head) nor a chain rewritten whole; a head kept before can.
    """
    at = [i for i, r in enumerate(rows) if r.row_hash.startswith(kept)]
    if len(at) == 1:
        return rows[at[0]].id, len(rows) - 1 - at[0]
    return (
        f"the head kept ({kept}) is not a row of this journal: rows were removed from its "
        "end since it was kept, or the whole chain was rewritten"
    )


def verify(conn: psycopg.Connection[Any], kept: str | None = None) -> ChainReport:
    """Recompute the chain of the journal on ``conn`` and check its triggers (read-only);
    with ``kept`` (a head printed earlier, lower-case hex), check that it is still in it."""
    kind, log, triggers = schema.state(conn)
    if not log:
        if kind is None:
            return ChainReport(exists=False)
        return ChainReport(
            exists=True,
            problems=[
                "the journal has the layout before the hash chain, so nothing can be verified; "
                "the next pgferry command that writes to this database upgrades it"
            ],
        )
    cur = conn.execute(_ROWS_SQL)
    rows = [
        Row(r[0], r[1], list(r[2 : 2 + len(FIELDS)]), r[2 + len(FIELDS) - 1], r[-1])
        for r in cur.fetchall()
    ]
    rep = ChainReport(exists=True, rows=len(rows), head=rows[-1].row_hash if rows else None)
    missing = [t for t in schema.TRIGGERS if t not in triggers]
    if missing:
        rep.problems.append(
            f"trigger {', '.join(missing)} of pgferry.journal_log was dropped or disabled, "
            "so rows could be changed or removed unseen; the next pgferry command that writes "
            "here re-creates it"
        )
    broken = check(rows)
    if broken:
        rep.problems.append(broken)
    if kept is not None:
        found = find_kept(rows, kept)
        if isinstance(found, str):
            rep.problems.append(found)
        else:
            rep.kept_row, rep.since = found
    return rep

"""Sequences after the data: move every synced column's sequence forward, never back.

Contract: :func:`advance` sets each target sequence owned by a synced column
to the greatest of the source sequence's value (read in the run's snapshot
transaction), the target's ``max(column)`` and the target sequence's own
value, so the next ``nextval`` on the target never collides with a synced row
and a sequence never moves backwards. ``TablePlan.sequences`` holds
``"target_seq|source_seq"`` per column (set by the engine).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgferry.errors import OperationFailed
from pgferry.pg.connect import connect
from pgferry.sync.copy import table_ident
from pgferry.sync.plan import TablePlan


def _ident(qualname: str) -> sql.Identifier:
    schema, name = qualname.split(".", 1)
    return sql.Identifier(schema, name)


def _used(conn: psycopg.Connection[Any], seq: str) -> int | None:
    """The last value the sequence handed out, or None when it has not been used yet.

    ``pg_sequence_last_value`` needs USAGE or SELECT on it (the application's role has
    USAGE, for ``nextval``); reading the sequence as a relation would need SELECT.
    """
    row = conn.execute(
        "SELECT CASE WHEN has_sequence_privilege(s, 'USAGE, SELECT')"
        " THEN pg_sequence_last_value(s) END FROM CAST(%s AS regclass) AS s",
        [_ident(seq).as_string(conn)],
    ).fetchone()
    # (a role that may neither use nor read it: its value is unknown, the column's max()
    # still counts)
    return int(row[0]) if row and row[0] is not None else None


def advance(src: psycopg.Connection[Any], target_dsn: str, tables: list[TablePlan]) -> int:
    """Move the target sequences of ``tables`` forward; returns how many were set.

    A sequence nobody has used on either side, in an empty column, stays unused:
    the first insert on the target still gets the sequence's start value.
    """
    todo = [(t, col, spec) for t in tables for col, spec in t.sequences.items()]
    if not todo:
        return 0
    n = 0
    refused: list[tuple[str, int | None, int]] = []  # (sequence, its value, the one wanted)
    with connect(target_dsn, autocommit=True) as tgt:
        for t, col, spec in todo:
            tseq, _, sseq = spec.partition("|")
            row = tgt.execute(
                sql.SQL("SELECT max({})::bigint FROM {}").format(
                    sql.Identifier(col), table_ident(t)
                )
            ).fetchone()
            have = _used(tgt, tseq)
            wanted = [
                v
                for v in (_used(src, sseq) if sseq else None, row[0] if row else None, have)
                if v is not None
            ]
            if not wanted or (have is not None and max(wanted) <= have):
                continue  # nothing used anywhere, or already far enough: never move back
            try:
                tgt.execute(
                    "SELECT setval(%s::regclass, %s, true)",
                    [_ident(tseq).as_string(tgt), max(wanted)],
                )
            except psycopg.errors.InsufficientPrivilege:
                # the others are still moved; this one is named below
                refused.append((tseq, have, max(wanted)))
                continue
            n += 1
        role = tgt.info.user
    if refused:
        names = [seq for seq, _, _ in refused]
        moves = [
            f"{seq} ({have if have is not None else 'unused'} -> {want})"
            for seq, have, want in refused
        ]
        raise OperationFailed(
            f"the target role {role} may not move {', '.join(moves)} forward (it needs "
            "UPDATE on the sequence): the application's next insert would take a key a synced "
            f"row holds; GRANT UPDATE ON SEQUENCE {', '.join(names)} TO {role} (or sync as "
            "the table's owner)",
            sequences=names,
        )
    return n

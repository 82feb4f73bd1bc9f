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

from pgferry.pg.connect import connect
from pgferry.sync.copy import table_ident
from pgferry.sync.plan import TablePlan


def _ident(qualname: str) -> sql.Identifier:
    schema, name = qualname.split(".", 1)
    return sql.Identifier(schema, name)


def advance(src: psycopg.Connection[Any], target_dsn: str, tables: list[TablePlan]) -> int:
    """Move the target sequences of ``tables`` forward; returns how many were set."""
    todo = [(t, col, spec) for t in tables for col, spec in t.sequences.items()]
    if not todo:
        return 0
    n = 0
    with connect(target_dsn, autocommit=True) as tgt:
        for t, col, spec in todo:
            tseq, _, sseq = spec.partition("|")
            src_value = None
            if sseq:
                row = src.execute(sql.SQL("SELECT last_value FROM {}").format(_ident(sseq))
                                  ).fetchone()
                src_value = row[0] if row else None
            tgt.execute(
                sql.SQL("SELECT setval({seq}::regclass, greatest(%s::bigint,"
                        " (SELECT max({c})::bigint FROM {t}),"
                        " (SELECT last_value FROM {s}), 1))").format(
                    seq=sql.Literal(sql.Identifier(*tseq.split(".", 1)).as_string(tgt)),
                    c=sql.Identifier(col), t=table_ident(t), s=_ident(tseq)),
                [src_value])
            n += 1
    return n

"""Rows a trigger on the target skipped without an error: dead letters, not "unchanged".

Contract: for a table where a trigger able to skip a row (``BEFORE INSERT`` or
``UPDATE``, ``FOR EACH ROW``) fires on the target (:func:`watched`), an upsert is
wrapped by :func:`pending` (before: the staged rows it should write, those absent on the
target or different there, with where each target row is) and :func:`dead_letters`
(after: those still absent, or whose target row is still the same tuple, ``tableoid``
and ``ctid``; every written row is a new tuple). Such a trigger that returns NULL skips
the row without an error, so the upsert neither writes nor returns it; the sync counted
such rows as unchanged and reported the table ``ok`` (a full load's ``COPY`` skipped
them too). They become dead letters that name the triggers, and the run exits 1; a full
load whose ``COPY`` wrote fewer rows than the source sent is rolled back and loaded
through the upserts (:func:`pgferry.sync.tables.full_load`). Both run in the caller's
transaction (and savepoint); neither commits. Where no key names the rows (a table
without one) such skips fail the table instead (:func:`unnamed`).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgferry.errors import OperationFailed
from pgferry.sync.copy import cols, table_ident
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import DeadLetter
from pgferry.sync.write import WriteContext, key_json, typed_values

PENDING = sql.Identifier("pg_temp", "pgferry_pending")


def fires(t: TablePlan) -> bool:
    """A trigger that can skip a row fires on ``t``'s target."""
    return bool(t.skipping_triggers) and t.triggers == "enable"


def watched(t: TablePlan) -> bool:
    """:func:`fires`, and rows are matched by a key (which names the rows skipped)."""
    return bool(t.key) and fires(t)


def pending(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    source: sql.Composable,
    where: sql.Composable,
    compare: tuple[sql.Composable, sql.Composable] | None,
) -> None:
    """Keep the rows of ``source`` matching ``where`` that the upsert should write.

    ``compare``: the target's and the staged row's compared columns (as the upsert's
    ``WHERE ... IS DISTINCT FROM`` has them, aliases ``pgferry_x`` and ``pgferry_s``), or
    None where the upsert only inserts (``DO NOTHING``).
    """
    differs = sql.SQL(" OR {} IS DISTINCT FROM {}").format(*compare) if compare else sql.SQL("")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(PENDING))
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {p} AS SELECT pgferry_s.*, pgferry_x.tableoid AS pgferry_oid,"
            " pgferry_x.ctid AS pgferry_ctid"
            " FROM (SELECT {v} FROM {s} WHERE {w}) AS pgferry_s ({c})"
            " LEFT JOIN {t} pgferry_x ON ({xk}) = ({sk})"
            " WHERE pgferry_x.ctid IS NULL{d}"
        ).format(
            p=PENDING,
            v=typed_values(t),
            s=source,
            w=where,
            c=cols(t.columns),
            t=table_ident(t),
            xk=cols(t.key, "pgferry_x"),
            sk=cols(t.key, "pgferry_s"),
            d=differs,
        )
    )


def dead_letters(
    conn: psycopg.Connection[Any], t: TablePlan, ctx: WriteContext
) -> list[DeadLetter]:
    """The kept rows the upsert did not write, recorded in ``pgferry.dead_letters``."""
    msg = (
        f"a trigger on the target ({', '.join(t.skipping_triggers)}) skipped this row without "
        "an error (a row-level BEFORE trigger returned NULL), so it was not written; "
        'triggers = "disable" for this table writes it'
    )
    q = sql.SQL(
        "INSERT INTO pgferry.dead_letters (run_id, source, table_name, key, row_data, error,"
        " sqlstate) SELECT %s, %s, %s, {k},"
        " to_jsonb(p) - 'pgferry_oid' - 'pgferry_ctid', %s, '' FROM {p} p"
        " WHERE CASE WHEN p.pgferry_ctid IS NULL"
        " THEN NOT EXISTS (SELECT 1 FROM {t} x WHERE ({xk}) = ({pk}))"
        " ELSE EXISTS (SELECT 1 FROM {t} x WHERE x.tableoid = p.pgferry_oid"
        " AND x.ctid = p.pgferry_ctid) END RETURNING key"
    ).format(
        k=key_json(t, "p"),
        p=PENDING,
        t=table_ident(t),
        xk=cols(t.key, "x"),
        pk=cols(t.key, "p"),
    )
    rows = conn.execute(q, [ctx.run_id, ctx.source, t.qualname, msg]).fetchall()
    return [DeadLetter(key=r[0], error=msg) for r in rows]


def unnamed(t: TablePlan, sent: int, written: int) -> OperationFailed:
    """The target wrote fewer rows than the source sent (a trigger skipped some), and no key
    names them (or the trigger was read as one that cannot skip a row)."""
    why = (
        "this table has no key to name them by"
        if not t.key
        else "pgferry did not expect it of them"
    )
    return OperationFailed(
        f"{t.qualname}: the target wrote {written} of the {sent} rows the source sent: a "
        f"trigger on the target ({', '.join(t.user_triggers) or 'none known'}) skipped the "
        f"others without an error (a row-level BEFORE trigger returned NULL), and {why}; "
        'set triggers = "disable" for this table to write them'
        + (", or give it a primary key" if not t.key else ""),
        table=t.qualname,
    )

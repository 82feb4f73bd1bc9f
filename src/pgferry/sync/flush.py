"""The rows a table's upserts put aside, written once the table's other rows are in.

Contract: :mod:`pgferry.sync.upserts` puts aside, in session temp tables, the rows that
cannot be written *yet*: in a self-referencing table a row whose parent comes in a later
batch (``pgferry_later``), and a row whose unique values another row still holds
(``pgferry_clash_N``, :mod:`pgferry.sync.swaps`). :func:`flush_later` and
:func:`flush_clashes` write them at the end of the table's writes, in the caller's
transaction (never committing); what they still cannot write becomes dead letters.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgferry.sync import swaps, upserts
from pgferry.sync.plan import TablePlan
from pgferry.sync.write import Counts, WriteContext, staging


def flush_later(conn: psycopg.Connection[Any], t: TablePlan, ctx: WriteContext) -> Counts:
    """Write the rows put aside for ``t`` (pass after pass while that makes progress).

    Rows still refused when a pass writes nothing more become dead letters.
    Runs in the caller's transaction; the side table is dropped at the end.
    """
    total = Counts()
    if conn.execute("SELECT to_regclass('pg_temp.pgferry_later')").fetchone() == (None,):
        return total
    later = sql.Identifier(upserts.LATER)
    last = -1
    while True:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(later)).fetchone()
        pending = int(row[0]) if row else 0
        if pending == 0:
            break
        stage = staging(conn, t)
        conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(stage, later))
        conn.execute(sql.SQL("TRUNCATE {}").format(later))
        c = upserts.apply(conn, t, ctx, stage, defer=pending != last)
        last = pending
        total.inserted += c.inserted
        total.updated += c.updated
        total.dead += c.dead
    conn.execute(sql.SQL("DROP TABLE {}").format(later))
    total.staged = total.inserted + total.updated + len(total.dead)
    return total


def flush_clashes(conn: psycopg.Connection[Any], t: TablePlan, ctx: WriteContext) -> Counts:
    """Write the rows of ``t`` put aside because another row held their values, now that
    every other row of the table is in: all together where a replace changes nothing but
    them (:mod:`pgferry.sync.swaps`: a swap, a chain), else each alone (a chain whose
    holder has moved since); the rest become dead letters. Runs in the caller's
    transaction; the side table is dropped."""
    aside = sql.Identifier(f"{upserts.CLASH}_{t.order}")  # the table's own: never another's rows
    if conn.execute(
        "SELECT to_regclass(%s)", [f"pg_temp.{upserts.CLASH}_{t.order}"]
    ).fetchone() == (None,):
        return Counts()
    stage = staging(conn, t)
    conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(stage, aside))
    conn.execute(sql.SQL("DROP TABLE {}").format(aside))
    why = swaps.refused(conn, t)
    if why is not None:  # each alone, as the holder of its values may have moved since
        c = upserts.apply(conn, t, ctx, stage, defer=False, unswapped=why)
    else:  # all together: a chain, a swap (the rows no replace can write are left out)
        numbered, n = upserts.numbered_rows(conn, t, stage)
        c = Counts()
        for k, err in swaps.write(conn, t, ctx, numbered, list(range(1, n + 1)), c):
            upserts.dead(conn, t, ctx, numbered, k, err, c)
    c.staged = c.inserted + c.updated + len(c.dead)
    return c

"""Source rows that share a value of the key a sync matches rows by.

Contract: :func:`check` runs, before any write, on the source's snapshot connection, for
each planned table whose key no constraint of the source keeps unique
(:attr:`pgferry.sync.plan.TablePlan.check_source_keys`: the target's primary key differs
from the source's, or ``[sync.tables] key`` names one), one aggregate over the rows the
sync reads (its ``where`` included); a table with such rows gets an error and nothing is
written to it. Matched by such a key, two source rows would be one target row: the sync
wrote one of them, reported the table ``ok``, and the other row was never on the target.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgferry.pg import errors
from pgferry.pg.catalog_types import Table
from pgferry.sync.copy import cols, table_ident, where_clause
from pgferry.sync.plan import SyncPlan, TablePlan

#: shared key values named in the error
SHOWN = 3


def shared(conn: psycopg.Connection[Any], t: TablePlan) -> list[tuple[tuple[Any, ...], int]]:
    """Up to :data:`SHOWN` key values that more than one source row of ``t`` holds, with
    how many rows hold each, the most shared first."""
    q = sql.SQL(
        "SELECT {k}, count(*) FROM {t} WHERE {w} GROUP BY {k} HAVING count(*) > 1 "
        "ORDER BY count(*) DESC LIMIT {n}"
    ).format(k=cols(t.key), t=table_ident(t), w=where_clause(t), n=sql.Literal(SHOWN))
    return [(tuple(r[:-1]), int(r[-1])) for r in conn.execute(q)]


def check(conn: psycopg.Connection[Any], plan: SyncPlan, source: dict[str, Table]) -> None:
    """Set the error of each table of ``plan`` whose source has rows sharing a key value.

    ``source``: the source's catalog (its primary keys name the source's key in the message).
    """
    for t in plan.tables:
        if not t.check_source_keys or t.error is not None:
            continue
        try:
            # a savepoint: a failing user ``where`` must not end the snapshot's transaction
            with conn.transaction():
                found = shared(conn, t)
        except psycopg.Error as e:
            if not errors.bad_query(e):  # the connection or the server: the run fails
                raise
            # (a ``where`` that does not run, a privilege missing: the table's own failure)
            t.error = f"{t.qualname}: {errors.error_message(e)}; nothing is written to this table"
            continue
        if not found:
            continue
        values = "; ".join(
            ", ".join(f"{k}={v}" for k, v in zip(t.key, key, strict=True)) + f" ({n} rows)"
            for key, n in found
        )
        theirs = source[t.qualname].primary_key
        t.error = (
            f"{t.qualname}: rows of the source share a value of the key this sync matches "
            f"rows by ({', '.join(t.key)}; the source's primary key is "
            f"{'(' + ', '.join(theirs) + ')' if theirs else 'none'}): {values}; only one "
            "row of each could be written, so nothing is written to this table; make the "
            "keys agree (apply the migrations) or name a key the source keeps unique in "
            f'[sync.tables."{t.qualname}"]'
        )

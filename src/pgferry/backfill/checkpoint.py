"""Where a backfill run starts: the key it pages by, and its checkpoint.

Contract (each function takes an autocommit connection and reads or writes only what its
name says):

- :func:`primary_key` and :func:`key_of`: the paged table's key is ``-- pgferry:key`` or its
  single-column primary key, else :class:`~pgferry.errors.BadInput`; an ``INSERT`` backfill
  that keeps before-images needs its target's primary key too.
- :func:`start`: the state row to run from (``pgferry.backfill_state``): a running, stopped
  or failed run resumes (refused with BadInput when the file changed since, unless
  ``restart``); a completed one is returned as it is; anything else (never ran, reverted,
  ``restart``) starts over with ``end_key`` = the largest key now (rows inserted later are
  the dual-write trigger's).
- :func:`estimate`: the keys left (an exact count up to a million rows, else the catalog's
  estimate of the table).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgferry.backfill import state
from pgferry.backfill.files import BackfillFile
from pgferry.errors import BadInput


def rel(name: tuple[str | None, str]) -> sql.Composable:
    return sql.Identifier(*[p for p in name if p])


def show(name: tuple[str | None, str]) -> str:
    return ".".join(p for p in name if p)


def key_ref(bf: BackfillFile, key: str) -> sql.Composable:
    return sql.Identifier(*[p for p in bf.table if p], key)


def where_sql(where: str | None) -> sql.Composable:
    """``AND (where)``: the user's own ``--where`` condition, checked by the parser first."""
    return sql.SQL(" AND ({})").format(sql.SQL(where)) if where else sql.SQL("")


def primary_key(conn: psycopg.Connection[Any], table: tuple[str | None, str]) -> list[str]:
    """The primary key columns of ``table`` ([] without one); BadInput when it is missing."""
    reg = conn.execute("SELECT to_regclass(%s)", [rel(table).as_string(conn)]).fetchone()
    if reg is None or reg[0] is None:
        raise BadInput(f"table {show(table)} does not exist here")
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary"
        " ORDER BY array_position(i.indkey, a.attnum)",
        [reg[0]],
    ).fetchall()
    return [str(r[0]) for r in rows]


def key_of(
    conn: psycopg.Connection[Any], bf: BackfillFile, keep_images: bool
) -> tuple[str, list[str]]:
    """(the key to page by, the primary key of the table written)."""
    pk = primary_key(conn, bf.table)
    if bf.key:
        key = bf.key
    elif len(pk) == 1:
        key = pk[0]
    else:
        what = "has no primary key" if not pk else f"has a primary key of {len(pk)} columns"
        raise BadInput(
            f"{bf.rel}: table {show(bf.table)} {what}; name a unique, not-null "
            "column to page by with `-- pgferry:key column`"
        )
    if bf.kind == "insert":
        pk = primary_key(conn, bf.target)
        if not pk and keep_images:
            raise BadInput(
                f"{bf.rel}: {show(bf.target)} has no primary key, so what a batch "
                "inserted cannot be recorded; give it one, or set [backfill] "
                "keep_before_images = false"
            )
    return key, pk


def start(
    conn: psycopg.Connection[Any],
    bf: BackfillFile,
    key: str,
    scope: str,
    where: str | None,
    run_id: str,
    batch_size: int,
    restart: bool,
) -> state.BackfillState:
    """The state to run from (see the module docstring)."""
    st = state.read(conn, bf.name, scope)
    if st is not None and not restart:
        if st.checksum != bf.checksum and st.status in ("running", "stopped", "failed"):
            raise BadInput(
                f"{bf.rel} changed since its run started at {st.started_at:%Y-%m-%d %H:%M}: "
                "resuming would mix two statements; pass --restart to start over (its "
                "batches so far stay as they are)"
            )
        if st.status in ("running", "stopped", "failed"):
            conn.execute(
                "UPDATE pgferry.backfill_state SET status = 'running', run_id = %s,"
                " error = NULL, updated_at = clock_timestamp() WHERE name = %s AND scope = %s",
                [run_id, bf.name, scope],
            )
            st.status = "running"
            return st
        if st.status == "completed":
            return st
    end = conn.execute(
        sql.SQL("SELECT max({k})::text FROM {t} WHERE true{w}").format(
            k=key_ref(bf, key), t=rel(bf.table), w=where_sql(where)
        )
    ).fetchone()
    conn.execute(
        "INSERT INTO pgferry.backfill_state (name, scope, checksum, table_name, key_column,"
        " status, last_key, end_key, run_id, batch_size) VALUES"
        " (%s, %s, %s, %s, %s, 'running', NULL, %s, %s, %s)"
        " ON CONFLICT (name, scope) DO UPDATE SET checksum = excluded.checksum,"
        " table_name = excluded.table_name, key_column = excluded.key_column,"
        " status = 'running', last_key = NULL, end_key = excluded.end_key, batches = 0,"
        " rows = 0, keys = 0, estimate = NULL, run_id = excluded.run_id,"
        " batch_size = excluded.batch_size, started_at = clock_timestamp(),"
        " updated_at = clock_timestamp(), completed_at = NULL, error = NULL",
        [
            bf.name,
            scope,
            bf.checksum,
            show(bf.table),
            key,
            end[0] if end else None,
            run_id,
            batch_size,
        ],
    )
    fresh = state.read(conn, bf.name, scope)
    assert fresh is not None
    return fresh


def estimate(
    conn: psycopg.Connection[Any],
    bf: BackfillFile,
    key: str,
    where: str | None,
    st: state.BackfillState,
) -> int | None:
    """The keys left to cover (exact up to a million rows, else the catalog's estimate)."""
    if st.end_key is None:
        return 0
    row = conn.execute(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
        [rel(bf.table).as_string(conn)],
    ).fetchone()
    if row and row[0] is not None and row[0] > 1_000_000:
        return int(row[0])
    after = (
        sql.SQL(" AND {} > %(after)s").format(key_ref(bf, key))
        if st.last_key is not None
        else sql.SQL("")
    )
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {t} WHERE {k} <= %(end)s{a}{w}").format(
            t=rel(bf.table), k=key_ref(bf, key), a=after, w=where_sql(where)
        ),
        {"end": st.end_key, "after": st.last_key},
    ).fetchone()
    return int(row[0]) if row else None

"""Deleting target rows a sync's source no longer has, never breaking a reference.

Contract: every function runs inside the caller's open transaction on the
target connection and never commits. :func:`delete_missing` removes rows
whose key the source no longer has, after checking that no table outside the
selection still references them (:class:`ReferencedByUnselected`); every delete goes
through :func:`delete_rows`, which saves the deleted rows in ``pgferry.before_images``
by the same statement when the table keeps them. :func:`delete_all` empties a table.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgferry.errors import OperationFailed
from pgferry.sync.copy import cols, table_ident
from pgferry.sync.plan import TablePlan
from pgferry.sync.write import IMAGES, WriteContext, key_json


class ReferencedByUnselected(OperationFailed):
    """A delete would break (or cascade into) a table outside the selection."""


def _referenced(
    conn: psycopg.Connection[Any],
    other: str,
    fk_cols: tuple[str, ...],
    ref_cols: tuple[str, ...],
    doomed: sql.Composable,
    params: list[Any],
    spared: tuple[str, ...] = (),
) -> bool:
    """A row of ``other`` references one of ``doomed`` (a ``SELECT`` of the rows, aliased
    ``t``, the caller will delete) through ``fk_cols``; with ``spared`` (the key of the
    table itself), a row not among ``doomed`` itself."""
    schema, name = other.split(".", 1)
    own: sql.Composable = sql.SQL("")
    args = list(params)
    if spared:
        own = sql.SQL(" AND ({k}) NOT IN (SELECT {k2} FROM ({d}) t)").format(
            k=cols(spared, "u"), k2=cols(spared, "t"), d=doomed
        )
        args += params
    q = sql.SQL(
        "SELECT 1 FROM {o} u WHERE ({fk}) IN (SELECT {ref} FROM ({d}) t){own} LIMIT 1"
    ).format(
        o=sql.Identifier(schema, name),
        fk=cols(fk_cols, "u"),
        ref=cols(ref_cols, "t"),
        d=doomed,
        own=own,
    )
    return conn.execute(q, args).fetchone() is not None


def check_unselected(
    conn: psycopg.Connection[Any], t: TablePlan, doomed: sql.Composable, params: list[Any]
) -> None:
    """Fail when a table outside the selection references a row about to be deleted.

    ``doomed`` is a ``SELECT`` of the rows (aliased ``t``) the caller will delete.
    """
    for other, fk_cols, ref_cols in t.referenced_by_unselected:
        if _referenced(conn, other, fk_cols, ref_cols, doomed, params):
            raise ReferencedByUnselected(
                f"{t.qualname}: rows deleted at the source are still referenced by {other}, "
                f"which is not in the selection; add {other} to --tables or delete those rows "
                "there first (nothing was changed in this table)",
                table=t.qualname,
                referenced_by=other,
            )


class ActsOnRowsKept(OperationFailed):
    """A delete would make a foreign key of the target (ON DELETE CASCADE, SET NULL or SET
    DEFAULT) change rows of a synced table that still reference the deleted rows."""


_ACTIONS = {"c": "ON DELETE CASCADE would delete", "n": "ON DELETE SET NULL would change",
            "d": "ON DELETE SET DEFAULT would change"}  # fmt: skip


def check_acting(
    conn: psycopg.Connection[Any], t: TablePlan, doomed: sql.Composable, params: list[Any]
) -> None:
    """Fail when a foreign key of the target that acts on a delete (``t.acting_on_delete``)
    would change rows that reference a row about to be deleted and are not deleted
    themselves.

    The children are compared and their deletes done first, so rows still referencing a
    deleted row are rows the source keeps: moved to another parent (the caller retries
    the delete after the loads, as it does a delete a foreign key refuses), or still
    referencing it where the source has no such foreign key (drift). Before this check
    the delete went through: the target lost those rows, and the sync said ok.
    """
    for other, fk_cols, ref_cols, action in t.acting_on_delete:
        own = other == t.qualname  # rows of the table itself: those not deleted too
        if own and not t.key:
            continue
        spared = t.key if own else ()
        if _referenced(conn, other, fk_cols, ref_cols, doomed, params, spared):
            raise ActsOnRowsKept(
                f"{t.qualname}: rows deleted at the source are still referenced by rows of "
                f"{other} that the source keeps, and the target's foreign key on "
                f"{other} ({', '.join(fk_cols)}) {_ACTIONS[action]} them; the source has no "
                "such foreign key (apply the migrations, or delete or move those rows at the "
                "source first)",
                table=t.qualname,
                referenced_by=other,
            )


def delete_rows(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    ctx: WriteContext,
    where: sql.Composable,
    params: list[Any],
    *,
    check: bool = True,
) -> int:
    """Delete the rows of ``t`` (aliased ``t``) matching ``where``; how many went.

    Fails first when a table outside the selection references one of them
    (:func:`check_unselected`). With ``t.before_images`` the deleted rows are saved
    in ``pgferry.before_images`` by the same statement.
    """
    if t.skip:  # rows the conflicts step keeps as the target has them
        from pgferry.sync.conflicts import skip_filter

        where = sql.SQL("({}) AND {}").format(where, skip_filter(t, sql.Identifier("t")))
    if check:
        doomed = sql.SQL("SELECT * FROM {} t WHERE {}").format(table_ident(t), where)
        check_unselected(conn, t, doomed, params)
        check_acting(conn, t, doomed, params)
    delete = sql.SQL("DELETE FROM {} t WHERE {}").format(table_ident(t), where)
    if not t.before_images:
        cur = conn.execute(delete, params)
        return max(cur.rowcount, 0)
    q = sql.SQL(
        "WITH pgferry_d AS ({del_} RETURNING t.*), saved AS ({images} SELECT %s, %s, "
        "%s, 'delete', {kj}, to_jsonb(pgferry_d), NULL FROM pgferry_d) "
        "SELECT count(*) FROM pgferry_d"
    ).format(del_=delete, images=IMAGES, kj=key_json(t, "pgferry_d"))
    row = conn.execute(q, [*params, ctx.run_id, ctx.source, t.qualname]).fetchone()
    return int(row[0]) if row else 0


def delete_missing(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    ctx: WriteContext,
    keys: sql.Identifier,
    range_sql: sql.Composable,
    params: list[Any],
) -> int:
    """Delete target rows in ``range_sql`` whose key is not in the ``keys`` temp table."""
    match = sql.SQL("NOT EXISTS (SELECT 1 FROM {k} k WHERE ({kc}) = ({tc}))").format(
        k=keys, kc=cols(t.key, "k"), tc=cols(t.key, "t")
    )
    return delete_rows(conn, t, ctx, sql.SQL("{} AND {}").format(range_sql, match), params)


def delete_all(conn: psycopg.Connection[Any], t: TablePlan, ctx: WriteContext) -> int:
    """Empty ``t`` (full mode without a key).

    TRUNCATE (never CASCADE) when nothing references the table, readers may wait
    (``block_readers``) and no before-images are kept; otherwise a DELETE.
    """
    if not t.referenced and not t.partitioned and t.block_readers and not t.before_images:
        n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table_ident(t))).fetchone()
        # TRUNCATE (no CASCADE: nothing references it) also allows COPY FREEZE afterwards.
        conn.execute(sql.SQL("TRUNCATE {}").format(table_ident(t)))
        return int(n[0]) if n else 0
    return delete_rows(conn, t, ctx, sql.SQL("true"), [])

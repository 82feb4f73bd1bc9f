"""Applying staged rows to the target: upserts, bisected down to the rows that fail.

Contract: every function runs inside the caller's open transaction on the
target connection and never commits. Rows staged by :func:`pgferry.sync.write.staging`
are applied with :func:`apply`:
``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE row IS DISTINCT FROM``, so
unchanged rows cost no write. When the statement fails on a row (constraint
violation, bad value — any non-transient error), the batch is bisected under
savepoints until the bad rows are isolated; they go to
``pgferry.dead_letters`` and the rest is written. Transient errors propagate
so the caller can retry the whole batch. A row whose parent (in a self-referencing
table) or whose unique values (held by another row) are not free yet is put aside;
:mod:`pgferry.sync.flush` writes those at the table's end.
:func:`images_of_inserts` records the rows a ``COPY`` into an empty table inserted.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from pgferry.pg import errors as pgerrors
from pgferry.pg.connect import is_transient, redact
from pgferry.sync import skipped
from pgferry.sync.copy import cols, table_ident
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import DeadLetter
from pgferry.sync.write import (
    IMAGES,
    Counts,
    WriteContext,
    fingerprint,
    key_json,
    row_error,
    temp_table,
    typed_values,
)

LATER = "pgferry_later"
CLASH = "pgferry_clash"
_NUMBERED = "pgferry_stage_n"


def _cmp(t: TablePlan, alias: str, names: list[str]) -> sql.Composed:
    parts = []
    for c in names:
        e: sql.Composable = sql.Identifier(alias, c)
        if c in t.text_compare:  # no equality, or a looser one than identity
            e = sql.SQL("{}::text").format(e)
        if c in t.bytewise_columns:  # a nondeterministic collation: byte for byte
            e = sql.SQL("{} COLLATE {}").format(e, sql.Identifier("C"))
        parts.append(e)
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(parts))


def _upsert_sql(
    t: TablePlan, source: sql.Composable, where: sql.Composable, ctx: WriteContext | None = None
) -> sql.Composed:
    """The upsert of ``source`` rows matching ``where``: one row (inserted, updated).

    With ``t.before_images`` (and a ``ctx``), every row it changes is saved in
    ``pgferry.before_images`` by the same statement: its key, the row as it was
    (NULL for an insert) and the fingerprint of the row written. All parts of the
    statement read one snapshot, so ``old`` is the row before the upsert.
    """
    override = sql.SQL(" OVERRIDING SYSTEM VALUE") if t.identity_always else sql.SQL("")
    # aliases that a whole-row reference (to_jsonb(x)) uses are pgferry_*: a user column
    # of the same name would win over the row
    insert = sql.SQL("INSERT INTO {t} AS pgferry_t ({c}){o} SELECT {v} FROM {s} WHERE {w}").format(
        t=table_ident(t), c=cols(t.columns), o=override, s=source, w=where, v=typed_values(t)
    )
    if t.key:
        upd = _set_columns(t)
        if upd:
            conflict = sql.SQL(
                " ON CONFLICT ({k}) DO UPDATE SET {set} WHERE {a} IS DISTINCT FROM {b}"
            ).format(
                k=cols(t.key),
                set=sql.SQL(", ").join(
                    sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c))
                    for c in upd
                ),
                a=_cmp(t, "pgferry_t", upd),
                b=_cmp(t, "excluded", upd),
            )
        else:
            conflict = sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(cols(t.key))
        insert = sql.SQL("{}{}").format(insert, conflict)
    if t.before_images and ctx is not None and t.key:
        kc = cols(t.key)
        return sql.SQL(
            "WITH old AS (SELECT {kc}, to_jsonb(pgferry_o) AS pgferry_row FROM {tbl} pgferry_o "
            "WHERE ({kc}) IN "
            "(SELECT {kt} FROM {s} WHERE {w})), "
            "up AS ({ins} RETURNING {kr}, {h} AS pgferry_h), "
            "saved AS ({images} SELECT %s, %s, %s, CASE WHEN old.pgferry_row IS NULL THEN "
            "'insert' ELSE 'update' END, {kj}, old.pgferry_row, up.pgferry_h FROM up "
            "LEFT JOIN old ON ({ko}) = ({ku})) "
            "SELECT count(*) FILTER (WHERE old.pgferry_row IS NULL), "
            "count(*) FILTER (WHERE old.pgferry_row IS NOT NULL) "
            "FROM up LEFT JOIN old ON ({ko}) = ({ku})"
        ).format(
            kc=kc,
            tbl=table_ident(t),
            kt=_typed_keys(t),
            s=source,
            w=where,
            ins=insert,
            kr=cols(t.key, "pgferry_t"),
            h=fingerprint("pgferry_t"),
            images=IMAGES,
            kj=key_json(t, "up"),
            ko=cols(t.key, "old"),
            ku=cols(t.key, "up"),
        )
    if t.partitioned:  # no system columns in RETURNING there: count the changed rows only
        return sql.SQL("WITH up AS ({} RETURNING 1) SELECT count(*), 0 FROM up").format(insert)
    return sql.SQL(
        "WITH up AS ({} RETURNING (xmax = 0) AS ins) SELECT count(*) FILTER"
        " (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM up"
    ).format(insert)


def _set_columns(t: TablePlan) -> list[str]:
    """The columns an upsert's ``DO UPDATE`` sets (a key matched by a looser equality
    than identity is written in place too)."""
    return [c for c in t.loose_keys + t.value_columns if c not in t.always_columns]


def _typed_keys(t: TablePlan) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(k) for k in t.key)


def _skipping(t: TablePlan, stage: sql.Identifier) -> sql.Composable:
    """The rows of ``stage`` to write: all, or all but those the conflicts step keeps."""
    if not t.skip:
        return sql.SQL("true")
    from pgferry.sync.conflicts import skip_filter

    return skip_filter(t, stage)


def _upsert(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    source: sql.Identifier,
    where: sql.Composable,
    ctx: WriteContext,
    counts: Counts,
) -> tuple[int, int]:
    """Run the upsert of ``source`` rows matching ``where``: (inserted, updated). Where a
    trigger that can skip a row fires, the rows it skipped without an error go to
    ``counts.dead`` (:mod:`pgferry.sync.skipped`)."""
    if not t.key and skipped.fires(t):
        # no key to name the rows a trigger skips: the rows written must be the rows sent
        n = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {}").format(source, where)
        ).fetchone()
        sent = int(n[0]) if n else 0
        written = _write(conn, t, source, where, ctx)
        if sum(written) != sent:
            raise skipped.unnamed(t, sent, sum(written))
        return written
    if not skipped.watched(t):
        return _write(conn, t, source, where, ctx)
    upd = _set_columns(t)
    compare = (_cmp(t, "pgferry_x", upd), _cmp(t, "pgferry_s", upd)) if upd else None
    skipped.pending(conn, t, source, where, compare)
    written = _write(conn, t, source, where, ctx)
    counts.dead.extend(skipped.dead_letters(conn, t, ctx))
    return written


def _write(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    source: sql.Identifier,
    where: sql.Composable,
    ctx: WriteContext,
) -> tuple[int, int]:
    q = _upsert_sql(t, source, where, ctx)
    if t.before_images and ctx is not None and t.key:
        return _run(conn, q, [ctx.run_id, ctx.source, t.qualname])
    if not (t.partitioned and t.key):
        return _run(conn, q)
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM {t} x WHERE ({xk}) = ({sk})))"
            " FROM {s} s WHERE {w}"
        ).format(t=table_ident(t), xk=cols(t.key, "x"), sk=cols(t.key, "s"), s=source, w=where)
    ).fetchone()
    new = int(row[0]) if row else 0
    changed, _ = _run(conn, q)
    return new, changed - new


def _run(
    conn: psycopg.Connection[Any], q: sql.Composed, params: list[Any] | None = None
) -> tuple[int, int]:
    row = conn.execute(q, params).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def apply(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    ctx: WriteContext,
    stage: sql.Identifier,
    *,
    defer: bool | None = None,
    unswapped: str | None = None,
) -> Counts:
    """Upsert the staged rows into ``t``; bad rows are bisected out into dead letters.

    In a self-referencing table (``defer``, the default there) a row whose parent
    row is not written yet (23503) is put aside in the session's ``pgferry_later``
    table instead; :func:`pgferry.sync.flush.flush_later` writes those once the rest is
    in. A row whose values a unique or exclusion constraint finds in another row (23505,
    23P01) is put aside in ``pgferry_clash_N``;
    :func:`pgferry.sync.flush.flush_clashes` writes those once the table's other rows are
    in (``unswapped``: why they cannot be written together; such rows
    are then dead letters that say so).
    """
    n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(stage)).fetchone()
    counts = Counts(staged=int(n[0]) if n else 0)
    if counts.staged == 0:
        return counts
    try:
        with conn.transaction():
            counts.inserted, counts.updated = _upsert(
                conn, t, stage, _skipping(t, stage), ctx, counts
            )
        return counts
    except psycopg.Error as e:
        if is_transient(e) or conn.broken or not row_error(e):
            raise
    numbered, _ = numbered_rows(conn, t, stage)
    clashed: list[int] = []
    _bisect(
        conn,
        t,
        ctx,
        numbered,
        1,
        counts.staged,
        counts,
        t.self_referencing if defer is None else defer,
        clashed,
        unswapped,
    )
    if clashed:  # put aside in one statement (a masked unique column: thousands of rows)
        _put_aside(conn, t, numbered, clashed, f"{CLASH}_{t.order}")
        counts.later += len(clashed)
    return counts


def numbered_rows(
    conn: psycopg.Connection[Any], t: TablePlan, stage: sql.Identifier
) -> tuple[sql.Identifier, int]:
    """The staged rows numbered from 1 (``pgferry_n``), to bisect and to name them by;
    and how many there are."""
    numbered = temp_table(
        conn,
        f"{_NUMBERED}_{t.order}",
        sql.SQL("SELECT 0::int8 AS pgferry_n, * FROM {} WITH NO DATA").format(stage),
    )
    cur = conn.execute(
        sql.SQL("INSERT INTO {} SELECT row_number() OVER (), * FROM {}").format(numbered, stage)
    )
    return numbered, max(cur.rowcount, 0)


def _bisect(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    ctx: WriteContext,
    numbered: sql.Identifier,
    lo: int,
    hi: int,
    counts: Counts,
    defer: bool,
    clashed: list[int],
    unswapped: str | None,
) -> None:
    """A row refused for a value another row holds goes to ``clashed`` (to be put aside),
    or, with ``unswapped`` (why such rows cannot be written together), is a dead letter
    that says it."""
    where = sql.SQL("pgferry_n BETWEEN {} AND {} AND {}").format(
        sql.Literal(lo), sql.Literal(hi), _skipping(t, numbered)
    )
    try:
        with conn.transaction():
            ins, upd = _upsert(conn, t, numbered, where, ctx, counts)
        counts.inserted += ins
        counts.updated += upd
        return
    except psycopg.Error as e:
        if is_transient(e) or conn.broken or not row_error(e):
            raise
        if lo == hi:
            if defer and pgerrors.foreign_key(e):
                _put_aside(conn, t, numbered, [lo])
                counts.later += 1
            elif pgerrors.clash(e) and unswapped is None:
                clashed.append(lo)
            else:
                dead(conn, t, ctx, numbered, lo, e, counts, unswapped)
            return
    mid = (lo + hi) // 2
    _bisect(conn, t, ctx, numbered, lo, mid, counts, defer, clashed, unswapped)
    _bisect(conn, t, ctx, numbered, mid + 1, hi, counts, defer, clashed, unswapped)


def _put_aside(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    numbered: sql.Identifier,
    ns: list[int],
    aside: str = LATER,
) -> None:
    items = [
        sql.SQL("CAST({c} AS text) AS {c}").format(c=sql.Identifier(c))
        if c in t.text_columns
        else sql.Identifier(c)
        for c in t.columns
    ]
    conn.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(aside), sql.SQL(", ").join(items), table_ident(t)
        )
    )
    conn.execute(
        sql.SQL("INSERT INTO {} SELECT {} FROM {} WHERE pgferry_n = ANY(%s)").format(
            sql.Identifier(aside), cols(t.columns), numbered
        ),
        [ns],
    )


def dead(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    ctx: WriteContext,
    numbered: sql.Identifier,
    n: int,
    exc: psycopg.Error,
    counts: Counts,
    unswapped: str | None = None,
) -> None:
    diag = exc.diag
    msg = redact((diag.message_primary if diag and diag.message_primary else str(exc)).strip())
    if unswapped and pgerrors.clash(exc):  # writing the rows together was not tried: why
        msg = (
            f"{msg} (a swap with another row is written as one delete and insert, not tried"
            f" here: {unswapped}; a DEFERRABLE constraint takes swaps as they are)"
        )
    sqlstate = exc.sqlstate or ""
    # the row goes from the staging table to the dead letters on the server: values keep
    # their exact text (numeric scale, timestamps) instead of a trip through Python
    q = sql.SQL(
        "INSERT INTO pgferry.dead_letters (run_id, source, table_name, key, row_data,"
        " error, sqlstate) SELECT %s, %s, %s, {},"
        " to_jsonb(pgferry_s) - 'pgferry_n', %s, %s FROM {} pgferry_s"
        " WHERE pgferry_n = %s RETURNING key"
    ).format(key_json(t, "pgferry_s"), numbered)
    row = conn.execute(q, [ctx.run_id, ctx.source, t.qualname, msg, sqlstate, n]).fetchone()
    assert row is not None
    counts.dead.append(DeadLetter(key=row[0], error=msg, sqlstate=sqlstate))


def images_of_inserts(conn: psycopg.Connection[Any], t: TablePlan, ctx: WriteContext) -> None:
    """Record every row of ``t`` as inserted by this run (after a COPY into an empty table)."""
    conn.execute(
        sql.SQL(
            "{images} SELECT %s, %s, %s, 'insert', {kj}, NULL, {h} FROM {tbl} pgferry_t"
        ).format(
            images=IMAGES,
            kj=key_json(t, "pgferry_t"),
            h=fingerprint("pgferry_t"),
            tbl=table_ident(t),
        ),
        [ctx.run_id, ctx.source, t.qualname],
    )

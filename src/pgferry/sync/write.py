"""The target side of a sync: staging tables, upserts, deletes, dead letters, triggers.

Contract: every function runs inside the caller's open transaction on the
target connection and never commits. Rows arrive in a temporary staging table
(:func:`staging`, filled by ``COPY``) and are applied with :func:`apply`:
``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE row IS DISTINCT FROM``, so
unchanged rows cost no write. When the statement fails on a row (constraint
violation, bad value — any non-transient error), the batch is bisected under
savepoints until the bad rows are isolated; they go to
``pgferry.dead_letters`` and the rest is written. Transient errors propagate
so the caller can retry the whole batch. :func:`delete_missing` removes rows
whose key the source no longer has, after checking that no table outside the
selection still references them (:class:`ReferencedByUnselected`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgferry.errors import OperationFailed
from pgferry.pg import errors as pgerrors
from pgferry.pg.connect import is_transient, redact
from pgferry.sync.copy import cols, table_ident
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import DeadLetter

STAGE = "pgferry_stage"
KEYS = "pgferry_keys"
LATER = "pgferry_later"
_NUMBERED = "pgferry_stage_n"
# Types without an equality operator, or whose equality is looser than identity (citext:
# 'Alice' = 'alice'): compare their text form, so that such a change is written.
_NO_EQ = ("json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle", "citext")


# errors a single row can cause (data exceptions, integrity violations, errors raised by
# triggers and functions: pgferry.pg.errors.ROW). Anything else (a cancel, a lost
# connection, disk full, a permission) fails the batch as a whole instead of being bisected.
row_error = pgerrors.row_error


class ReferencedByUnselected(OperationFailed):
    """A delete would break (or cascade into) a table outside the selection."""


@dataclass
class Counts:
    inserted: int = 0
    updated: int = 0
    staged: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    #: rows of a self-referencing table put aside until the rest of the table is written
    later: int = 0

    @property
    def unchanged(self) -> int:
        return self.staged - self.inserted - self.updated - len(self.dead) - self.later


@dataclass
class WriteContext:
    """Who is writing: for dead-letter rows."""

    run_id: str
    source: str


def staging(conn: psycopg.Connection[Any], t: TablePlan, name: str = STAGE) -> sql.Identifier:
    """An empty temp table shaped like ``t``'s synced columns (dropped at commit).

    Columns in ``t.text_columns`` are ``text`` here: their values are cast to the
    target type in the upsert, row by row, so a value the target refuses (a label
    its enum lacks, a domain check, a text that is no number) fails one row, which
    is dead-lettered, instead of the whole ``COPY``.
    """
    items = [
        sql.SQL("CAST({c} AS text) AS {c}").format(c=sql.Identifier(c))
        if c in t.text_columns
        else sql.Identifier(c)
        for c in t.columns
    ]
    return _temp(
        conn,
        f"{name}_{t.order}",
        sql.SQL("SELECT {} FROM {} WITH NO DATA").format(sql.SQL(", ").join(items), table_ident(t)),
    )


def _temp(conn: psycopg.Connection[Any], name: str, shape: sql.Composable) -> sql.Identifier:
    """The temp table ``name``, made empty: created once per transaction, then truncated.

    A unit is one transaction: a table dropped and created again for every batch
    would pile up catalog entries and locks until the commit (a 2M-row full sync
    took 1.7x as long).
    """
    ident = sql.Identifier(name)
    row = conn.execute("SELECT to_regclass(%s)", [f"pg_temp.{name}"]).fetchone()
    if row and row[0]:
        conn.execute(sql.SQL("TRUNCATE {}").format(ident))
    else:
        conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS {}").format(ident, shape))
    return ident


def _typed(t: TablePlan, prefix: str | None = None) -> sql.Composable:
    """The staged columns as the target's types (text columns cast back)."""
    out: list[sql.Composable] = []
    for c in t.columns:
        ref: sql.Composable = sql.Identifier(prefix, c) if prefix else sql.Identifier(c)
        if c in t.text_columns:
            # the type text is the target's own format_type() output, not user input
            ref = sql.SQL("CAST({} AS {})").format(ref, sql.SQL(t.column_types[c]))
        out.append(ref)
    return sql.SQL(", ").join(out)


def key_staging(conn: psycopg.Connection[Any], t: TablePlan) -> sql.Identifier:
    return _temp(
        conn,
        f"{KEYS}_{t.order}",
        sql.SQL("SELECT {} FROM {} WITH NO DATA").format(cols(t.key), table_ident(t)),
    )


def _cmp(t: TablePlan, alias: str, names: list[str]) -> sql.Composed:
    parts = []
    for c in names:
        e: sql.Composable = sql.Identifier(alias, c)
        if t.column_types.get(c, "").split("(")[0].rsplit(".", 1)[-1].strip('"') in _NO_EQ:
            e = sql.SQL("{}::text").format(e)
        parts.append(e)
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(parts))


def _key_json(t: TablePlan, alias: str) -> sql.Composable:
    keys = t.key or tuple(t.columns)
    return sql.SQL("jsonb_build_object({})").format(
        sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(k), sql.Identifier(alias, k)) for k in keys
        )
    )


def _row_hash(alias: str) -> sql.Composable:
    """The fingerprint ``sync revert`` checks a row against: md5 of the row as jsonb."""
    return sql.SQL("md5(to_jsonb({})::text)").format(sql.Identifier(alias))


_IMAGES = sql.SQL(
    "INSERT INTO pgferry.before_images (run_id, source, table_name, action, key,"
    " row_data, after_hash) "
)


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
        t=table_ident(t), c=cols(t.columns), o=override, s=source, w=where, v=_typed(t)
    )
    if t.key:
        upd = [c for c in t.value_columns if c not in t.always_columns]
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
            h=_row_hash("pgferry_t"),
            images=_IMAGES,
            kj=_key_json(t, "up"),
            ko=cols(t.key, "old"),
            ku=cols(t.key, "up"),
        )
    if t.partitioned:  # no system columns in RETURNING there: count the changed rows only
        return sql.SQL("WITH up AS ({} RETURNING 1) SELECT count(*), 0 FROM up").format(insert)
    return sql.SQL(
        "WITH up AS ({} RETURNING (xmax = 0) AS ins) SELECT count(*) FILTER"
        " (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM up"
    ).format(insert)


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
    ctx: WriteContext | None = None,
) -> tuple[int, int]:
    """Run the upsert of ``source`` rows matching ``where``: (inserted, updated)."""
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
) -> Counts:
    """Upsert the staged rows into ``t``; bad rows are bisected out into dead letters.

    In a self-referencing table (``defer``, the default there) a row whose parent
    row is not written yet (23503) is put aside in the session's ``pgferry_later``
    table instead; :func:`flush_later` writes those once the rest is in.
    """
    n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(stage)).fetchone()
    counts = Counts(staged=int(n[0]) if n else 0)
    if counts.staged == 0:
        return counts
    try:
        with conn.transaction():
            counts.inserted, counts.updated = _upsert(conn, t, stage, _skipping(t, stage), ctx)
        return counts
    except psycopg.Error as e:
        if is_transient(e) or conn.broken or not row_error(e):
            raise
    numbered = _temp(
        conn,
        f"{_NUMBERED}_{t.order}",
        sql.SQL("SELECT 0::int8 AS pgferry_n, * FROM {} WITH NO DATA").format(stage),
    )
    conn.execute(
        sql.SQL("INSERT INTO {} SELECT row_number() OVER (), * FROM {}").format(numbered, stage)
    )
    _bisect(
        conn,
        t,
        ctx,
        numbered,
        1,
        counts.staged,
        counts,
        t.self_referencing if defer is None else defer,
    )
    return counts


def _bisect(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    ctx: WriteContext,
    numbered: sql.Identifier,
    lo: int,
    hi: int,
    counts: Counts,
    defer: bool,
) -> None:
    where = sql.SQL("pgferry_n BETWEEN {} AND {} AND {}").format(
        sql.Literal(lo), sql.Literal(hi), _skipping(t, numbered)
    )
    try:
        with conn.transaction():
            ins, upd = _upsert(conn, t, numbered, where, ctx)
        counts.inserted += ins
        counts.updated += upd
        return
    except psycopg.Error as e:
        if is_transient(e) or conn.broken or not row_error(e):
            raise
        if lo == hi:
            if defer and pgerrors.foreign_key(e):
                _put_aside(conn, t, numbered, lo)
                counts.later += 1
            else:
                _dead(conn, t, ctx, numbered, lo, e, counts)
            return
    mid = (lo + hi) // 2
    _bisect(conn, t, ctx, numbered, lo, mid, counts, defer)
    _bisect(conn, t, ctx, numbered, mid + 1, hi, counts, defer)


def _put_aside(
    conn: psycopg.Connection[Any], t: TablePlan, numbered: sql.Identifier, n: int
) -> None:
    items = [
        sql.SQL("CAST({c} AS text) AS {c}").format(c=sql.Identifier(c))
        if c in t.text_columns
        else sql.Identifier(c)
        for c in t.columns
    ]
    conn.execute(
        sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} AS SELECT {} FROM {} WITH NO DATA").format(
            sql.Identifier(LATER), sql.SQL(", ").join(items), table_ident(t)
        )
    )
    conn.execute(
        sql.SQL("INSERT INTO {} SELECT {} FROM {} WHERE pgferry_n = %s").format(
            sql.Identifier(LATER), cols(t.columns), numbered
        ),
        [n],
    )


def flush_later(conn: psycopg.Connection[Any], t: TablePlan, ctx: WriteContext) -> Counts:
    """Write the rows put aside for ``t`` (pass after pass while that makes progress).

    Rows still refused when a pass writes nothing more become dead letters.
    Runs in the caller's transaction; the side table is dropped at the end.
    """
    total = Counts()
    if conn.execute("SELECT to_regclass('pg_temp.pgferry_later')").fetchone() == (None,):
        return total
    later = sql.Identifier(LATER)
    last = -1
    while True:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(later)).fetchone()
        pending = int(row[0]) if row else 0
        if pending == 0:
            break
        stage = staging(conn, t)
        conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(stage, later))
        conn.execute(sql.SQL("TRUNCATE {}").format(later))
        c = apply(conn, t, ctx, stage, defer=pending != last)
        last = pending
        total.inserted += c.inserted
        total.updated += c.updated
        total.dead += c.dead
    conn.execute(sql.SQL("DROP TABLE {}").format(later))
    total.staged = total.inserted + total.updated + len(total.dead)
    return total


def _dead(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    ctx: WriteContext,
    numbered: sql.Identifier,
    n: int,
    exc: psycopg.Error,
    counts: Counts,
) -> None:
    keys = t.key or tuple(t.columns)
    diag = exc.diag
    msg = redact((diag.message_primary if diag and diag.message_primary else str(exc)).strip())
    sqlstate = exc.sqlstate or ""
    # the row goes from the staging table to the dead letters on the server: values keep
    # their exact text (numeric scale, timestamps) instead of a trip through Python
    q = sql.SQL(
        "INSERT INTO pgferry.dead_letters (run_id, source, table_name, key, row_data,"
        " error, sqlstate) SELECT %s, %s, %s, jsonb_build_object({}),"
        " to_jsonb(pgferry_s) - 'pgferry_n', %s, %s FROM {} pgferry_s"
        " WHERE pgferry_n = %s RETURNING key"
    ).format(
        sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(k), sql.Identifier("pgferry_s", k)) for k in keys
        ),
        numbered,
    )
    row = conn.execute(q, [ctx.run_id, ctx.source, t.qualname, msg, sqlstate, n]).fetchone()
    assert row is not None
    counts.dead.append(DeadLetter(key=row[0], error=msg, sqlstate=sqlstate))


def check_unselected(
    conn: psycopg.Connection[Any], t: TablePlan, doomed: sql.Composable, params: list[Any]
) -> None:
    """Fail when a table outside the selection references a row about to be deleted.

    ``doomed`` is a ``SELECT`` of the rows (aliased ``t``) the caller will delete.
    """
    for other, fk_cols, ref_cols in t.referenced_by_unselected:
        schema, name = other.split(".", 1)
        q = sql.SQL(
            "SELECT 1 FROM {o} u WHERE ({fk}) IN (SELECT {ref} FROM ({d}) t) LIMIT 1"
        ).format(
            o=sql.Identifier(schema, name), fk=cols(fk_cols, "u"), ref=cols(ref_cols, "t"), d=doomed
        )
        if conn.execute(q, params).fetchone():
            raise ReferencedByUnselected(
                f"{t.qualname}: rows deleted at the source are still referenced by {other}, "
                f"which is not in the selection; add {other} to --tables or delete those rows "
                "there first (nothing was changed in this table)",
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
    delete = sql.SQL("DELETE FROM {} t WHERE {}").format(table_ident(t), where)
    if not t.before_images:
        cur = conn.execute(delete, params)
        return max(cur.rowcount, 0)
    q = sql.SQL(
        "WITH pgferry_d AS ({del_} RETURNING t.*), saved AS ({images} SELECT %s, %s, "
        "%s, 'delete', {kj}, to_jsonb(pgferry_d), NULL FROM pgferry_d) "
        "SELECT count(*) FROM pgferry_d"
    ).format(del_=delete, images=_IMAGES, kj=_key_json(t, "pgferry_d"))
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


def images_of_inserts(conn: psycopg.Connection[Any], t: TablePlan, ctx: WriteContext) -> None:
    """Record every row of ``t`` as inserted by this run (after a COPY into an empty table)."""
    conn.execute(
        sql.SQL(
            "{images} SELECT %s, %s, %s, 'insert', {kj}, NULL, {h} FROM {tbl} pgferry_t"
        ).format(
            images=_IMAGES,
            kj=_key_json(t, "pgferry_t"),
            h=_row_hash("pgferry_t"),
            tbl=table_ident(t),
        ),
        [ctx.run_id, ctx.source, t.qualname],
    )


def triggers(conn: psycopg.Connection[Any], t: TablePlan, enable: bool) -> None:
    """Disable (or re-enable as they were) the table's firing user triggers, by name.

    Runs inside the unit's transaction, so a crash can never leave them disabled;
    triggers the user had disabled stay disabled, ENABLE ALWAYS ones come back so.
    """
    if t.triggers != "disable" or not t.user_triggers:
        return
    for name in t.user_triggers:
        if not enable:
            verb = sql.SQL("DISABLE")
        elif t.trigger_modes.get(name) == "A":
            verb = sql.SQL("ENABLE ALWAYS")
        else:
            verb = sql.SQL("ENABLE")
        conn.execute(
            sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                table_ident(t), verb, sql.Identifier(name)
            )
        )

"""The source side of a sync: one shared snapshot, key ranges, and COPY streams.

Contract:
- :class:`SourceSnapshot` opens a coordinator connection on the source holding a
  ``REPEATABLE READ READ ONLY`` transaction, exports its snapshot
  (``pg_export_snapshot()``) and hands out worker connections that import it
  (``SET TRANSACTION SNAPSHOT``), so every read of the run sees the same
  consistent state. It also records the snapshot's in-progress transaction
  ids (``pg_snapshot_xip``), the fence the watermark strategy uses next time.
- :func:`select_sql` builds the source ``SELECT`` of a table's synced
  columns; masked columns use the masking expressions, so raw values never
  leave the source server.
- :func:`next_bound` finds the upper key of the next batch on the *source*
  (keyset pagination in the source's own ordering), so a batch is always a
  key range ``(lo, hi]`` — the unit of checkpoints and parallel work.
- :func:`pipe` streams ``COPY (...) TO STDOUT`` from the source straight into
  ``COPY ... FROM STDIN`` on the target, in binary when the column types match
  and nothing is masked, as text otherwise; rows never become Python objects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from pgferry.errors import OperationFailed
from pgferry.pg.connect import begin_repeatable_read, connect, redact
from pgferry.pg.copy_reader import blocks
from pgferry.pg.copy_writer import BoundedWriter as _Writer
from pgferry.sync.columns import text_times
from pgferry.sync.plan import TablePlan

Key = tuple[Any, ...]


class SourceSnapshot:
    """The run's source snapshot: a coordinator transaction plus importing workers.

    Every connection pins the run's session settings (:func:`pgferry.sync.session.pin`)
    before its transaction starts, and receives the masking key, if any, as a bound
    parameter.
    """

    def __init__(self, dsn: str, *, retry_for: float = 10.0, mask_key: str | None = None) -> None:
        self.dsn = dsn
        self.retry_for = retry_for
        self.mask_key = mask_key
        self.coordinator = self._connect("pgferry sync coordinator")
        c = self.coordinator
        begin_repeatable_read(c, read_only=True)
        row = c.execute(
            "SELECT pg_export_snapshot(), pg_snapshot_xmin(pg_current_snapshot())::text::bigint,"
            " ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) x),"
            " current_user, pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        ).fetchone()
        assert row is not None
        self.id: str = row[0]
        #: the snapshot's xmin (a 64-bit xid8): every transaction that could commit after
        #: this snapshot, and every subtransaction of one, has an xid at or above it
        self.xmin: int = row[1]
        self.xip: list[int] = list(row[2])
        self.role: str = row[3]
        self.xmax: int = row[4]

    def _connect(self, name: str) -> psycopg.Connection[Any]:
        from pgferry.sync import session

        c = connect(self.dsn, application_name=name, retry_for=self.retry_for)
        try:
            session.pin(c, mask_key=self.mask_key)
        except BaseException:
            c.close()
            raise
        return c

    def worker(self) -> psycopg.Connection[Any]:
        """A new source connection whose transaction reads the shared snapshot.

        :class:`~pgferry.errors.OperationFailed` (exit 3) when the snapshot is gone: its
        coordinator's session on the source ended (a failover, ``pg_terminate_backend``,
        a timeout), so no new session can read the source as the run saw it.
        """
        w = self._connect("pgferry sync worker")
        try:
            begin_repeatable_read(w, read_only=True)
            w.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.id)))
        except psycopg.Error as e:
            w.close()
            if self._alive():
                raise
            raise OperationFailed(
                "the run's snapshot of the source is gone (its session on the source "
                f"ended: {redact(str(e).splitlines()[0] if str(e) else type(e).__name__)}); "
                "the tables not synced yet were left as they were: run the sync again"
            ) from None
        return w

    def _alive(self) -> bool:
        """Does the coordinator's session, which holds the snapshot, still answer?"""
        try:
            self.coordinator.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def close(self) -> None:
        """End the coordinator's transaction (read only: nothing to keep) and its session;
        a session the source already ended is only closed."""
        try:
            with contextlib.suppress(psycopg.Error):
                self.coordinator.rollback()
        finally:
            self.coordinator.close()


def ident(qualname_schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(qualname_schema, name)


def table_ident(t: TablePlan) -> sql.Identifier:
    return sql.Identifier(t.schema, t.name)


def cols(names: Sequence[str], prefix: str | None = None) -> sql.Composed:
    if prefix:
        return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def typed_params(t: TablePlan, names: Sequence[str]) -> sql.Composed:
    """One ``CAST(%s AS type)`` per column of ``names``: a value read back as text (see
    :func:`pgferry.sync.columns.text_times`) goes to the server as its column's type. The
    type text is the target's own format_type() output, not user input; key types are the
    same on both sides (the plan stops a table where they are not)."""
    return sql.SQL(", ").join(
        sql.SQL("CAST(%s AS {})").format(sql.SQL(t.column_types[c])) for c in names
    )


def key_range(t: TablePlan, lo: Key | None, hi: Key | None) -> tuple[sql.Composable, list[Any]]:
    """``(key) > lo AND (key) <= hi`` (either side optional) and its parameters, each
    cast to its column's type (a key may be read back as text: :func:`next_bound`)."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    k = sql.SQL("({})").format(cols(t.key))
    bound = typed_params(t, t.key)
    if lo is not None:
        parts.append(sql.SQL("{} > ({})").format(k, bound))
        params.extend(lo)
    if hi is not None:
        parts.append(sql.SQL("{} <= ({})").format(k, bound))
        params.extend(hi)
    return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")), params


def where_clause(t: TablePlan, extra: sql.Composable | None = None) -> sql.Composable:
    """The table's configured ``where`` (trusted config SQL) AND ``extra``."""
    parts: list[sql.Composable] = []
    if t.where:
        # The configured filter is SQL written by the project's owner, like a migration;
        # a literal % is doubled so it survives the parameter binding every caller does.
        parts.append(sql.SQL("({})").format(sql.SQL(t.where.replace("%", "%%"))))
    if extra is not None:
        parts.append(extra)
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


def select_sql(
    t: TablePlan,
    masks: dict[str, sql.Composable],
    where: sql.Composable,
    order: bool = False,
    *,
    staged: bool = False,
) -> sql.Composed:
    """``SELECT <synced columns, masked where configured> FROM t WHERE ...``.

    ``staged``: the rows go into a staging table (:func:`pgferry.sync.write.staging`),
    whose ``text_columns`` are text: those are sent as text (in the pinned output
    settings) and cast to the target type there, row by row.
    """
    exprs: list[sql.Composable] = []
    for c in t.columns:
        e: sql.Composable = masks[c] if c in masks else sql.Identifier(c)
        if staged and c in t.text_columns:
            e = sql.SQL("CAST(({}) AS text)").format(e)
        exprs.append(
            sql.SQL("{} AS {}").format(e, sql.Identifier(c))
            if (c in masks or (staged and c in t.text_columns))
            else e
        )
    q = sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(exprs), table_ident(t), where
    )
    if order and t.key:
        q = sql.SQL("{} ORDER BY {}").format(q, cols(t.key))
    return q


def key_match(t: TablePlan, keys: Sequence[Key]) -> tuple[sql.Composable, list[Any]]:
    """``(k1, k2) IN (...)`` matching ``keys``, and its parameters.

    With the key types known and equal on both sides, the keys go as one array per
    key column through ``unnest``: several times faster to plan and run than a
    ``VALUES`` list of thousands of parameters. The type text is PostgreSQL's own
    ``format_type`` output (identifiers already quoted), not user input.
    """
    types = [t.column_types.get(k, "") for k in t.key]
    if t.same_types and all(types) and not any(typ.endswith("]") for typ in types):
        arrays = sql.SQL(", ").join(
            sql.SQL("{}::{}[]").format(sql.Placeholder(), sql.SQL(typ)) for typ in types
        )
        match = sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(cols(t.key), arrays)
        return match, [list(column) for column in zip(*keys, strict=True)]
    row = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() for _ in t.key))
    values = sql.SQL("VALUES {}").format(sql.SQL(", ").join(row for _ in keys))
    return sql.SQL("({}) IN ({})").format(cols(t.key), values), [v for k in keys for v in k]


def next_bound(
    src: psycopg.Connection[Any],
    t: TablePlan,
    lo: Key | None,
    rows: int,
    hi: Key | None = None,
    extra: tuple[sql.Composable, list[Any]] | None = None,
) -> Key | None:
    """The key of the ``rows``-th row after ``lo`` (capped by ``hi``), or None when past the end.

    When fewer than ``rows`` remain, the last remaining key is returned, so
    ``(lo, bound]`` always holds at most ``rows`` rows; None means nothing is left.
    """
    rng, params = key_range(t, lo, hi)
    if extra is not None:
        rng = sql.SQL("({}) AND {}").format(extra[0], rng)
        params = [*extra[1], *params]
    q = sql.SQL(
        "SELECT {k} FROM (SELECT {k} FROM {t} WHERE {w} ORDER BY {k} LIMIT {n}) s"
        " ORDER BY {kd} LIMIT 1"
    ).format(
        k=cols(t.key),
        t=table_ident(t),
        w=where_clause(t, rng),
        n=sql.Literal(rows),
        kd=sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier(c)) for c in t.key),
    )
    row = text_times(src).execute(q, params).fetchone()
    return tuple(row) if row is not None else None


def copy_out(
    src: psycopg.Connection[Any], select: sql.Composable, params: Sequence[Any], *, binary: bool
) -> str:
    """``COPY (select) TO STDOUT`` with ``params`` bound: COPY takes no server-side
    parameters (bound always, so that ``%%`` becomes ``%``)."""
    fmt = sql.SQL("binary" if binary else "text")
    out_q = sql.SQL("COPY ({}) TO STDOUT (FORMAT {})").format(select, fmt)
    return psycopg.ClientCursor(src).mogrify(out_q, list(params))


def copy_in(
    dest: sql.Composable, dest_cols: Sequence[str], *, binary: bool, freeze: bool = False
) -> sql.Composed:
    """``COPY dest (dest_cols) FROM STDIN`` in the format :func:`copy_out` wrote."""
    fmt = sql.SQL("binary" if binary else "text")
    opts = sql.SQL("FORMAT {}{}").format(fmt, sql.SQL(", FREEZE") if freeze else sql.SQL(""))
    return sql.SQL("COPY {} ({}) FROM STDIN ({})").format(dest, cols(dest_cols), opts)


def pipe(
    src: psycopg.Connection[Any],
    tgt: psycopg.Connection[Any],
    select: sql.Composable,
    params: Sequence[Any],
    dest: sql.Composable,
    dest_cols: Sequence[str],
    *,
    binary: bool,
    freeze: bool = False,
    on_chunk: Callable[[int], None] | None = None,
    sent: list[int] | None = None,
) -> int:
    """Stream ``select`` on ``src`` into ``dest (dest_cols)`` on ``tgt``; returns rows copied
    (the target's count; the source's is appended to ``sent``: a trigger may skip rows)."""
    in_q = copy_in(dest, dest_cols, binary=binary, freeze=freeze)
    scur, tcur = src.cursor(), tgt.cursor()
    # The source sends one message per row; read them in ~256 kB blocks (copy_reader), and
    # let a writer thread feed the target while this thread reads the source (both overlap).
    with (
        scur.copy(copy_out(src, select, params, binary=binary)) as out,
        tcur.copy(in_q, writer=_Writer(tcur)) as inp,
    ):
        for block in blocks(out, rows=sent):
            inp.write(block)
            if on_chunk is not None:
                on_chunk(len(block))
    return max(tcur.rowcount, 0)

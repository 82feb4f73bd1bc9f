"""The watermark strategy: rows changed since the last run, fenced by the snapshot.

Contract: :func:`watermark_sync` upserts the rows whose watermark column is at
or after the stored watermark minus ``overlap``, in ``(watermark, key)`` order
and batches that commit one by one with their checkpoint
(``pgferry.sync_state``). The stored watermark only moves at the end of the
table, in the same transaction as the last batch, so it is stored if and only if
every row up to it committed. Late commits: the in-progress transactions of
the previous run's snapshot (``pg_snapshot_xip``) are stored with the watermark,
and their rows are read again whatever their watermark (``xmin = ANY(...)``), so
a transaction that started early and committed after the snapshot is never
missed. Batches are ``(watermark, key)`` ranges, so an index on the watermark
column serves them. The first run into an empty table is one binary ``COPY``;
the first run into a table that already holds rows is a checksum comparison
(:mod:`pgferry.sync.compare`, called by the workers), after which
:func:`store_initial` records the snapshot's watermark.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from pgferry.sync import state, write
from pgferry.sync.copy import cols, table_ident
from pgferry.sync.copy import where_clause as src_where
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import TableResult
from pgferry.sync.tables import (
    Link,
    Progress,
    add_counts,
    full_load,
    is_empty,
    stage_range,
)


def watermark_sync(link: Link, t: TablePlan, masks: dict[str, sql.Composable],
                   res: TableResult, progress: Progress, *, overlap_s: float,
                   snapshot_xip: list[int]) -> None:
    """Upsert rows changed since the stored watermark (minus overlap), batch by batch.

    Rows are read in ``(watermark, key)`` order. The lower bound is the stored
    watermark minus ``overlap_s``; rows written by transactions that were still
    in progress at the previous run's snapshot (its ``xip``) are read as well,
    whatever their watermark, so a late commit is never missed. Each batch
    commits together with its checkpoint; the final state keeps this run's
    in-progress transactions as the fence for the next run.
    """
    assert t.watermark is not None
    src, tgt = link.src, link.tgt
    source, qn = link.ctx.source, t.qualname
    mark = state.read(tgt, source, qn, "watermark")
    link.commit()  # ends the read (keeps an --atomic transaction open)
    wm = sql.Identifier(t.watermark)
    if mark.watermark is None and not t.where and is_empty(link, t):
        # first run into an empty table: one binary COPY, then the watermark of the snapshot
        full_load(link, t, masks, res, progress)
        store_initial(link, t, snapshot_xip)
        return
    conds: list[sql.Composable] = []
    params: list[Any] = []
    if mark.watermark is not None:
        # the type name comes from the target's catalog (format_type), not from the user
        typ = sql.SQL(t.column_types.get(t.watermark) or "text")
        if any(w in (t.column_types.get(t.watermark) or "") for w in ("timestamp", "date")):
            conds.append(sql.SQL("{} >= CAST(%s AS {}) - %s * interval '1 second'").format(
                wm, typ))
            params += [mark.watermark, overlap_s]
        else:
            conds.append(sql.SQL("{} >= CAST(%s AS {})").format(wm, typ))
            params.append(mark.watermark)
    if mark.watermark is not None and mark.inflight_xids:
        fence = [str(x & 0xFFFFFFFF) for x in mark.inflight_xids]
        conds.append(sql.SQL("xmin = ANY(%s::text[]::xid[])"))
        params.append(fence)
    base = sql.SQL(" OR ").join(sql.SQL("({})").format(c) for c in conds) if conds else None
    pending = sorted(set(mark.inflight_xids) | set(snapshot_xip))
    cp = mark.checkpoint or {}
    last: list[Any] | None = cp.get("last") if cp.get("watermark") == mark.watermark else None
    order = [t.watermark, *[k for k in t.key if k != t.watermark]]
    ocols = cols(order)
    top = mark.watermark
    while True:
        where: list[sql.Composable] = [base] if base is not None else []
        p = list(params) if base is not None else []
        if last is not None:
            where.append(sql.SQL("({}) > ({})").format(ocols, sql.SQL(", ").join(
                sql.Placeholder() for _ in last)))
            p += last
        cond = sql.SQL(" AND ").join(sql.SQL("({})").format(w) for w in where) if where \
            else sql.SQL("true")
        # only the batch's last row and its size cross the wire, not the batch's keys
        q = sql.SQL("SELECT {o}, {w}::text AS pgferry_wm, count(*) OVER () FROM (SELECT {o}"
                    " FROM {t} WHERE {c} ORDER BY {o} LIMIT {lim}) b ORDER BY {od} LIMIT 1").format(
            o=ocols, w=wm, t=table_ident(t), c=src_where(t, cond), lim=sql.Literal(link.batch_size),
            od=sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier(c)) for c in order))
        row = src.execute(q, p).fetchone()
        if row is None:
            break
        last = list(row[:-2])
        top, n = row[-2], int(row[-1])
        # the batch is exactly the rows up to ``last`` in (watermark, key) order: the
        # (watermark, key) range (previous last, this last], an index range on the
        # watermark column, not a list of keys
        upper = sql.SQL("({}) <= ({})").format(ocols, sql.SQL(", ").join(
            sql.Placeholder() for _ in order))
        rng = sql.SQL("({}) AND {}").format(cond, upper)
        link.begin(t)
        stage = stage_range(link, t, masks, rng, [*p, *last])
        c = write.apply(tgt, t, link.ctx, stage)
        add_counts(res, c)
        link.end(t)
        state.write(tgt, source, qn, "watermark", state.Mark(
            mark.watermark, pending, {"watermark": mark.watermark, "last": _jsonable(last),
                                      "top": top}))
        link.commit()
        progress(n)
        if n < link.batch_size:  # a short batch was the last one
            break
    final_top = top if top is not None else mark.watermark
    if top is not None and mark.watermark is not None and top != mark.watermark:
        # rows read only through the overlap window are older: never move backwards
        typ = sql.SQL(t.column_types.get(t.watermark) or "text")
        row = src.execute(sql.SQL("SELECT greatest(CAST(%s AS {t}), CAST(%s AS {t}))::text")
                          .format(t=typ), [top, mark.watermark]).fetchone()
        final_top = row[0] if row else final_top
    state.write(tgt, source, qn, "watermark", state.Mark(final_top, list(snapshot_xip), None))
    link.commit()


def has_mark(link: Link, t: TablePlan) -> bool:
    """True when a previous run stored a watermark for ``t`` (ends the read transaction)."""
    mark = state.read(link.tgt, link.ctx.source, t.qualname, "watermark")
    link.commit()
    return mark.watermark is not None


def store_initial(link: Link, t: TablePlan, snapshot_xip: list[int]) -> None:
    """After a first complete copy: the snapshot's max watermark and its in-flight xids."""
    assert t.watermark is not None
    row = link.src.execute(sql.SQL("SELECT max({})::text FROM {}").format(
        sql.Identifier(t.watermark), table_ident(t))).fetchone()
    state.write(link.tgt, link.ctx.source, t.qualname, "watermark",
                state.Mark(row[0] if row else None, list(snapshot_xip), None))
    link.commit()


def _jsonable(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        out.append(v if v is None or isinstance(v, bool | int | float | str) else str(v))
    return out

"""The watermark strategy: rows changed since the last run, fenced by the snapshot's xmin.

Contract: :func:`watermark_sync` upserts the rows whose watermark column is at
or after the stored watermark minus ``overlap``, in ``(watermark, key)``
batches (an index on the watermark column serves them), inside the unit's
transaction; the new watermark is stored in ``pgferry.sync_state`` in that
same transaction, so it is stored if and only if the rows up to it are.

Late commits: a transaction that was still running when the previous run took
its snapshot may commit rows whose watermark is older than the one stored. The
previous snapshot's ``xmin`` is stored as the fence: every such transaction,
and every subtransaction of one (a savepoint, a nested ORM transaction, a
prepared two-phase transaction), got its xid at or after it, so rows whose
``xmin`` is at or after the fence (in modulo-2^32 order, which is exact while
fewer than 2^31 transactions separate the runs — checked, else the table is
compared instead) are read again whatever their watermark. The fence is stored
only when the snapshot had transactions in progress; otherwise none can commit
late. The first run into an empty table is one ``COPY``; the first run into a
table that already holds rows is a checksum comparison (:mod:`pgferry.sync.compare`,
called by the workers), after which :func:`store_initial` records the snapshot's
watermark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from psycopg import sql

from pgferry.sync import state
from pgferry.sync.columns import text_times
from pgferry.sync.copy import SourceSnapshot, cols, table_ident, typed_params
from pgferry.sync.copy import where_clause as src_where
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import TableResult
from pgferry.sync.tables import (
    Link,
    Progress,
    _apply,
    copy_range,
    full_load,
    is_empty,
    staged,
)

#: the modulo-2^32 xid order is exact within 2^31 transactions; keep a safety margin
_FENCE_HORIZON = 2**31 - 50_000_000


def fence_clause(fence: int) -> tuple[sql.Composable, list[Any]]:
    """``xmin`` at or after ``fence`` (a 64-bit xid), in the server's modulo-2^32 order."""
    return (
        sql.SQL(
            "(xmin::text::bigint >= 3 AND mod(xmin::text::bigint - %s + 4294967296, "
            "4294967296) < 2147483648)"
        ),
        [fence & 0xFFFFFFFF],
    )


def fence_of(snap: SourceSnapshot) -> list[int]:
    """What the next run fences on: the snapshot's xmin, when transactions were running."""
    return [snap.xmin] if snap.xip else []


def fence_usable(mark: state.Mark, snap: SourceSnapshot) -> bool:
    """False when too many transactions passed since the stored fence to trust it."""
    return not mark.inflight_xids or snap.xmax - min(mark.inflight_xids) < _FENCE_HORIZON


def _type(t: TablePlan) -> sql.Composable:
    """The watermark column's type (the target's format_type() text, not user input)."""
    assert t.watermark is not None
    return sql.SQL(t.column_types.get(t.watermark) or "text")


def _timed(t: TablePlan) -> bool:
    """The watermark is a time (timestamp, timestamptz, date): one the source's clock bounds."""
    assert t.watermark is not None
    return any(w in (t.column_types.get(t.watermark) or "") for w in ("timestamp", "date"))


def _capped(t: TablePlan, value: sql.Composable) -> sql.Composable:
    """``value`` (a watermark) as text, no later than the source transaction's clock when it
    is a time: a row stamped in the future ('infinity', a client's clock years ahead) would
    otherwise carry the mark past every real change after it, which no run would read."""
    if not _timed(t):
        return sql.SQL("({})::text").format(value)
    return sql.SQL("least({v}, CAST(now() AS {t}))::text").format(v=value, t=_type(t))


def local_time(link: Link, t: TablePlan, overlap_s: float) -> str | None:
    """A warning when the watermark is a ``timestamp without time zone`` on a source whose
    sessions start in a zone with daylight saving time (``now()`` stamps local time there),
    and ``overlap`` is under the hour that repeats when clocks go back: changes stamped in
    the repeated hour are earlier than ones a run already read, and the next run would not
    see them."""
    typ = t.source_types.get(t.watermark or "", "")
    if overlap_s >= 3600 or not (typ.startswith("timestamp") and "without" in typ):
        return None
    # the zone the source's sessions start in (database, role or server default: the
    # sync's own session pinned UTC with set_config, which leaves reset_val alone), and
    # whether its offset in January differs from July's (daylight saving time)
    row = link.src.execute(
        "SELECT z, (j AT TIME ZONE z) - (j AT TIME ZONE 'UTC') "
        "<> (s AT TIME ZONE z) - (s AT TIME ZONE 'UTC') "
        "FROM (SELECT reset_val, date_trunc('year', now()) + interval '14 days', "
        "date_trunc('year', now()) + interval '6 months 14 days' "
        "FROM pg_settings WHERE name = 'TimeZone') AS p(z, j, s)"
    ).fetchone()
    if not row or not row[1]:
        return None
    zone = row[0]
    return (
        f"watermark column {t.watermark} is a timestamp without time zone and the source's "
        f"sessions start in time zone {zone}: where the application stamps local time, "
        "the hour that repeats when clocks go back stamps changes earlier than ones a run "
        'already read, and the next run would not see them; overlap = "1h" (or a '
        "timestamptz column) covers it"
    )


def ahead(link: Link, t: TablePlan, mark: state.Mark) -> bool:
    """The stored watermark is later than the source's clock (stored before marks were
    capped, by a row stamped in the future): reading from it would skip real changes."""
    if mark.watermark is None or not _timed(t):
        return False
    row = link.src.execute(
        sql.SQL("SELECT CAST(%s AS {t}) > CAST(now() AS {t})").format(t=_type(t)),
        [mark.watermark],
    ).fetchone()
    return bool(row and row[0])


def watermark_sync(
    link: Link,
    t: TablePlan,
    masks: dict[str, sql.Composable],
    res: TableResult,
    progress: Progress,
    *,
    overlap_s: float,
    snap: SourceSnapshot,
) -> None:
    """Upsert rows changed since the stored watermark (minus overlap) and late commits.

    The caller has checked :func:`fence_usable` (else it compares the table).
    """
    assert t.watermark is not None
    src, tgt = link.src, link.tgt
    source, qn = link.ctx.source, t.qualname
    mark = state.read(tgt, source, qn, "watermark")
    wm = sql.Identifier(t.watermark)
    if mark.watermark is None and not t.where and is_empty(link, t):
        # first run into an empty table: one COPY, then the watermark of the snapshot
        full_load(link, t, masks, res, progress)
        store_initial(link, t, snap)
        return
    lower, params = _window(t, mark, overlap_s)
    if lower is not None and mark.inflight_xids:
        # rows of transactions that were running at the previous snapshot, below the window
        fence, fparams = fence_clause(min(mark.inflight_xids))
        late = sql.SQL("{} AND NOT coalesce({}, false)").format(fence, lower)
        copy_range(link, t, masks, res, late, [*fparams, *params], progress)
    if t.watermark_nullable:
        # a row without a watermark is in no window (and would cut a batch's bound, which
        # compares NULL): read every such row on every run, and keep them out of the batches
        copy_range(link, t, masks, res, sql.SQL("{} IS NULL").format(wm), [], progress)
        lower = sql.SQL("{} IS NOT NULL AND {}").format(wm, lower or sql.SQL("true"))
    order = [t.watermark, *[k for k in t.key if k != t.watermark]]
    ocols = cols(order)
    # a batch's last (watermark, key) is read back as text where Python cannot hold it
    # ('infinity'), and sent back cast to each column's type
    bound = typed_params(t, order)
    #: each batch's top watermark and row count, as its bound was read
    found: list[tuple[Any, int]] = []

    def ranges() -> Iterator[tuple[sql.Composable, list[Any]]]:  # (run by the reading thread)
        last: list[Any] | None = None
        while True:
            where: list[sql.Composable] = [lower] if lower is not None else []
            p = list(params)
            if last is not None:
                where.append(sql.SQL("({}) > ({})").format(ocols, bound))
                p += last
            cond = (
                sql.SQL(" AND ").join(sql.SQL("({})").format(w) for w in where)
                if where
                else sql.SQL("true")
            )
            batch_end = _batch_end(t, order, src_where(t, cond), link.batch_size)
            row = text_times(src).execute(batch_end, p).fetchone()
            if row is None:
                return
            last = list(row[:-2])
            found.append((row[-2], int(row[-1])))
            # the batch is exactly the rows up to ``last`` in (watermark, key) order: the
            # (watermark, key) range (previous last, this last], an index range on the
            # watermark column, not a list of keys
            upper = sql.SQL("({}) <= ({})").format(ocols, bound)
            yield sql.SQL("({}) AND {}").format(cond, upper), [*p, *last]
            if found[-1][1] < link.batch_size:  # a short batch was the last one
                return

    # the source finds and reads the next batch while the target upserts this one
    with contextlib.closing(staged(link, t, masks, ranges())) as stages:
        for k, stage in enumerate(stages):
            _apply(link, t, stage, res)
            progress(found[k][1])
    top = found[-1][0] if found else mark.watermark
    final_top = top if top is not None else mark.watermark
    if top is not None:
        # rows read only through the overlap window are older: never move backwards (nor
        # past the source's clock)
        typ = _type(t)
        row = src.execute(
            sql.SQL("SELECT {}").format(
                _capped(t, sql.SQL("greatest(CAST(%s AS {t}), CAST(%s AS {t}))").format(t=typ))
            ),
            [top, mark.watermark if mark.watermark is not None else top],
        ).fetchone()
        final_top = row[0] if row else final_top
    state.write(tgt, source, qn, "watermark", state.Mark(final_top, fence_of(snap), None))


def _window(
    t: TablePlan, mark: state.Mark, overlap_s: float
) -> tuple[sql.Composable | None, list[Any]]:
    """The rows at or after the stored watermark (a time: minus ``overlap_s``); None
    without one."""
    if mark.watermark is None:
        return None, []
    wm, typ = sql.Identifier(t.watermark or ""), _type(t)
    if _timed(t):
        lower = sql.SQL("{} >= CAST(%s AS {}) - %s * interval '1 second'").format(wm, typ)
        return lower, [mark.watermark, overlap_s]
    return sql.SQL("{} >= CAST(%s AS {})").format(wm, typ), [mark.watermark]


def _batch_end(t: TablePlan, order: list[str], where: sql.Composable, size: int) -> sql.Composed:
    """The last ``(watermark, key)`` of the next batch, its watermark as text, and its size.

    Only that one row crosses the wire, not the batch's keys.
    """
    assert t.watermark is not None
    return sql.SQL(
        "SELECT {o}, {w}::text AS pgferry_wm, count(*) OVER () FROM (SELECT {o}"
        " FROM {t} WHERE {c} ORDER BY {o} LIMIT {lim}) b ORDER BY {od} LIMIT 1"
    ).format(
        o=cols(order),
        w=sql.Identifier(t.watermark),
        t=table_ident(t),
        c=where,
        lim=sql.Literal(size),
        od=sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier(c)) for c in order),
    )


def read_mark(link: Link, t: TablePlan) -> state.Mark:
    """The stored watermark state of ``t`` (read in the unit's transaction)."""
    return state.read(link.tgt, link.ctx.source, t.qualname, "watermark")


def store_initial(link: Link, t: TablePlan, snap: SourceSnapshot) -> None:
    """After a complete copy or comparison: the snapshot's max watermark and its fence."""
    assert t.watermark is not None
    row = link.src.execute(
        sql.SQL("SELECT {} FROM {}").format(
            _capped(t, sql.SQL("max({})").format(sql.Identifier(t.watermark))), table_ident(t)
        )
    ).fetchone()
    state.write(
        link.tgt,
        link.ctx.source,
        t.qualname,
        "watermark",
        state.Mark(row[0] if row else None, fence_of(snap), None),
    )

"""A sync worker's connections: made, and made usable again after an error.

Contract: :func:`new_link` opens a :class:`~pgferry.sync.tables.Link`: a source
connection in the run's snapshot and a target writer session whose ``lock_timeout`` is
:data:`WRITER_LOCK_TIMEOUT`. :func:`heal` makes a link usable again after an error: it
rolls back, drops the records of what the unit set aside, and reconnects what broke.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from pgferry.errors import PgferryError
from pgferry.pg.connect import connect
from pgferry.sync import aside, session, write
from pgferry.sync.context import RunContext
from pgferry.sync.tables import Link

#: lock_timeout of the writer sessions (DISABLE TRIGGER, TRUNCATE of an empty table, rows)
WRITER_LOCK_TIMEOUT = "5s"


def _writer(ctx: RunContext) -> psycopg.Connection[Any]:
    c = connect(
        ctx.target.dsn, retry_for=min(ctx.retry_for, 5.0), application_name="pgferry sync writer"
    )
    try:
        session.pin(c, lock_timeout=WRITER_LOCK_TIMEOUT)
    except BaseException:
        c.close()
        raise
    return c


def new_link(ctx: RunContext) -> Link:
    tgt = _writer(ctx)
    return Link(
        ctx.snapshot.worker(),
        tgt,
        write.WriteContext(ctx.run_id, ctx.source.name),
        ctx.batch_size,
        helpers=lambda: new_link(ctx),
        parts=ctx.jobs,
        target_dsn=ctx.target.dsn,
    )


def heal(ctx: RunContext, link: Link) -> None:
    """Make ``link`` usable again after an error: roll back, reconnect what broke.

    What the unit set aside came back with the rollback: its records are dropped.
    """
    link.dirty = False
    _drop_guard(link)
    if link.recorded:
        with contextlib.suppress(PgferryError, psycopg.Error):
            aside.forget(ctx.target.dsn, link.recorded)
    link.aside.clear()
    link.recorded.clear()
    link.had_rows.clear()
    for name in ("src", "tgt"):
        conn: psycopg.Connection[Any] = getattr(link, name)
        st = conn.info.transaction_status
        inerror = st == psycopg.pq.TransactionStatus.INERROR
        if conn.broken or conn.closed or (name == "src" and inerror):
            with contextlib.suppress(psycopg.Error):
                conn.close()
            if name == "src":
                link.src = ctx.snapshot.worker()
            else:
                link.tgt = _writer(ctx)
        elif name == "tgt":
            conn.rollback()


def _drop_guard(link: Link) -> None:
    if link.guard is not None:
        link.guard.close()
        link.guard = None

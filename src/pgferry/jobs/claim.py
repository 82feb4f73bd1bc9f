"""One process carries a run at a time: a claim on the control database.

Contract: :func:`claim` holds run ``run_id`` for this process while its block runs: a
session advisory lock, on a connection of its own to the control database, that the
server releases when the process ends however it ends (a killed worker's connection
closes; a lost machine's is found dead by TCP keepalives within about half a minute).
When another process holds it, :func:`claim` raises :class:`RunElsewhere` at once.
:func:`held_elsewhere` asks the same without keeping it.

Why: the queue's environment lock keeps two *jobs* apart, but a run can be carried by
something that is not a job of that queue: ``pgferry release --resume`` on the command
line, while a worker carries the same run, or while a live worker's sweep queues it
again because the worker that had it died. Two processes would then run the same saga
steps side by side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from pgferry.errors import PgferryError
from pgferry.jobs.control import Control
from pgferry.pg.connect import connect

#: the advisory lock's first key: pgferry's runs (the second is the run id's hashtext)
_SPACE = 0x70666572  # "pfer"


class RunElsewhere(PgferryError):
    """Another process carries the run now (a worker, or another ``release --resume``)."""

    exit_code = 3
    http_status = 409


def elsewhere(run_id: str) -> RunElsewhere:
    """The refusal of a run another process carries, in one sentence."""
    return RunElsewhere(
        f"run {run_id} is being carried on by another process (a worker, or another"
        " `pgferry release --resume`); wait for it to end, or cancel it",
        run=run_id,
    )


def _try(conn: psycopg.Connection[Any], run_id: str) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", [_SPACE, run_id]).fetchone()
    return bool(row and row[0])


@contextlib.contextmanager
def claim(ctl: Control, run_id: str) -> Iterator[None]:
    """Hold ``run_id`` for this process while the block runs (see the module)."""
    with connect(ctl.dsn, autocommit=True, application_name=f"pgferry run {run_id}") as conn:
        # the server finds a vanished peer within ~10 + 3 x 5 s (TCP connections only)
        conn.execute(
            "SELECT set_config('tcp_keepalives_idle', '10', false),"
            " set_config('tcp_keepalives_interval', '5', false),"
            " set_config('tcp_keepalives_count', '3', false)"
        )
        if not _try(conn, run_id):
            raise elsewhere(run_id)
        yield  # the lock goes with the connection


def held_elsewhere(ctl: Control, run_id: str) -> bool:
    """Does another process hold ``run_id`` now? (Asked and let go at once.)"""
    with connect(ctl.dsn, autocommit=True, application_name="pgferry run check") as conn:
        if not _try(conn, run_id):
            return True
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [_SPACE, run_id])
        return False

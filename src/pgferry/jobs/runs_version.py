"""The runs' version: a value that changes whenever any run row changes, read fresh.

Contract: ``pgferry_control.runs_version`` holds one row, bumped by a statement trigger
on ``pgferry_control.runs`` in the transaction of every statement that inserts, updates
or deletes runs (:mod:`pgferry.jobs.control`), whichever process or session wrote
them: the server, a ``pgferry worker`` elsewhere, ``pgferry release`` on a laptop, SQL
by hand. Two reads that return the same value saw the same runs. (A sequence would not
do: ``nextval`` is seen before the writer commits and is not rolled back, so a reader
could pair the new value with the old rows.)

:class:`VersionReader` reads it for the coroutines of one event loop over one
connection of its own, and every value it gives a caller comes from a query that
*started after that caller asked*: whatever was committed before a request arrived is
in the version it gets (read-your-writes, also for writes of other processes).
Callers that ask while a query is in flight share the next one, so a burst of requests
costs the database one query per round trip, not one each. A failed read raises
:class:`~pgferry.errors.Unreachable` to every caller sharing it; the next read
connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from pgferry.errors import Unreachable
from pgferry.jobs.control import Control
from pgferry.redaction import redact

VERSION_SQL = "SELECT epoch::text || ':' || v::text AS version FROM pgferry_control.runs_version"
#: seconds one read may take before its callers get Unreachable
READ_TIMEOUT_S = 5.0


class VersionReader:
    """Fresh reads of the runs' version for one event loop (see the module docstring)."""

    def __init__(self, ctl: Control) -> None:
        self._ctl = ctl
        self._conn: psycopg.AsyncConnection[Any] | None = None
        #: the read the next callers wait for; it starts once the one in flight ended
        self._next: asyncio.Future[str] | None = None
        self._pumping = False
        self._closed = False

    async def read(self) -> str:
        """The runs' version, from a query that started after this call."""
        if self._closed:
            raise Unreachable("the service is stopping")
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
            # a failed read nobody awaits any more (its callers went away) is not an error
            self._next.add_done_callback(_retrieve)
            if not self._pumping:
                self._pumping = True
                loop.create_task(self._pump())
        # shielded: a caller that goes away must not cancel the read the others share
        return await asyncio.shield(self._next)

    async def _pump(self) -> None:
        try:
            while self._next is not None:
                waiting, self._next = self._next, None  # who comes now waits for the next read
                try:
                    got = await asyncio.wait_for(self._query(), READ_TIMEOUT_S)
                except Exception as e:  # noqa: BLE001 - handed to every caller of this read
                    await self._drop()
                    if not waiting.done():
                        waiting.set_exception(_unreachable(e))
                    continue
                if not waiting.done():
                    waiting.set_result(got)
        finally:
            self._pumping = False

    async def _query(self) -> str:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._ctl.dsn,
                autocommit=True,
                prepare_threshold=0,
                connect_timeout=int(READ_TIMEOUT_S),
                application_name="pgferry service runs version",
            )
        cur = await self._conn.execute(VERSION_SQL)
        row = await cur.fetchone()
        return str(row[0]) if row else ""

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        self._closed = True
        await self._drop()


def _retrieve(f: asyncio.Future[str]) -> None:
    if not f.cancelled():
        f.exception()


def _unreachable(e: BaseException) -> Unreachable:
    if isinstance(e, Unreachable):
        return e
    if isinstance(e, TimeoutError):
        return Unreachable(f"the control database did not answer within {READ_TIMEOUT_S:g} s")
    text = redact(str(e)).splitlines()[0] if str(e) else type(e).__name__
    return Unreachable(f"the control database does not answer: {text}")

"""Sync progress as plain lines, for a stderr that is not a terminal (a log, a pipe, CI).

Contract: :class:`SyncLines` is what :class:`pgferry.cli.progress.SyncBars` is (a
:data:`~pgferry.events.Subscriber` and a context manager) for a stream nobody watches
live: one line per table as it finishes (rows, rows per second, time, status) and each
warning as it comes, written to the stream it is given. A bar redrawn in place means
nothing in a log, and rich's own fallback printed every table only at the end.

It imports no rich: a sync or verify whose stderr is piped (``--json`` under cron, CI,
the service's subprocesses, the tests) starts without it, ~0.05 s of its start-up.
"""

from __future__ import annotations

import threading
from typing import TextIO

from pgferry.events import Event
from pgferry.sync.events import BatchWritten, TableFinished, TableStarted, Warning


def rows_text(n: int) -> str:
    """``1 row``, ``2,000 rows``."""
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


class SyncLines:
    """One stderr line per finished table, and the warnings; use as a context manager."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._done: dict[str, int] = {}
        self._lock = threading.Lock()  # the workers' events come from their threads

    def __enter__(self) -> SyncLines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _write(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def __call__(self, event: Event) -> None:
        if isinstance(event, TableStarted):
            with self._lock:
                self._done.setdefault(event.table, 0)
        elif isinstance(event, BatchWritten):
            with self._lock:
                self._done[event.table] = self._done.get(event.table, 0) + event.rows
        elif isinstance(event, TableFinished):
            with self._lock:
                done = self._done.pop(event.table, 0)
            took = event.duration_s
            rate = f", {done / took:,.0f} rows/s" if done and took > 0 else ""
            self._write(f"{event.table}: {rows_text(done)} in {took:.2f} s{rate}, {event.status}")
        elif isinstance(event, Warning):
            where = f"{event.table}: " if event.table else ""
            self._write(f"warning: {where}{event.message}")

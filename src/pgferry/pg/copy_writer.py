"""A COPY writer with a short queue, on psycopg's public API.

Contract: :class:`BoundedWriter` is what ``Copy(writer=...)`` takes: ``write()`` hands
each buffer to a thread that sends it on the connection (so the caller keeps producing
while the server consumes), through a queue of at most :data:`QUEUE_BUFFERS` buffers.
psycopg's own ``QueuedLibpqWriter`` queues up to 1,024 buffers and has no public knob
for that; with 256 kB buffers a slow target would let the process grow by 256 MB, and
a flat memory profile matters more (at most :data:`QUEUE_BUFFERS` pieces of
:data:`PIECE` bytes wait). Built on ``psycopg.copy.LibpqWriter`` (public:
``write`` sends, ``finish`` ends the COPY), so a psycopg upgrade cannot change it
behind pgferry's back. An error in the thread is raised by the next ``write`` or by
``finish``.
"""

from __future__ import annotations

import threading
from queue import Queue
from typing import Any

import psycopg
from psycopg.copy import LibpqWriter

#: buffers in flight at most
QUEUE_BUFFERS = 16
#: a longer buffer is queued in pieces of this size (psycopg's own writers hand libpq
#: 128 kB at a time), so at most ~2 MB wait in the queue
PIECE = 128 * 1024


class BoundedWriter(LibpqWriter):
    """``LibpqWriter`` fed from a bounded queue by a worker thread."""

    def __init__(self, cursor: psycopg.Cursor[Any], maxsize: int = QUEUE_BUFFERS) -> None:
        super().__init__(cursor)
        self._buffers: Queue[Any] = Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _send(self) -> None:
        try:
            while data := self._buffers.get():
                super().write(data)
        except BaseException as e:  # noqa: BLE001 - the producer re-raises it; keep draining
            self._error = e
            while self._buffers.get():
                pass

    def write(self, data: Any) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._send, daemon=True, name="pgferry-copy-writer"
            )
            self._thread.start()
        if self._error is not None:
            raise self._error
        if len(data) <= PIECE:
            self._buffers.put(data)
        else:
            view = memoryview(data)
            for i in range(0, len(view), PIECE):
                self._buffers.put(view[i : i + PIECE])

    def finish(self, exc: BaseException | None = None) -> None:
        self._buffers.put(b"")
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        super().finish(exc)

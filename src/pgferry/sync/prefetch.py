"""The source's rows of the next batches read while the target writes this one.

Contract: :func:`copies` runs ``COPY (query) TO STDOUT`` for each query in turn on the
source connection, in a thread of its own, and yields each query's data as an iterator
of blocks; the caller takes them in order and reads each to its end before the next.
The thread is at most :data:`DEPTH` blocks (of about 256 kB,
:data:`pgferry.pg.copy_reader.BLOCK`) ahead of the caller, so memory stays flat in the
number and size of the batches. Nothing is written on the source and its transaction is
left as it was: closed early (use :func:`contextlib.closing`), the generator lets the
thread read the query under way to its end (a cancelled ``COPY`` would abort the
source's transaction and its snapshot), then waits for it, so the caller owns the
connection again. An error the thread meets is raised in the caller where that query's
data would have come.

Why: a sync writes the differing rows of a table batch after batch, each batch first
copied from the source into a staging table, then upserted. Streamed straight from one
server into the other, the source reads while the target waits, then the target writes
while the source waits. Read ahead, the source reads the next batch while the target
upserts this one (docs/benchmarks.md).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Iterator
from queue import Queue
from typing import Any

import psycopg

from pgferry.pg.copy_reader import blocks

#: blocks (and marks) the thread may hold ahead of the caller
DEPTH = 32

_START = object()  # one query's data begins
_END = object()  # one query's data has ended
_DONE = object()  # the thread has ended (after its last query, an error, or a stop)


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Reader:
    """The thread's side: per query ``_START``, its blocks and ``_END``; then ``_DONE``."""

    def __init__(self, src: psycopg.Connection[Any], queries: Iterable[str | bytes]) -> None:
        self.src, self.queries = src, queries
        self.items: Queue[Any] = Queue(maxsize=DEPTH)
        self.stop = threading.Event()
        self.ended = False  # the thread's _DONE has been taken
        self.read_out = True  # the last query's data has been read to its end
        self.thread = threading.Thread(target=self._read, name="pgferry-prefetch", daemon=True)

    def _read(self) -> None:
        try:
            cur = self.src.cursor()
            queries = iter(self.queries)  # (a lazy iterable runs its own queries here)
            while not self.stop.is_set() and (q := next(queries, None)) is not None:
                self.items.put(_START)
                with cur.copy(q) as out:
                    for block in blocks(out):
                        if not self.stop.is_set():  # stopped: read on, to end the COPY cleanly
                            self.items.put(block)
                self.items.put(_END)
        except BaseException as e:  # noqa: BLE001 - raised in the caller, where the data was due
            self.items.put(_Raised(e))
        finally:
            self.items.put(_DONE)

    def take(self) -> Any:
        """The next item; the thread's error raised."""
        item = self.items.get()
        if item is _DONE:
            self.ended = True
        elif isinstance(item, _Raised):
            raise item.error
        return item

    def data(self) -> Iterator[bytes]:
        while (item := self.take()) is not _END:
            if item is _DONE:
                raise RuntimeError("the source's reads ended in the middle of a query's data")
            yield item
        self.read_out = True

    def close(self) -> None:
        self.stop.set()
        while not self.ended:  # let the thread end: it may wait on a full queue
            self.ended = self.items.get() is _DONE
        self.thread.join()


def copies(
    src: psycopg.Connection[Any], queries: Iterable[str | bytes]
) -> Generator[Iterator[bytes], None, None]:
    """Each of ``queries`` (``COPY ... TO STDOUT`` statements, parameters bound) read on
    ``src`` ahead of the caller; yields one iterator of data blocks per query, in order
    (see the module). ``queries`` is iterated in the thread: a generator that queries
    ``src`` for the next statement runs there too."""
    reader = _Reader(src, queries)
    reader.thread.start()
    try:
        while True:
            if not reader.read_out:
                raise RuntimeError("a query's data was not read to its end before the next")
            if reader.take() is not _START:  # _DONE: no query is left
                return
            reader.read_out = False
            yield reader.data()
    finally:
        reader.close()

"""Both sides of a table read packed, one step ahead: the caller handles a step while both
servers read the next.

Contract: :func:`read_ahead` yields both sides' :func:`pgferry.sync.packed.read` of each
step (a key range, and the heap blocks each side reads it in) under the caller's
settings, on the connections the caller owns and in their transactions; closed early,
it waits for the reads under way. :func:`compare_pieces` reads the pieces of a table by
key range and settles each (:mod:`pgferry.sync.passes`); :mod:`pgferry.sync.streamed`
reads its physical slices through :func:`read_ahead` too. Nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from typing import Any

import psycopg

from pgferry.sync import packed
from pgferry.sync.checksum import WHOLE, Blocks
from pgferry.sync.chunks import KeyRange, Sums
from pgferry.sync.packed import Packed
from pgferry.sync.sides import Side, settings

#: one step of :func:`read_ahead`: a key range, and the blocks each side reads it in (None:
#: that side has nothing to read in this step)
Step = tuple[KeyRange, Blocks | None, Blocks | None]


def read_ahead(
    src: tuple[psycopg.Connection[Any], Side],
    tgt: tuple[psycopg.Connection[Any], Side],
    steps: Sequence[Step],
    cap: int,
    serial: dict[str, str],
    *,
    numpy_early: bool = True,
) -> Generator[tuple[Packed, Packed], None, None]:
    """Both sides' :func:`read` of each step in turn, the settings ``serial`` on both
    connections meanwhile. Both servers read the next step while the caller handles one,
    unless a read of this one came back over ``cap`` (a caller may stop there). Closed
    early, it waits for the reads under way: the connections are free again (use
    :func:`contextlib.closing`). ``numpy_early``: import numpy while the first step is
    read (False: the reads are small enough to be matched without it)."""
    with (
        settings(src[0], **serial),
        settings(tgt[0], **serial),
        ThreadPoolExecutor(2) as pool,
    ):

        def one(side: tuple[psycopg.Connection[Any], Side], rng: KeyRange, b: Blocks | None) -> Any:
            if b is None:
                return pool.submit(Packed, 0, b"")
            return pool.submit(packed.read, *side, rng, cap, b)  # (looked up per call)

        def start(k: int) -> tuple[Future[Packed], Future[Packed]]:
            rng, bs, bt = steps[k]
            return one(src, rng, bs), one(tgt, rng, bt)

        if not steps:
            return
        ahead = start(0)
        if numpy_early:
            import numpy  # noqa: F401 - imported while the servers read (~0.1 s)

        for k in range(len(steps)):
            a, b = ahead[0].result(), ahead[1].result()
            if k + 1 < len(steps) and a.rows <= cap and b.rows <= cap:
                ahead = start(k + 1)
            yield a, b


#: what decides a piece from both sides' reads: both sides' sums of it
Settle = Callable[[KeyRange, Packed, Packed], tuple[Sums, Sums]]


def compare_pieces(
    src: tuple[psycopg.Connection[Any], Side],
    tgt: tuple[psycopg.Connection[Any], Side],
    pieces: Sequence[KeyRange],
    cap: int,
    settle: Settle,
    progress: Callable[[int], None],
    *,
    numpy_early: bool = True,
) -> tuple[list[Sums], list[Sums]]:
    """Read every piece on both sides (:func:`read_ahead`, at most ``cap`` + 1 rows each)
    and ``settle`` it; both sides' sums per piece. ``progress`` gets each piece's source
    rows; ``numpy_early`` as :func:`read_ahead` takes it."""
    ss: list[Sums] = []
    ts: list[Sums] = []
    # one process a side: both servers already read at once (workers would share the
    # cores); and several pieces each by its key index (a bitmap scan, its pages in order):
    # a piece of a third of the table read by a sequential scan reads the whole table
    serial = {"max_parallel_workers_per_gather": "0"}
    if len(pieces) > 1:
        serial.update(enable_seqscan="off", enable_indexscan="off")
    steps = [(rng, WHOLE, WHOLE) for rng in pieces]
    with closing(read_ahead(src, tgt, steps, cap, serial, numpy_early=numpy_early)) as reads:
        for rng, (a, b) in zip(pieces, reads, strict=True):
            sa, sb = settle(rng, a, b)
            ss.append(sa)
            ts.append(sb)
            progress(sa.rows)
    return ss, ts

"""How :func:`pgferry.sync.verify.diff_table` divides a table into batches and runs them.

Contract: :func:`plan_batches` cuts the chunks into batches (a small probe
first); :func:`run_parallel` runs the batches after the probe on several
connection pairs at once, each batch counting into its own counters, returned
in batch (key) order. Nothing here talks to a database itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pgferry.sync.chunks import Sums

#: one batch's counters (a :class:`pgferry.sync.verify.TableDiff`)
C = TypeVar("C")


def run_parallel(
    n: int,
    pairs: int,
    batch: Callable[[int, int, C, bool], tuple[Sums, Sums, bool]],
    dense: bool,
    new_part: Callable[[], C],
) -> list[tuple[Sums, Sums, C]]:
    """Batches ``1..n-1`` on ``pairs`` connection pairs at once; sums and counters in order.

    Each pair takes the next batch not yet taken; each batch counts into its
    own counters (``new_part()``), which the caller merges in key order. The
    first error stops the pairs from taking more batches and is raised.
    """
    results: list[tuple[Sums, Sums, C] | None] = [None] * n
    taken = iter(range(1, n))
    lock = threading.Lock()
    failed: list[BaseException] = []

    def run(i: int) -> None:
        mine = dense
        while not failed:
            with lock:
                k = next(taken, None)
            if k is None:
                return
            part = new_part()
            try:
                a, b, mine = batch(k, i, part, mine)
            except BaseException as e:
                failed.append(e)
                raise
            results[k] = (a, b, part)

    with ThreadPoolExecutor(pairs) as pool:
        futures = [pool.submit(run, i) for i in range(pairs)]
        for f in futures:
            f.exception()
    if failed:
        raise failed[0]
    return [r for r in results[1:] if r is not None]


def plan_batches(n: int, chunk_rows: int, batch_rows: int) -> list[tuple[int, int]]:
    """``[start, end)`` chunk indices of the batches: a small first one, then ~batch_rows each.

    The first batch (a tenth of the table at most) is a probe: when it finds
    differences in many chunks, the rest of the table is read as signatures
    right away instead of sums first and signatures after.
    """
    per = max(1, batch_rows // chunk_rows)
    first = min(per, max(1, n // 10))
    out = [(0, min(n, first))]
    rest = n - out[0][1]
    if rest > 0:
        k = -(-rest // per)
        size = -(-rest // k)
        out += [(i, min(n, i + size)) for i in range(out[0][1], n, size)]
    return out

"""How :func:`pgferry.sync.verify.diff_table` reads a table in physical batches.

Contract: a table's heap is cut into consecutive block ranges
(:func:`pgferry.sync.checksum.block_ranges`, one list per side: the two sides
store their rows differently); batch ``k`` reads the ``k``-th range of each
side, so every row is read exactly once, in one sequential pass, whatever the
order of its keys on the disk (a key range would make a table of random keys
read every page once per range). Sums over physical slices add up to the sums
over the whole table, so batches can run on several connection pairs at once
(:func:`run`) and merge in any order. Nothing here talks to a database itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pgferry.sync.checksum import Blocks

R = TypeVar("R")


def count(estimate: int | None, batch_rows: int, pairs: int) -> int:
    """How many batches: about ``batch_rows`` rows each, at least two a pair with helpers."""
    n = -(-(estimate or 0) // max(1, batch_rows))
    if pairs > 1:
        n = max(n, 2 * pairs)
    return max(1, n)


def pick(ranges: Sequence[Blocks], k: int) -> Blocks | None:
    """Side's block range of batch ``k`` (None: that side has fewer ranges, nothing to read)."""
    return ranges[k] if k < len(ranges) else None


def run(n: int, pairs: int, batch: Callable[[int, int], R]) -> list[R]:
    """``batch(k, pair)`` for ``k`` in ``0..n-1`` on ``pairs`` pairs at once; results in order.

    Each pair takes the next batch not yet taken. The first error stops the pairs
    from taking more batches and is raised.
    """
    if pairs <= 1 or n <= 1:
        return [batch(k, 0) for k in range(n)]
    results: list[R | None] = [None] * n
    taken = iter(range(n))
    lock = threading.Lock()
    failed: list[BaseException] = []

    def work(i: int) -> None:
        while not failed:
            with lock:
                k = next(taken, None)
            if k is None:
                return
            try:
                results[k] = batch(k, i)
            except BaseException as e:
                failed.append(e)
                raise

    with ThreadPoolExecutor(pairs) as pool:
        for f in [pool.submit(work, i) for i in range(pairs)]:
            f.exception()
    if failed:
        raise failed[0]
    return [r for r in results if r is not None]

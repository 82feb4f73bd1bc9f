"""The passes of one table's comparison (:func:`pgferry.sync.verify.diff_table`).

Contract: a :class:`Comparison` holds one ``diff_table`` call's connection pairs, their
one-thread pools, both sides, the counters (a :class:`pgferry.sync.verify.TableDiff`) and
the progress; each method is one pass over the table (whole sums, chunk sums, pieces
read packed, physical slices, signatures) and returns both sides' sums per range, having
recorded what differs on the counters through a :class:`pgferry.sync.differ.Differ`.
Which passes run, in which order, is :func:`pgferry.sync.verify.diff_table`'s choice.
Everything runs in the callers' transactions; nothing is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from pgferry.sync import ahead, batches, packed, streamed
from pgferry.sync import checksum as ck
from pgferry.sync.chunks import Key, KeyRange, Sums, differing_subs, split
from pgferry.sync.differ import Differ, DiffRange, Wants

if TYPE_CHECKING:
    from pgferry.sync.verify import TableDiff

T = TypeVar("T")


class Comparison:
    """One :func:`diff_table` call's connections, sides, counters and passes."""

    def __init__(
        self,
        pairs: list[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]],
        pools: list[ThreadPoolExecutor],
        s: ck.Side,
        t: ck.Side,
        out: TableDiff,
        *,
        list_rows: int,
        fanout: int,
        key_limit: int,
        on_range: Callable[[DiffRange], None] | None,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self.pairs, self.pools, self.src_side, self.tgt_side, self.out = pairs, pools, s, t, out
        self.list_rows, self.fanout, self.key_limit = list_rows, fanout, key_limit
        self.on_range, self.on_progress = on_range, on_progress
        self.lock = threading.Lock()
        self.total = 0
        self.done = 0
        self.reported = False  # progress is reported by the first pass only

    def differ(self, i: int) -> Differ:
        return Differ(
            self.pairs[i][0],
            self.pairs[i][1],
            self.src_side,
            self.tgt_side,
            self.out,
            self.pools[i],
            list_rows=self.list_rows,
            fanout=self.fanout,
            key_limit=self.key_limit,
            on_range=self.on_range,
        )

    def _progress(self, rows: int) -> None:
        if self.on_progress is None or self.reported:
            return
        with self.lock:
            self.done += rows
            # rows past a stale estimate count too: the bar ends at what was compared
            self.on_progress(self.done, max(self.total, self.done))

    def _batched(self, batch_rows: int, f: Callable[..., T]) -> list[tuple[T, T]]:
        """``f(conn, side, blocks)`` on both sides for every physical batch, over the pairs."""
        n = batches.count(self.total, batch_rows, len(self.pairs))
        ranges = [
            ck.block_ranges(c, sd, n)
            for c, sd in ((self.pairs[0][0], self.src_side), (self.pairs[0][1], self.tgt_side))
        ]
        n = max(map(len, ranges))

        def one(k: int, i: int) -> tuple[T | None, T | None]:
            src, tgt = self.pairs[i]
            bs, bt = batches.pick(ranges[0], k), batches.pick(ranges[1], k)
            fut = self.pools[i].submit(f, src, self.src_side, bs) if bs is not None else None
            tv = f(tgt, self.tgt_side, bt) if bt is not None else None
            return (fut.result() if fut is not None else None), tv

        return batches.run(n, len(self.pairs), one)  # type: ignore[arg-type]

    def whole_sums(self, batch_rows: int) -> tuple[Sums, Sums]:
        """Count and XOR of every row of each side: one scan, nothing grouped."""

        def f(conn: psycopg.Connection[Any], sd: ck.Side, blocks: ck.Blocks) -> Sums:
            got = ck.sums(conn, sd, blocks)
            if sd is self.src_side:
                self._progress(got.rows)
            return got

        got = self._batched(batch_rows, f)
        self.reported = True
        return (
            sum((a for a, _ in got if a is not None), Sums()),
            sum((b for _, b in got if b is not None), Sums()),
        )

    def chunk_sums(self, bounds: Sequence[Key], batch_rows: int) -> tuple[list[Sums], list[Sums]]:
        """Count and XOR of every chunk of each side: one scan with ``width_bucket``."""

        def f(conn: psycopg.Connection[Any], sd: ck.Side, blocks: ck.Blocks) -> list[Sums]:
            got = ck.bucket_sums(conn, sd, KeyRange(), bounds, blocks)
            if sd is self.src_side:
                self._progress(sum(x.rows for x in got))
            return got

        n = len(bounds) + 1
        ss, ts = [Sums()] * n, [Sums()] * n
        for a, b in self._batched(batch_rows, f):
            if a is not None:
                ss = [x + y for x, y in zip(ss, a, strict=True)]
            if b is not None:
                ts = [x + y for x, y in zip(ts, b, strict=True)]
        self.reported = True
        return ss, ts

    def packed(self, bounds: Sequence[Key], cap: int) -> tuple[list[Sums], list[Sums]]:
        """Every piece cut at ``bounds`` read packed on both sides and matched
        (:func:`pgferry.sync.ahead.compare_pieces`)."""
        (src, tgt), d = self.pairs[0], self.differ(0)
        got = ahead.compare_pieces(
            (src, self.src_side),
            (tgt, self.tgt_side),
            split(KeyRange(), bounds),
            cap,
            lambda rng, a, b: d.settle_packed(rng, a, b, cap),
            self._progress,
            # a table of one small piece is matched without numpy (packed.SMALL)
            numpy_early=bool(bounds) or self.total > packed.SMALL,
        )
        self.reported = True
        return got

    def streamed(
        self, bounds: Sequence[Key], slices: int, limit: int
    ) -> tuple[list[Sums], list[Sums]] | None:
        """The table read in physical slices and matched (:func:`pgferry.sync.streamed.compare`),
        each range of ``bounds`` settled; None: given up, nothing recorded (the rows it
        counted for the progress bar are taken back)."""
        (src, tgt), d = self.pairs[0], self.differ(0)
        counted = 0

        def progress(rows: int) -> None:
            nonlocal counted
            counted += rows
            self._progress(rows)

        got = streamed.compare(
            (src, self.src_side),
            (tgt, self.tgt_side),
            bounds,
            slices=max(1, slices),
            cap=limit,
            limit=limit,
            progress=progress,
        )
        if got is None:
            with self.lock:
                self.done -= counted
            return None
        ss: list[Sums] = []
        ts: list[Sums] = []
        for rng, compared in got:
            a, b = d.settle_compared(rng, compared)
            ss.append(a)
            ts.append(b)
        self.reported = True
        return ss, ts

    def signatures(self, bounds: Sequence[Key], bits: int) -> tuple[list[Sums], list[Sums], Wants]:
        """Every chunk's signature on both sides (one scan each), streamed and compared.

        Keeps only what a later step needs: the sums per chunk and the differing
        sub-buckets of the chunks whose sums differ.
        """
        n = len(bounds) + 1
        ss, ts = [Sums()] * n, [Sums()] * n
        wants = Wants(bits, {})
        (src, tgt), pool = self.pairs[0], self.pools[0]
        with (
            closing(ck.signature_stream(src, self.src_side, bounds, bits)) as sgen,
            closing(ck.signature_stream(tgt, self.tgt_side, bounds, bits)) as tgen,
        ):
            fut = pool.submit(next, sgen, None)  # both servers scan at the same time
            b = next(tgen, None)
            a = fut.result()
            while a is not None or b is not None:
                j = min(x[0] for x in (a, b) if x is not None)
                sa = a[1] if a is not None and a[0] == j else None
                sb = b[1] if b is not None and b[0] == j else None
                if sa is not None:
                    ss[j] = sa.sums
                    self._progress(sa.rows)
                    a = next(sgen, None)
                if sb is not None:
                    ts[j] = sb.sums
                    b = next(tgen, None)
                if sa is not None and sb is not None and sa.sums != sb.sums:
                    wants.subs[j] = differing_subs(sa, sb)
        self.reported = True
        return ss, ts, wants

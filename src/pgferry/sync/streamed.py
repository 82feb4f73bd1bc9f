"""A table compared in physical slices, read packed on both sides: one sequential pass a side.

Contract: :func:`compare` reads both sides of a table whose keys can be packed
(:func:`pgferry.sync.packed.packable`; PostgreSQL 14 or later on both sides: a TID range
scan, :func:`possible`) in ``slices`` consecutive block ranges each
(:func:`pgferry.sync.checksum.block_ranges`), slice ``k`` of both sides at once, each
packed as :func:`pgferry.sync.packed.read` packs it, and matches the rows by key in numpy.
A row whose key the other side has not shown yet waits (it is *pending*) for the other
side's next slices; what still waits at the end is on one side only. It returns, per key
range of ``bounds`` (:func:`pgferry.sync.chunks.split`), both sides' sums and the
differing keys with both row hashes (:class:`pgferry.sync.packed.Compared`, as
:func:`pgferry.sync.packed.compare` returns them for one range), or None when it gives
up: more than ``limit`` rows pending or differing at once (memory; or, from a quarter of
the slices on, that many by the end at the rate so far), a slice of more than ``cap``
rows, or a read that cannot be matched (a NULL key). Nothing is reported before
the end, so a caller that is given None compares the table another way and has lost only
the reads. Everything runs in the callers' transactions (one snapshot a side); nothing
is written.

Why: a table whose rows are not stored in key order (random uuids) cannot be read by key
ranges (each range would read most pages), and was compared by signatures: a grouped
scan a side, then the rows of the differing sub-buckets read again by key. A target
loaded by a sync holds its rows in the source's physical order (a full sync copies them
in that order), so few rows wait, whatever the order of the keys: 1.5M uuid rows with
1% changed, 6.7 s -> 5.2 s a sync (docs/benchmarks.md). A table stored in key order is
read by key ranges all the same (pgferry.sync.verify): slices read its rows faster
alone, but in a whole sync, with the matching on the same two cores, no faster either
way, and there the rows moved since the load (to the end of either side) wait here until
the end, which costs more matching (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import Any

import psycopg

from pgferry.sync import packed
from pgferry.sync.ahead import read_ahead
from pgferry.sync.batches import pick
from pgferry.sync.checksum import block_ranges
from pgferry.sync.chunks import Key, KeyDiff, KeyRange, Sums, split
from pgferry.sync.sides import Side


def possible(s: Side, t: Side) -> bool:
    """Can both sides be read in slices: packable keys, TID range scans on both servers?"""
    return packed.packable(s, t) and min(s.server_version, t.server_version) >= 140000


class Matcher:
    """Both sides' slices matched as they come (see the module); numpy only, no I/O.

    The sums it gives a range hold its rows and the XOR of the hashes of its rows that
    differ (on one side only, or with another hash); the XOR of the rows that match is
    the same on both sides, and is added to the first range's sums of each side. So the
    sums of a range compare as the sums of its rows do, and they add up to the whole
    table's, without a hash per range of every row.
    """

    def __init__(self, s: Side, bounds: Sequence[Key], limit: int) -> None:
        import numpy as np

        self.side, self.limit = s, limit
        self.dtype = packed.dtype(s)
        self.width = packed.width(s)
        self.ranges = split(KeyRange(), bounds)
        self.bounds = (
            np.array([b[0] for b in bounds], dtype=np.int64)
            if packed.native_key(s)
            else np.array([packed.key_bytes(s, b) for b in bounds], dtype=f"S{self.width - 8}")
        )
        self.matched = np.zeros(len(self.ranges), dtype=np.int64)
        self.xor = [0, 0]  # of every row read, a side
        empty = np.zeros(0, dtype=self.dtype)
        self.pending = [empty, empty]
        self.changed: list[Any] = []  # source rows whose target row has another hash
        self.changed_h: list[Any] = []  # those target rows' hashes
        self.n_changed = 0

    # -- keys in the server's order ------------------------------------------------------
    def keys(self, rows: Any) -> Any:
        """:func:`pgferry.sync.packed.keys` of ``rows``: bounds and keys sort alike."""
        return packed.keys(self.side, rows)

    def range_of(self, keys: Any) -> Any:
        """The number of the range (of ``bounds``) of each key."""
        import numpy as np

        return np.searchsorted(self.bounds, keys, side="right")

    # -- matching ------------------------------------------------------------------------
    def _join(self, parts: list[Any]) -> Any:
        """``parts`` end to end, as packed (numpy would make its fields native-endian, and
        :meth:`keys` reads their bytes)."""
        import numpy as np

        return np.concatenate(parts, dtype=self.dtype) if parts else np.zeros(0, self.dtype)

    def add(self, a: packed.Packed, b: packed.Packed) -> bool:
        """Match one slice of each side; False: give up (see the module)."""
        import numpy as np

        got = []
        for i, p in enumerate((a, b)):
            if len(p.data) != p.rows * self.width:
                return False  # a NULL key: its bytes are missing
            rows = np.frombuffer(p.data, dtype=self.dtype)
            self.xor[i] ^= int(np.bitwise_xor.reduce(rows["h"].astype(np.int64))) if p.rows else 0
            got.append(self._join([self.pending[i], rows]) if len(self.pending[i]) else rows)
        ra, rb = got
        ka = self.keys(ra)
        ia, ib = packed.match(ka, self.keys(rb))
        differ = ra["h"][ia] != rb["h"][ib]
        self.matched += np.bincount(self.range_of(ka[ia[~differ]]), minlength=len(self.ranges))
        if differ.any():
            self.changed.append(ra[ia[differ]])
            self.changed_h.append(rb["h"][ib[differ]].astype(np.int64))
            self.n_changed += int(differ.sum())
        for i, (r, idx) in enumerate(((ra, ia), (rb, ib))):
            keep = np.ones(len(r), dtype=bool)
            keep[idx] = False
            self.pending[i] = r[keep]
        return self.held() <= self.limit

    def held(self) -> int:
        """The rows held now: pending on either side, or differing."""
        return len(self.pending[0]) + len(self.pending[1]) + self.n_changed

    def finish(self) -> Iterator[tuple[KeyRange, packed.Compared]]:
        """Every range's sums and differing keys, in key order (one range's keys at a time)."""
        import numpy as np

        def grouped(rows: Any, *more: Any) -> tuple[Any, ...]:
            """``rows`` (and ``more`` alike) in range order, and where each range starts."""
            j = self.range_of(self.keys(rows))
            order = np.argsort(j, kind="stable")
            at = np.searchsorted(j[order], np.arange(len(self.ranges) + 1)).tolist()
            return (at, rows[order], *(m[order] for m in more))

        changed = self._join(self.changed)
        changed_h = np.concatenate(self.changed_h) if self.changed_h else np.zeros(0, np.int64)
        dat, drows, dh = grouped(changed, changed_h)
        sat, srows = grouped(self.pending[0])
        tat, trows = grouped(self.pending[1])
        h = [drows["h"].astype(np.int64), srows["h"].astype(np.int64), trows["h"].astype(np.int64)]
        # the XOR of the rows that match, the same on both sides (see the class)
        alike = self.xor[0] ^ packed.xor(h[0]) ^ packed.xor(h[1])
        for r, rng in enumerate(self.ranges):
            d, sr, tr = (
                slice(dat[r], dat[r + 1]),
                slice(sat[r], sat[r + 1]),
                slice(tat[r], tat[r + 1]),
            )
            diffs = [
                KeyDiff("differing", k, x, y)
                for k, x, y in zip(
                    packed.decode(self.side, drows[d]),
                    h[0][d].tolist(),
                    dh[d].tolist(),
                    strict=True,
                )
            ]
            diffs += [
                KeyDiff("only_in_source", k, x, None)
                for k, x in zip(packed.decode(self.side, srows[sr]), h[1][sr].tolist(), strict=True)
            ]
            diffs.sort(key=lambda x: x.key)
            extra = [
                KeyDiff("only_in_target", k, None, y)
                for k, y in zip(packed.decode(self.side, trows[tr]), h[2][tr].tolist(), strict=True)
            ]
            extra.sort(key=lambda x: x.key)
            same, n_d = int(self.matched[r]), d.stop - d.start
            first = alike if r == 0 else 0
            yield (
                rng,
                packed.Compared(
                    Sums(
                        same + n_d + (sr.stop - sr.start),
                        first ^ packed.xor(h[0][d]) ^ packed.xor(h[1][sr]),
                    ),
                    Sums(
                        same + n_d + (tr.stop - tr.start),
                        first ^ packed.xor(dh[d]) ^ packed.xor(h[2][tr]),
                    ),
                    same,
                    diffs + extra,
                ),
            )


def compare(
    src: tuple[psycopg.Connection[Any], Side],
    tgt: tuple[psycopg.Connection[Any], Side],
    bounds: Sequence[Key],
    *,
    slices: int,
    cap: int,
    limit: int,
    progress: Callable[[int], None],
) -> Iterator[tuple[KeyRange, packed.Compared]] | None:
    """Read and match both sides slice by slice (see the module); per range of ``bounds``
    its comparison, or None: given up. ``progress`` gets each source slice's rows."""
    ranges = [block_ranges(src[0], src[1], slices), block_ranges(tgt[0], tgt[1], slices)]
    n = max(map(len, ranges))
    m = Matcher(src[1], bounds, limit)
    # a side with fewer slices reads nothing in the last steps
    steps = [(KeyRange(), pick(ranges[0], k), pick(ranges[1], k)) for k in range(n)]
    serial = {"max_parallel_workers_per_gather": "0"}
    with closing(read_ahead(src, tgt, steps, cap, serial)) as reads:
        for k, (a, b) in enumerate(reads):
            if a.rows > cap or b.rows > cap:
                return None
            # give up as soon as the rows held would pass the limit, or when a quarter of
            # the table is read and, held at the rate so far, they would by the end
            if not m.add(a, b) or ((k + 1) * 4 >= n and m.held() * n > limit * (k + 1)):
                return None  # (closing waits for the next slices' reads under way)
            progress(a.rows)
    return m.finish()

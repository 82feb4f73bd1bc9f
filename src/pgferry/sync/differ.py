"""The comparison loop behind :func:`pgferry.sync.verify.diff_table`.

Contract: a :class:`Differ` holds both connections and sides, the counters
(a :class:`pgferry.sync.verify.TableDiff`) and a one-thread pool so that each
step runs on the source and the target at the same time. For the pieces of a
range it is given (with their sums, and possibly their signatures) it decides
per piece:

- equal sums: every row matches;
- empty on one side: every row is on the other side only (reported as a range,
  its keys are not fetched);
- at most ``list_rows`` rows on each side: compare the signatures of both
  sides (per sub-bucket of ~5 rows, grouped by a hash of the key: the XOR of
  their row hashes; one query for all such pieces unless the caller read them
  with the sums), then fetch the keys and row hashes of only the rows in
  sub-buckets that differ, and classify them by key (a key on both sides with
  another row hash differs; otherwise it is on one side only). When those
  rows do not account for the whole difference of the piece's sums (rows
  changed between two reads, or a hash collision), the piece is read whole
  and compared row by row;
- bigger: cut it into ``fanout`` pieces at keys of the side with more rows,
  compare their sums, and decide again (bisection).

Everything runs in the callers' transactions; nothing is written.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import psycopg

from pgferry.errors import OperationFailed
from pgferry.sync import checksum as ck
from pgferry.sync import packed, readback
from pgferry.sync.chunks import (
    DiffKind,
    Key,
    KeyDiff,
    KeyRange,
    Signature,
    Sums,
    classify,
    differing_subs,
    split,
    sub_bits,
    sub_bitset,
)

T = TypeVar("T")
Rows = list[tuple[Key, int]]  # (key, row hash)


@dataclass(frozen=True)
class DiffRange:
    """A range whose rows differ; ``diffs`` is None when one side has no rows in it."""

    range: KeyRange
    source_rows: int
    target_rows: int
    diffs: list[KeyDiff] | None


@dataclass(frozen=True)
class Sigs:
    """Both sides' signatures of the pieces of one range (``bits``: sub-bucket bits)."""

    bits: int
    src: dict[int, Signature]
    tgt: dict[int, Signature]


@dataclass
class Wants:
    """The sub-buckets to read back per piece (``bits``: sub-bucket bits)."""

    bits: int
    subs: dict[int, list[int]]


#: rows of one side fetched at once from a stream of changed rows (~100 bytes each in memory)
STREAM_FETCH = 10_000


class Counters(Protocol):
    table: str
    matched: int
    differing: int
    only_in_source: int
    only_in_target: int
    first_keys: list[KeyDiff]
    ranges_differing: int


def _sums(rows: Rows) -> Sums:
    return Sums(len(rows), functools.reduce(operator.xor, (h for _, h in rows), 0))


def accounts_for(srows: Rows, trows: Rows, a: Sums, b: Sums) -> bool:
    """Do the rows read from the differing sub-buckets explain the whole of ``a`` vs ``b``?

    The other sub-buckets are taken to match (as many rows and the same XOR
    on both sides): true when that leaves both sides' sums equal.
    """
    x = functools.reduce(operator.xor, (h for _, h in srows), 0)
    x = functools.reduce(operator.xor, (h for _, h in trows), x)
    return a.rows - len(srows) == b.rows - len(trows) and x == a.hash ^ b.hash


class Differ:
    """One comparison in progress (see the module docstring)."""

    def __init__(
        self,
        src: psycopg.Connection[Any],
        tgt: psycopg.Connection[Any],
        s: ck.Side,
        t: ck.Side,
        out: Counters,
        pool: ThreadPoolExecutor,
        *,
        list_rows: int,
        fanout: int,
        key_limit: int,
        on_range: Callable[[DiffRange], None] | None,
    ) -> None:
        self.src, self.tgt, self.s, self.t, self.out, self.pool = src, tgt, s, t, out, pool
        self.list_rows, self.fanout, self.key_limit = list_rows, fanout, key_limit
        self.on_range = on_range

    def both(self, f: Callable[[psycopg.Connection[Any], ck.Side], T]) -> tuple[T, T]:
        """Run ``f`` on the source (in the pool) and on the target, concurrently."""
        fut = self.pool.submit(f, self.src, self.s)
        tv = f(self.tgt, self.t)
        return fut.result(), tv

    # -- deciding pieces ----------------------------------------------------------------------
    def settle(
        self,
        outer: KeyRange,
        bounds: Sequence[Key],
        ss: Sequence[Sums],
        ts: Sequence[Sums],
        sigs: Sigs | None = None,
        wants: Wants | None = None,
    ) -> None:
        """Decide every piece of ``outer`` cut at ``bounds``, given both sides' sums.

        ``sigs``: both sides' signatures of these pieces when the caller read
        them with the sums; else they are read for the pieces that need them.
        ``wants``: instead, the differing sub-buckets of every piece whose sums
        differ (found from signatures the caller read and compared itself).
        """
        pieces = split(outer, bounds)
        if wants is not None:
            small = [
                j
                for j, (a, b) in enumerate(zip(ss, ts, strict=True))
                if a != b and a.rows and b.rows
            ]
        else:
            small = [
                j
                for j, (a, b) in enumerate(zip(ss, ts, strict=True))
                if a != b and a.rows and b.rows and max(a.rows, b.rows) <= self.list_rows
            ]
        if small and sigs is None and wants is None:
            sigs = self._signatures(outer, bounds, pieces, ss, ts, small)
        if wants is None and sigs is not None:
            wants = Wants(
                sigs.bits, {j: differing_subs(sigs.src.get(j), sigs.tgt.get(j)) for j in small}
            )
        # the keys of changed rows are read as the walk below reaches their pieces: streamed
        # in key order (one scan a side), or piece by piece when few pieces differ
        reader = _SubRows(self, bounds, pieces, small, wants) if small and wants else None
        try:
            for j, (rng, a, b) in enumerate(zip(pieces, ss, ts, strict=True)):
                if a == b:
                    self.out.matched += a.rows
                elif not (a.rows and b.rows):
                    self._one_sided(rng, a.rows, b.rows)
                elif reader is not None and j in reader.small:
                    diffs = self._changed_rows(pieces[j], a, b, reader.take(j))
                    self.out.matched += a.rows - sum(1 for d in diffs if d.kind != "only_in_target")
                    self._record(rng, a.rows, b.rows, diffs)
                else:
                    self._split(rng, a.rows, b.rows)
        finally:
            if reader is not None:
                reader.close()

    def settle_packed(
        self, rng: KeyRange, a: packed.Packed, b: packed.Packed, cap: int
    ) -> tuple[Sums, Sums]:
        """Decide the range ``rng`` from both sides' packed reads (:mod:`pgferry.sync.packed`);
        both sides' sums of it. A read of more than ``cap`` rows (cut short) is decided by
        sums and signatures, cut into pieces; a read that cannot be matched (a NULL key)
        is read again row by row."""
        if a.rows > cap or b.rows > cap:
            return self._split(rng, a.rows, b.rows)
        got = packed.compare(self.s, a, b)
        if got is None:
            srows, trows = self.both(partial(readback.row_hashes, rng=rng))
            # rows alike on both sides match, NULL keys too (they are not told apart by key)
            alike = set(srows) & set(trows)
            leaf = classify(
                [r for r in srows if r not in alike],
                {k: h for k, h in trows if (k, h) not in alike},
            )
            got = packed.Compared(
                _sums(srows),
                _sums(trows),
                leaf.matched + sum(1 for r in srows if r in alike),
                leaf.diffs,
            )
        return self.settle_compared(rng, got)

    def settle_compared(self, rng: KeyRange, got: packed.Compared) -> tuple[Sums, Sums]:
        """Record the range ``rng`` as matched (its differing keys known); its sums."""
        ns, nt = got.source.rows, got.target.rows
        if not got.diffs:
            self.out.matched += ns
        elif not (ns and nt):
            self._one_sided(rng, ns, nt)
        else:
            self.out.matched += got.matched
            self._record(rng, ns, nt, got.diffs)
        return got.source, got.target

    def _signatures(
        self,
        outer: KeyRange,
        bounds: Sequence[Key],
        pieces: Sequence[KeyRange],
        ss: Sequence[Sums],
        ts: Sequence[Sums],
        small: list[int],
    ) -> Sigs:
        """Both sides' signatures of the pieces ``small`` of ``outer`` cut at ``bounds``."""
        bits = sub_bits(max(max(ss[j].rows, ts[j].rows) for j in small))
        if len(small) <= 2 or len(small) * 4 < len(pieces):
            # few pieces: read only their ranges
            sigs = Sigs(bits, {}, {})
            for j in small:
                got = self.both(partial(ck.signatures, rng=pieces[j], bounds=(), bits=bits))
                for mine, side in zip((sigs.src, sigs.tgt), got, strict=True):
                    if side:
                        mine[j] = side[0]
            return sigs
        got = self.both(partial(ck.signatures, rng=outer, bounds=bounds, bits=bits, buckets=small))
        return Sigs(bits, *got)

    def _changed_rows(
        self, rng: KeyRange, a: Sums, b: Sums, rows: tuple[Rows, Rows] | None
    ) -> list[KeyDiff]:
        """The differing keys of one piece, from its rows in the differing sub-buckets.

        ``rows`` None (no sub-bucket differs), or rows that do not account for the whole
        difference of the sums (rows changed between two reads, a hash collision): the
        piece is read whole and compared row by row.
        """
        if rows is None or not accounts_for(*rows, a, b):
            rows = self.both(partial(readback.row_hashes, rng=rng))
        srows, trows = rows
        return classify(srows, dict(trows)).diffs

    def _split(self, rng: KeyRange, ns: int, nt: int) -> tuple[Sums, Sums]:
        """Cut ``rng`` (``ns`` / ``nt`` rows a side, or more) into ``fanout`` pieces and
        decide them; both sides' sums of it."""
        conn, sd = (self.src, self.s) if ns >= nt else (self.tgt, self.t)
        step = -(-max(ns, nt) // self.fanout)
        bounds = ck.boundaries(conn, sd, rng, step)
        if not bounds:  # cannot happen with n > list_rows >= 1; never loop if it does
            raise OperationFailed(
                f"verify {self.out.table}: a range of {max(ns, nt)} rows "
                "could not be split (were rows changed during the run?)"
            )
        ss, ts = self.both(partial(ck.bucket_sums, rng=rng, bounds=bounds))
        self.settle(rng, bounds, ss, ts)
        return sum(ss, Sums()), sum(ts, Sums())

    # -- reporting ----------------------------------------------------------------------------
    def _one_sided(self, rng: KeyRange, ns: int, nt: int) -> None:
        out = self.out
        kind: DiffKind = "only_in_target" if ns == 0 else "only_in_source"
        if ns:
            out.only_in_source += ns
        else:
            out.only_in_target += nt
        room = self.key_limit - len(out.first_keys)
        if room > 0:
            conn, sd = (self.src, self.s) if ns else (self.tgt, self.t)
            out.first_keys += [KeyDiff(kind, k) for k in readback.first_keys(conn, sd, rng, room)]
        self._emit(DiffRange(rng, ns, nt, None))

    def _record(self, rng: KeyRange, ns: int, nt: int, diffs: list[KeyDiff]) -> None:
        out = self.out
        for d in diffs:
            setattr(out, d.kind, getattr(out, d.kind) + 1)
        room = self.key_limit - len(out.first_keys)
        if room > 0:
            out.first_keys += diffs[:room]
        if diffs:
            self._emit(DiffRange(rng, ns, nt, diffs))

    def _emit(self, r: DiffRange) -> None:
        self.out.ranges_differing += 1
        if self.on_range is not None:
            self.on_range(r)


class _SubRows:
    """Both sides' rows in the differing sub-buckets of the pieces ``small``, by piece.

    Few pieces (at most two, or under a quarter of the pieces they span): each piece's
    range is read when asked for (its index walked). Otherwise one stream a side over
    the span of them all (:func:`pgferry.sync.readback.sub_rows_stream`: one scan a side,
    however many rows differ; memory bounded by its fetch size), both sides' first reads
    at once; pieces must then be asked for in ascending order.
    """

    _names = itertools.count()

    def __init__(
        self,
        d: Differ,
        bounds: Sequence[Key],
        pieces: Sequence[KeyRange],
        small: list[int],
        wants: Wants,
    ) -> None:
        self.differ, self.pieces, self.wants = d, pieces, wants
        self.small = frozenset(small)
        self.fetch = {j: wants.subs[j] for j in small if wants.subs.get(j)}
        self.first = min(self.fetch, default=0)
        span = max(self.fetch, default=0) - self.first + 1
        self.streams: list[Generator[tuple[int, Key, int], None, None]] = []
        self.ahead: list[tuple[int, Key, int] | None] = []
        if len(self.fetch) > 2 and len(self.fetch) * 4 >= span:
            last = self.first + span - 1
            wanted = sub_bitset(
                {j - self.first: subs for j, subs in self.fetch.items()}, wants.bits, span
            )
            name = f"pgferry_subrows_{next(self._names)}"
            rng = KeyRange(pieces[self.first].lo, pieces[last].hi)
            self.streams = [
                readback.sub_rows_stream(
                    c,
                    sd,
                    rng,
                    bounds[self.first : last],
                    wants.bits,
                    wanted,
                    name=name,
                    fetch=STREAM_FETCH,
                )
                for c, sd in ((d.src, d.s), (d.tgt, d.t))
            ]
            fut = d.pool.submit(next, self.streams[0], None)  # both servers scan at once
            tgt = next(self.streams[1], None)
            self.ahead = [fut.result(), tgt]

    def take(self, j: int) -> tuple[Rows, Rows] | None:
        """Both sides' rows of piece ``j`` (None: no sub-bucket of it differs)."""
        subs = self.fetch.get(j)
        if not subs:
            return None
        if not self.streams:
            got = self.differ.both(
                partial(
                    readback.rows_in_subs,
                    rng=self.pieces[j],
                    bounds=(),
                    bits=self.wants.bits,
                    wanted=sub_bitset({0: subs}, self.wants.bits, 1),
                )
            )
            return [(k, h) for _, k, h in got[0]], [(k, h) for _, k, h in got[1]]
        out: tuple[Rows, Rows] = ([], [])
        for i, stream in enumerate(self.streams):
            row = self.ahead[i]
            while row is not None and self.first + row[0] <= j:
                if self.first + row[0] == j:
                    out[i].append((row[1], row[2]))
                row = next(stream, None)
            self.ahead[i] = row
        return out

    def close(self) -> None:
        for stream in self.streams:
            stream.close()

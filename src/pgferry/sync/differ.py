"""The comparison loop behind :func:`pgferry.sync.verify.diff_table`.

Contract: a :class:`Differ` holds both connections and sides, the counters
(a :class:`pgferry.sync.verify.TableDiff`) and a one-thread pool so that each
step runs on the source and the target at the same time. For the pieces of a
range it is given (with their sums, and possibly their hash lists) it decides
per piece:

- equal sums: every row matches;
- empty on one side: every row is on the other side only (reported as a range,
  its keys are not fetched);
- at most ``list_rows`` rows on each side: compare the sets of row hashes of
  both sides (one query for all such pieces, 8 bytes a row), then fetch the
  keys of only the rows whose hash has no twin on the other side, and classify
  them (a key on both sides differs; otherwise it is on one side only);
- bigger: cut it into ``fanout`` pieces at keys of the side with more rows,
  compare their sums, and decide again (bisection).

Everything runs in the callers' transactions; nothing is written.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import psycopg

from pgferry.errors import OperationFailed
from pgferry.sync import checksum as ck
from pgferry.sync.chunks import DiffKind, Key, KeyDiff, KeyRange, Sums, classify, split

T = TypeVar("T")
Lists = dict[int, tuple[int, Any]]  # piece -> (rows, array of row hashes)


@dataclass(frozen=True)
class DiffRange:
    """A range whose rows differ; ``diffs`` is None when one side has no rows in it."""

    range: KeyRange
    source_rows: int
    target_rows: int
    diffs: list[KeyDiff] | None


class Counters(Protocol):
    table: str
    matched: int
    differing: int
    only_in_source: int
    only_in_target: int
    first_keys: list[KeyDiff]
    ranges_differing: int


#: changed rows (of both sides) whose keys are read at once: bounds memory when a range
#: differs everywhere
GROUP_ROWS = 100_000


def xor_all(values: Any) -> int:
    """XOR of an iterable of ints (a piece's checksum from its hash list)."""
    return functools.reduce(operator.xor, values, 0)


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
        lists: tuple[Lists, Lists] | None = None,
    ) -> None:
        """Decide every piece of ``outer`` cut at ``bounds``, given both sides' sums."""
        pieces = split(outer, bounds)
        small = [
            j
            for j, (a, b) in enumerate(zip(ss, ts, strict=True))
            if a != b and a.rows and b.rows and max(a.rows, b.rows) <= self.list_rows
        ]
        if small and lists is None:
            lists = self.both(partial(ck.hash_lists, rng=outer, bounds=bounds, buckets=small))
        # the keys of changed rows are read group by group (a bounded number of rows at a
        # time), each group when the walk below reaches its first piece
        found: dict[int, list[KeyDiff]] = {}
        smalls = {j: i for i, j in enumerate(small)}
        for j, (rng, a, b) in enumerate(zip(pieces, ss, ts, strict=True)):
            if a == b:
                self.out.matched += a.rows
            elif not (a.rows and b.rows):
                self._one_sided(rng, a.rows, b.rows)
            elif j in smalls:
                if j not in found:
                    assert lists is not None
                    found = self._changed_rows(bounds, pieces, small[smalls[j] :], *lists)
                diffs = found.pop(j)
                self.out.matched += a.rows - sum(1 for d in diffs if d.kind != "only_in_target")
                self._record(rng, a.rows, b.rows, diffs)
            else:
                self._split(rng, a.rows, b.rows)

    def _changed_rows(
        self,
        bounds: Sequence[Key],
        pieces: Sequence[KeyRange],
        todo: list[int],
        ls: Lists,
        lt: Lists,
    ) -> dict[int, list[KeyDiff]]:
        """The differing keys of the first pieces of ``todo``, from both sides' hash lists.

        Takes pieces until about :data:`GROUP_ROWS` changed rows are wanted, so
        memory stays bounded however much differs; returns ``{piece: diffs}``.
        """
        out: dict[int, list[KeyDiff]] = {}
        wants: dict[int, tuple[list[int], list[int]]] = {}
        wanted = 0
        group: list[int] = []
        for j in todo:
            if wanted >= GROUP_ROWS:
                break
            group.append(j)
            ns, hs = ls.get(j, (0, ()))
            nt, ht = lt.get(j, (0, ()))
            a, b = set(hs), set(ht)
            if len(a) != ns or len(b) != nt:  # two rows of one side share a hash: walk them
                srows, trows = self.both(partial(ck.row_hashes, rng=pieces[j]))
                out[j] = classify(srows, dict(trows)).diffs
            else:
                wants[j] = (list(a - b), list(b - a))
                wanted += len(wants[j][0]) + len(wants[j][1])
        rows: dict[int, tuple[list[tuple[Key, int]], list[tuple[Key, int]]]] = {}
        span = group[-1] - group[0] + 1
        if not wants:
            pass
        elif len(wants) <= 2 or len(wants) * 4 < span:
            # few pieces: read only their ranges
            for j, (wa, wb) in wants.items():
                sr, tr = self.both(partial(self._rows, rng=pieces[j], want_s=wa, want_t=wb))
                rows[j] = ([(k, h) for _, k, h in sr], [(k, h) for _, k, h in tr])
        else:
            # many: one pass over the group's span, the server says which piece each row is
            # in; a (parallel) sequential scan, as hashing the span costs more than reading
            # pages. A row is kept only if its hash is one its own piece is missing.
            want_s = {j: set(wa) for j, (wa, _) in wants.items()}
            want_t = {j: set(wb) for j, (_, wb) in wants.items()}
            sr, tr = self.both(
                partial(
                    self._rows,
                    rng=KeyRange(pieces[group[0]].lo, pieces[group[-1]].hi),
                    want_s=[h for wa, _ in wants.values() for h in wa],
                    want_t=[h for _, wb in wants.values() for h in wb],
                    bounds=bounds,
                    scan=True,
                )
            )
            rows = {j: ([], []) for j in wants}
            for piece, k, h in sr:
                if h in want_s.get(piece, ()):
                    rows[piece][0].append((k, h))
            for piece, k, h in tr:
                if h in want_t.get(piece, ()):
                    rows[piece][1].append((k, h))
        for j, (srows, trows) in rows.items():
            out[j] = classify(srows, dict(trows)).diffs
        return out

    def _rows(
        self,
        conn: psycopg.Connection[Any],
        sd: ck.Side,
        rng: KeyRange,
        want_s: list[int],
        want_t: list[int],
        bounds: Sequence[Key] = (),
        scan: bool = False,
    ) -> list[tuple[int, Key, int]]:
        want = want_s if conn is self.src else want_t
        if not want:
            return []
        return ck.rows_with_hashes(conn, sd, rng, want, bounds=bounds, scan=scan)

    def _split(self, rng: KeyRange, ns: int, nt: int) -> None:
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
            out.first_keys += [KeyDiff(kind, k) for k in ck.first_keys(conn, sd, rng, room)]
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

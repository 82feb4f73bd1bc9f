"""Read-only, chunked comparison of one table on two servers (verify and the checksum strategy).

API (stable; ``pgferry verify``, ``--mode verify`` and the incremental
``checksum`` strategy call it)::

    diff_table(src, tgt, table, *, chunk_rows=20_000, key_limit=20, leaf_rows=2_000,
               fanout=16, source_exprs=None, target_exprs=None,
               on_progress=None, on_range=None) -> TableDiff

- ``src`` / ``tgt``: open :class:`psycopg.Connection` objects to the source
  and the target. **Transactions**: when a connection is already inside a
  transaction (for instance a sync worker that ran ``SET TRANSACTION SNAPSHOT``
  to share the run's snapshot), every read runs in that transaction and
  ``diff_table`` neither commits nor rolls back. When it is idle,
  ``diff_table`` wraps its reads in its own ``REPEATABLE READ READ ONLY``
  transaction and ends it. Either way it pins the output settings the row
  text depends on with ``set_config(..., true)`` (transaction-local).
  Nothing is ever written.
- ``table``: any object with ``schema``, ``name``, ``qualname``, ``key``
  (non-empty tuple of column names), ``columns`` (the synced columns, key
  columns included) and ``where`` (SQL text or ``None``, applied on both
  sides): a :class:`pgferry.sync.plan.TablePlan` fits.
- ``source_exprs`` / ``target_exprs``: ``column -> psycopg.sql.Composable``
  select expressions hashed instead of the plain column, e.g. the masking
  expression the sync selected on the source (the target then holds its
  result, so pass it as ``source_exprs`` only).
- ``chunk_rows``: rows per top-level chunk (boundaries are every
  ``chunk_rows``-th source key); a chunk whose checksum differs is cut into
  ``fanout`` pieces until a piece holds at most ``leaf_rows`` rows on each
  side, whose keys and row hashes are then fetched and classified. A piece
  empty on one side is not fetched: all its rows exist only on the other.
- ``key_limit``: how many differing keys :attr:`TableDiff.first_keys` keeps.
- ``on_progress(rows_done, rows_total)``: called as chunks are compared
  (source rows; the total is an estimate until the end).
- ``on_range(DiffRange)``: called for every differing range, in key order,
  with the complete list of its differing keys (or ``diffs=None`` when one
  side of the range is empty: then every row of the range is on one side
  only). The checksum strategy copies exactly these ranges/keys; to select a
  range's rows build the predicate with
  :meth:`pgferry.sync.checksum.Side.predicate` (``TableDiff.source_side``).

Returns a :class:`TableDiff`: matched / differing / only-in-source /
only-in-target counts, the first differing keys, and a table checksum per
side (:func:`pgferry.sync.chunks.table_checksum`). :meth:`TableDiff.fill`
copies it into a :class:`pgferry.sync.result.TableResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pgferry.errors import OperationFailed
from pgferry.pg.connect import map_db_error
from pgferry.sync import checksum as ck
from pgferry.sync.chunks import (
    DiffKind,
    Key,
    KeyDiff,
    KeyRange,
    Sums,
    classify,
    split,
    table_checksum,
)

T = TypeVar("T")


class TableSpec(Protocol):
    """What :func:`diff_table` needs to know about a table (a ``TablePlan`` fits)."""

    @property
    def schema(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def qualname(self) -> str: ...
    @property
    def key(self) -> tuple[str, ...]: ...
    @property
    def columns(self) -> list[str]: ...
    @property
    def where(self) -> str | None: ...


@dataclass(frozen=True)
class DiffRange:
    """A range whose rows differ; ``diffs`` is None when one side has no rows in it."""

    range: KeyRange
    source_rows: int
    target_rows: int
    diffs: list[KeyDiff] | None


@dataclass
class TableDiff:
    """The comparison of one table (counts are rows)."""

    table: str
    key: tuple[str, ...]
    source_rows: int = 0
    target_rows: int = 0
    matched: int = 0
    differing: int = 0
    only_in_source: int = 0
    only_in_target: int = 0
    first_keys: list[KeyDiff] = field(default_factory=list)
    chunks: int = 0
    chunks_differing: int = 0
    ranges_differing: int = 0
    source_checksum: str = ""
    target_checksum: str = ""
    duration_s: float = 0.0
    source_side: ck.Side | None = field(default=None, repr=False)
    target_side: ck.Side | None = field(default=None, repr=False)

    @property
    def identical(self) -> bool:
        return not (self.differing or self.only_in_source or self.only_in_target)

    def first_keys_dicts(self) -> list[dict[str, Any]]:
        return [d.to_dict(self.key) for d in self.first_keys]

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": list(self.key),
            "identical": self.identical,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "matched": self.matched,
            "differing": self.differing,
            "only_in_source": self.only_in_source,
            "only_in_target": self.only_in_target,
            "first_differing_keys": self.first_keys_dicts(),
            "chunks": self.chunks,
            "chunks_differing": self.chunks_differing,
            "checksum_source": self.source_checksum,
            "checksum_target": self.target_checksum,
            "duration_s": round(self.duration_s, 3),
        }

    def fill(self, result: Any) -> None:
        """Copy the verify fields into a :class:`pgferry.sync.result.TableResult`."""
        result.matched = self.matched
        result.differing = self.differing
        result.only_in_source = self.only_in_source
        result.only_in_target = self.only_in_target
        result.first_differing_keys = self.first_keys_dicts()
        result.checksum_source = self.source_checksum
        result.checksum_target = self.target_checksum


@contextmanager
def reading(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run the block in ``conn``'s transaction, or in a new REPEATABLE READ READ ONLY one."""
    status = conn.info.transaction_status
    if status == TransactionStatus.INTRANS:
        ck.canonical_settings(conn)
        yield
        return
    if status != TransactionStatus.IDLE:
        raise OperationFailed(
            f"the connection given to verify is not usable (transaction status {status.name})"
        )
    saved = (conn.isolation_level, conn.read_only)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        with conn.transaction():
            ck.canonical_settings(conn)
            yield
    finally:
        conn.isolation_level, conn.read_only = saved


class _Differ:
    """One comparison in progress (holds both sides, the counters and the thread pool)."""

    def __init__(
        self,
        src: psycopg.Connection[Any],
        tgt: psycopg.Connection[Any],
        s: ck.Side,
        t: ck.Side,
        out: TableDiff,
        *,
        leaf_rows: int,
        fanout: int,
        key_limit: int,
        dense_rows: int,
        on_range: Callable[[DiffRange], None] | None,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.src, self.tgt, self.s, self.t, self.out = src, tgt, s, t, out
        self.leaf_rows, self.fanout, self.key_limit = leaf_rows, fanout, key_limit
        self.dense_rows = dense_rows
        self.on_range, self.pool = on_range, pool

    def both(self, f: Callable[[psycopg.Connection[Any], ck.Side], T]) -> tuple[T, T]:
        """Run ``f`` on the source (in the pool) and on the target, concurrently."""
        fut = self.pool.submit(f, self.src, self.s)
        tv = f(self.tgt, self.t)
        return fut.result(), tv

    def compare(
        self, ranges: Sequence[KeyRange], ss: Sequence[Sums], ts: Sequence[Sums], top: bool
    ) -> None:
        for rng, a, b in zip(ranges, ss, ts, strict=True):
            self.out.source_rows += a.rows if top else 0
            self.out.target_rows += b.rows if top else 0
            if a == b:
                self.out.matched += a.rows
                continue
            if top:
                self.out.chunks_differing += 1
            self.resolve(rng, a.rows, b.rows)

    def resolve(self, rng: KeyRange, ns: int, nt: int) -> None:
        """Classify the rows of a range whose sums differ (cut it further when it is big)."""
        out = self.out
        if ns == 0 or nt == 0:
            kind: DiffKind = "only_in_target" if ns == 0 else "only_in_source"
            if kind == "only_in_source":
                out.only_in_source += ns
            else:
                out.only_in_target += nt
            room = self.key_limit - len(out.first_keys)
            if room > 0:
                conn, sd = (self.src, self.s) if ns else (self.tgt, self.t)
                out.first_keys += [KeyDiff(kind, k) for k in ck.first_keys(conn, sd, rng, room)]
            self._emit(DiffRange(rng, ns, nt, None))
            return
        if max(ns, nt) <= self.leaf_rows:
            self.fetch(rng, ns, nt)
            return
        conn, sd = (self.src, self.s) if ns >= nt else (self.tgt, self.t)
        step = -(-max(ns, nt) // self.fanout)
        bounds = ck.boundaries(conn, sd, rng, step)
        if not bounds:  # cannot happen with n > leaf_rows >= 1; never loop if it does
            raise OperationFailed(
                f"verify {self.out.table}: a range of {max(ns, nt)} rows "
                "could not be split (were rows changed during the run?)"
            )
        pieces = split(rng, bounds)
        ss, ts = self.both(partial(ck.bucket_sums, rng=rng, bounds=bounds))
        differing = sum(1 for a, b in zip(ss, ts, strict=True) if a != b)
        if differing * 4 > len(pieces) and max(ns, nt) <= self.dense_rows:
            # differences are dense here: one fetch of the whole range costs less than
            # cutting it further and fetching many small pieces
            self.fetch(rng, ns, nt)
            return
        self.compare(pieces, ss, ts, top=False)

    def fetch(self, rng: KeyRange, ns: int, nt: int) -> None:
        """Fetch keys and row hashes of ``rng`` from both sides and classify them."""
        srows, trows = self.both(partial(ck.row_hashes, rng=rng))
        self.record(rng, ns, nt, srows, trows)

    def sweep(
        self,
        outer: KeyRange,
        bounds: Sequence[Key],
        pieces: Sequence[KeyRange],
        ss: Sequence[Sums],
        ts: Sequence[Sums],
        which: Sequence[int],
    ) -> None:
        """Classify the pieces ``which`` of ``outer`` with one ordered scan per side."""
        streams = dict(
            zip(
                (id(self.src), id(self.tgt)),
                self.both(lambda c, x: ck.Sweep(c, x, outer, bounds, which)),
                strict=True,
            )
        )
        try:
            for j in which:
                sg, tg = self.both(lambda c, x: streams[id(c)].next_group())
                if sg is None or tg is None or sg[0] != j or tg[0] != j:
                    raise OperationFailed(
                        f"verify {self.out.table}: the rows of a chunk changed during the run"
                    )
                self.record(pieces[j], ss[j].rows, ts[j].rows, sg[1], tg[1])
        finally:
            for st in streams.values():
                st.close()

    def record(
        self,
        rng: KeyRange,
        ns: int,
        nt: int,
        srows: Sequence[tuple[Key, int]],
        trows: Sequence[tuple[Key, int]],
    ) -> None:
        """Count and report the differences between the rows of one range."""
        out = self.out
        leaf = classify(srows, dict(trows))
        out.matched += leaf.matched
        out.differing += leaf.count("differing")
        out.only_in_source += leaf.count("only_in_source")
        out.only_in_target += leaf.count("only_in_target")
        room = self.key_limit - len(out.first_keys)
        if room > 0:
            out.first_keys += leaf.diffs[:room]
        if leaf.diffs:
            self._emit(DiffRange(rng, ns, nt, leaf.diffs))

    def _emit(self, r: DiffRange) -> None:
        self.out.ranges_differing += 1
        if self.on_range is not None:
            self.on_range(r)


def diff_table(
    src: psycopg.Connection[Any],
    tgt: psycopg.Connection[Any],
    table: TableSpec,
    *,
    chunk_rows: int = 20_000,
    key_limit: int = 20,
    leaf_rows: int = 2_000,
    fanout: int = 16,
    dense_rows: int = 50_000,
    batch_rows: int = 1_000_000,
    source_exprs: Mapping[str, sql.Composable] | None = None,
    target_exprs: Mapping[str, sql.Composable] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_range: Callable[[DiffRange], None] | None = None,
) -> TableDiff:
    """Compare ``table`` on ``src`` and ``tgt`` chunk by chunk (see the module docstring).

    ``batch_rows`` bounds how many rows one checksum query covers (progress is
    reported between batches). A range of at most ``dense_rows`` rows where
    more than a quarter of the pieces differ is fetched whole instead of being
    cut further. Server errors raise the mapped pgferry error.
    """
    started = time.monotonic()
    out = TableDiff(table.qualname, tuple(table.key))
    try:
        with reading(src), reading(tgt), ThreadPoolExecutor(1) as pool:
            s, t = ck.agree(
                ck.side(
                    src,
                    table.schema,
                    table.name,
                    table.key,
                    table.columns,
                    exprs=source_exprs,
                    where=table.where,
                ),
                ck.side(
                    tgt,
                    table.schema,
                    table.name,
                    table.key,
                    table.columns,
                    exprs=target_exprs,
                    where=table.where,
                ),
            )
            out.source_side, out.target_side = s, t
            d = _Differ(
                src,
                tgt,
                s,
                t,
                out,
                leaf_rows=max(1, leaf_rows),
                fanout=max(2, fanout),
                key_limit=key_limit,
                dense_rows=dense_rows,
                on_range=on_range,
                pool=pool,
            )
            chunk_rows = max(1, chunk_rows)
            estimate = ck.estimate_rows(src, s)
            if estimate is not None and estimate >= 20 * chunk_rows:
                bounds = ck.sampled_boundaries(src, s, estimate, chunk_rows)
            else:
                bounds = ck.boundaries(src, s, KeyRange(), chunk_rows)
            chunks = split(KeyRange(), bounds)
            out.chunks = len(chunks)
            # batches of about batch_rows rows, of equal size (no tiny last batch)
            batches = -(-len(chunks) * chunk_rows // max(1, batch_rows))
            per_batch = -(-len(chunks) // batches)
            total = len(chunks) * chunk_rows
            ssum, tsum = Sums(), Sums()
            for i in range(0, len(chunks), per_batch):
                group = chunks[i : i + per_batch]
                outer = KeyRange(group[0].lo, group[-1].hi)
                inner = bounds[i : i + len(group) - 1]
                ss, ts = d.both(partial(ck.bucket_sums, rng=outer, bounds=inner))
                for a, b in zip(ss, ts, strict=True):
                    ssum, tsum = ssum + a, tsum + b
                # many differing chunks: one ordered scan per side beats cutting each one
                # (and for random keys such as uuids, each cut reads pages all over the table)
                swept = [
                    j
                    for j, (a, b) in enumerate(zip(ss, ts, strict=True))
                    if a != b and a.rows and b.rows and max(a.rows, b.rows) <= dense_rows
                ]
                if len(swept) >= max(4, len(group) // 4):
                    d.sweep(outer, inner, group, ss, ts, swept)
                    out.chunks_differing += len(swept)
                    for j in swept:
                        out.source_rows += ss[j].rows
                        out.target_rows += ts[j].rows
                    keep = [j for j in range(len(group)) if j not in set(swept)]
                    d.compare(
                        [group[j] for j in keep],
                        [ss[j] for j in keep],
                        [ts[j] for j in keep],
                        top=True,
                    )
                else:
                    d.compare(group, ss, ts, top=True)
                if on_progress is not None:
                    on_progress(min(out.source_rows, total), max(total, out.source_rows))
            out.source_checksum = table_checksum(ssum)
            out.target_checksum = table_checksum(tsum)
    except psycopg.Error as e:
        raise map_db_error(e, f"verify {table.qualname}") from None
    out.duration_s = time.monotonic() - started
    if on_progress is not None:
        on_progress(out.source_rows, out.source_rows)
    return out

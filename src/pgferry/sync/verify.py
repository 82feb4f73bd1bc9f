"""Read-only, chunked comparison of one table on two servers (verify and the checksum strategy).

API (stable; ``pgferry verify``, ``--mode verify`` and the incremental
``checksum`` strategy call it)::

    diff_table(src, tgt, table, *, chunk_rows=20_000, key_limit=20, list_rows=50_000,
               fanout=16, batch_rows=1_000_000, source_exprs=None, target_exprs=None,
               on_progress=None, on_range=None, workers=()) -> TableDiff

- ``src`` / ``tgt``: open :class:`psycopg.Connection` objects to the source
  and the target. **Transactions**: when a connection is already inside a
  transaction (for instance a sync worker that ran ``SET TRANSACTION SNAPSHOT``
  to share the run's snapshot), every read runs in that transaction and
  ``diff_table`` neither commits nor rolls back. When it is idle,
  ``diff_table`` wraps its reads in its own ``REPEATABLE READ READ ONLY``
  transaction and ends it. Either way it pins the text output settings
  (for columns hashed as text) and a few planner settings per statement with
  ``set_config(..., true)``, and restores them before it returns.
  Nothing is ever written.
- ``table``: any object with ``schema``, ``name``, ``qualname``, ``key``
  (non-empty tuple of column names), ``columns`` (the synced columns, key
  columns included) and ``where`` (SQL text or ``None``, applied on both
  sides): a :class:`pgferry.sync.plan.TablePlan` fits.
- ``source_exprs`` / ``target_exprs``: ``column -> psycopg.sql.Composable``
  select expressions hashed instead of the plain column, e.g. the masking
  expression the sync selected on the source (the target then holds its
  result, so pass it as ``source_exprs`` only).
- ``chunk_rows``: rows per chunk. Chunk boundaries are source keys (every
  ``chunk_rows``-th key, or quantiles of a 1% row sample for big analyzed
  tables); each server computes every chunk's row count and XOR of 64-bit
  row hashes in one scan per batch of ``batch_rows`` rows. A chunk whose
  checksum differs and holds at most ``list_rows`` rows a side is settled by
  its *signature*: the XOR of the row hashes per sub-bucket of ~5 rows
  (grouped by a hash of the key), 10 bytes a sub-bucket; only the rows of
  sub-buckets that differ are then read (key and row hash) and classified
  by key. A bigger one is cut into ``fanout`` pieces at keys of the side
  with more rows and compared again (bisection). A piece empty on one side
  is never fetched: all its rows exist only on the other. When the first
  batch (a tenth of the table) shows differences in many chunks, the rest is
  read as signatures directly, in the same scan as the sums. Details:
  :mod:`pgferry.sync.differ`, :mod:`pgferry.sync.checksum`,
  :mod:`pgferry.sync.sides`, :mod:`pgferry.sync.batches`.
- ``key_limit``: how many differing keys :attr:`TableDiff.first_keys` keeps.
- ``on_progress(rows_done, rows_total)``: called as chunks are compared
  (source rows; the total is an estimate until the end).
- ``workers``: more ``(source, target)`` connection pairs whose transactions
  share the snapshots of ``src`` and ``tgt`` (the caller sets them up); the
  first batch runs on ``src``/``tgt``, the others on all pairs at once, and
  the counters and first keys are merged in key order, so the result is the
  same as with one pair. ``on_range`` and ``on_progress`` are then called from
  several threads, one call at a time.
- ``on_range(DiffRange)``: called for every differing range (in key order
  within a batch) with the complete list of its differing keys, or with
  ``diffs=None`` when one side of the range is empty (every row of the range
  is then on one side only). The checksum strategy copies exactly these
  ranges/keys; to select a range's rows build the predicate with
  :meth:`pgferry.sync.sides.Side.predicate` (``TableDiff.source_side``).

Returns a :class:`TableDiff`: matched / differing / only-in-source /
only-in-target counts, the first differing keys, and a table checksum per
side (:func:`pgferry.sync.chunks.table_checksum`). :meth:`TableDiff.fill`
copies it into a :class:`pgferry.sync.result.TableResult`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pgferry.errors import OperationFailed
from pgferry.pg.connect import map_db_error
from pgferry.sync import checksum as ck
from pgferry.sync.batches import plan_batches, run_parallel
from pgferry.sync.chunks import KeyDiff, KeyRange, Sums, split, sub_bits, table_checksum
from pgferry.sync.differ import Differ, DiffRange, Sigs

__all__ = ["DiffRange", "TableDiff", "TableSpec", "diff_table", "reading"]


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

    def add(self, part: TableDiff, key_limit: int) -> None:
        """Add the counts of one batch (``part``), compared after the batches counted here."""
        for name in (
            "source_rows",
            "target_rows",
            "matched",
            "differing",
            "only_in_source",
            "only_in_target",
            "chunks_differing",
            "ranges_differing",
        ):
            setattr(self, name, getattr(self, name) + getattr(part, name))
        self.first_keys += part.first_keys[: max(0, key_limit - len(self.first_keys))]

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
        with ck.settings(conn, **ck.CANONICAL):  # restored: the caller's transaction goes on
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
        with conn.transaction(), ck.settings(conn, **ck.CANONICAL):
            yield
    finally:
        conn.isolation_level, conn.read_only = saved


def diff_table(
    src: psycopg.Connection[Any],
    tgt: psycopg.Connection[Any],
    table: TableSpec,
    *,
    chunk_rows: int = 20_000,
    key_limit: int = 20,
    list_rows: int = 50_000,
    fanout: int = 16,
    batch_rows: int = 1_000_000,
    source_exprs: Mapping[str, sql.Composable] | None = None,
    target_exprs: Mapping[str, sql.Composable] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_range: Callable[[DiffRange], None] | None = None,
    workers: Sequence[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]] = (),
) -> TableDiff:
    """Compare ``table`` on ``src`` and ``tgt`` chunk by chunk (see the module docstring).

    ``batch_rows`` bounds how many rows one checksum query covers (progress is
    reported between batches). ``workers``: more (source, target) connection
    pairs, each inside a transaction that shares the snapshot of ``src``
    (respectively ``tgt``); the batches after the first are then compared on
    all pairs at once (key ranges in parallel) and the results merged in key
    order, the same as one pair would give. Server errors raise the mapped
    pgferry error.
    """
    started = time.monotonic()
    out = TableDiff(table.qualname, tuple(table.key))
    chunk_rows = max(1, chunk_rows)
    try:
        with ExitStack() as stack:
            for conn in (src, tgt, *(c for pair in workers for c in pair)):
                stack.enter_context(reading(conn))
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
            pairs = [(src, tgt), *workers]
            pools = [stack.enter_context(ThreadPoolExecutor(1)) for _ in pairs]
            lock = threading.Lock()
            emit = on_range
            if on_range is not None and workers:

                def emit(r: DiffRange) -> None:
                    with lock:
                        on_range(r)

            def differ(i: int, counters: TableDiff) -> Differ:
                return Differ(
                    pairs[i][0],
                    pairs[i][1],
                    s,
                    t,
                    counters,
                    pools[i],
                    list_rows=max(1, list_rows),
                    fanout=max(2, fanout),
                    key_limit=key_limit,
                    on_range=emit,
                )

            estimate = ck.estimate_rows(src, s)
            if estimate is not None and estimate >= 20 * chunk_rows:
                bounds = ck.sampled_boundaries(src, s, estimate, chunk_rows)
            else:
                bounds = ck.boundaries(src, s, KeyRange(), chunk_rows)
            chunks = split(KeyRange(), bounds)
            out.chunks = len(chunks)
            total = estimate or len(chunks) * chunk_rows  # for progress only
            if workers:
                # at least two batches a pair, so that the pairs share the work evenly
                batch_rows = min(batch_rows, max(chunk_rows, -(-total // (2 * len(pairs)))))
            batches = plan_batches(len(chunks), chunk_rows, batch_rows)
            done = [0]

            def batch(k: int, pair: int, part: TableDiff, dense: bool) -> tuple[Sums, Sums, bool]:
                """Compare batch ``k`` on pair ``pair``, counting into ``part``.

                Returns the batch's sums and whether differences are everywhere.
                """
                d = differ(pair, part)
                i, j = batches[k]
                group = chunks[i:j]
                outer = KeyRange(group[0].lo, group[-1].hi)
                inner = bounds[i : j - 1]
                bits = sub_bits(chunk_rows)
                sigs = None
                if dense:
                    # differences are everywhere: read every chunk's signature right away
                    # instead of sums first and signatures of the differing chunks after
                    sigs = Sigs(
                        bits, *d.both(partial(ck.signatures, rng=outer, bounds=inner, bits=bits))
                    )
                    ss, ts = (
                        [sig[x].sums if x in sig else Sums() for x in range(len(group))]
                        for sig in (sigs.src, sigs.tgt)
                    )
                else:
                    ss, ts = d.both(partial(ck.bucket_sums, rng=outer, bounds=inner))
                ssum, tsum, ndiff = Sums(), Sums(), 0
                for a, b in zip(ss, ts, strict=True):
                    ssum, tsum = ssum + a, tsum + b
                    part.source_rows += a.rows
                    part.target_rows += b.rows
                    ndiff += a != b
                part.chunks_differing += ndiff
                d.settle(outer, inner, ss, ts, sigs)
                if on_progress is not None:
                    with lock:
                        done[0] += ssum.rows
                        on_progress(min(done[0], total), max(total, done[0]))
                return ssum, tsum, dense or (ndiff >= 2 and ndiff * 4 >= len(group))

            # the first batch (a probe) on the first pair: it says whether differences are
            # everywhere; the rest in order on one pair, or spread over all pairs
            ssum, tsum, dense = batch(0, 0, out, False)
            if not workers:
                for k in range(1, len(batches)):
                    a, b, dense = batch(k, 0, out, dense)
                    ssum, tsum = ssum + a, tsum + b
            else:
                parts = run_parallel(len(batches), len(pairs), batch, dense,
                                     lambda: TableDiff(out.table, out.key))
                for a, b, part in parts:
                    ssum, tsum = ssum + a, tsum + b
                    out.add(part, key_limit)
            out.source_checksum = table_checksum(ssum)
            out.target_checksum = table_checksum(tsum)
    except psycopg.Error as e:
        raise map_db_error(e, f"verify {table.qualname}") from None
    out.duration_s = time.monotonic() - started
    if on_progress is not None:
        on_progress(out.source_rows, out.source_rows)
    return out

"""Read-only, chunked comparison of one table on two servers (verify and the checksum strategy).

API (stable; ``pgferry verify``, ``--mode verify`` and the incremental
``checksum`` strategy call it)::

    diff_table(src, tgt, table, *, chunk_rows=20_000, key_limit=20, list_rows=50_000,
               fanout=16, batch_rows=1_000_000, source_exprs=None, target_exprs=None,
               on_progress=None, on_range=None, workers=(), expect_changes=False,
               pack=True) -> TableDiff

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
- ``expect_changes``: how the comparison starts (the result is the same
  either way; only the cost differs). False (verify, the check after a sync):
  each server first reads every row once and sends only its count and the XOR
  of the 64-bit row hashes — the least any comparison can read; equal sums
  end the comparison. Otherwise, or with ``expect_changes`` (a sync), the
  table is cut into chunks whose boundaries are source keys (every
  ``chunk_rows``-th key, or quantiles of a row sample for big analyzed
  tables). Where every key column is an integer or a uuid (declared alike on
  both sides), the pieces are then read packed, as a sync reads them (below),
  with or without ``expect_changes``: for a table where 1% of 4M rows differ, a
  verify took 14.8 s by chunk sums and 4.6 s packed, with the same result.
  Otherwise, without ``expect_changes`` each server computes every chunk's
  count and XOR (one scan); a chunk whose checksum differs and holds at most
  ``list_rows`` rows a side is settled by its *signature*: the XOR of the row
  hashes per sub-bucket of ~5 rows (grouped by a hash of the key), 10 bytes a
  sub-bucket; only the rows of sub-buckets that differ are then read (key and
  row hash) and classified by key. A bigger one is cut into ``fanout`` pieces
  at keys of the side with more rows and compared again (bisection). With
  ``expect_changes`` every chunk's signature is read in the first scan, and
  streamed (a few chunks in memory at a time), so a table where 1% of the rows
  changed at random is settled in two scans a side; and when every key column
  is an integer or a uuid (declared alike on both sides), pieces of
  ``PACK_CHUNKS`` chunks are read instead, once a side, every row's key and row
  hash packed into one ``bytea`` and matched in numpy
  (:mod:`pgferry.sync.packed`): one scan a side, nothing grouped, the next piece
  read while one is matched. A piece empty on one side
  is never fetched: all its rows exist only on the other. Scans that read the
  whole table go in physical batches of ~``batch_rows`` rows (block ranges,
  :mod:`pgferry.sync.batches`), each row read once. Details:
  :mod:`pgferry.sync.differ`, :mod:`pgferry.sync.checksum`,
  :mod:`pgferry.sync.sides`, :mod:`pgferry.sync.rowhash`.
- ``pack``: False reads integer and uuid keys as every other key is read (chunk
  sums, signatures), not packed; the result is the same (tests of that path).
- ``key_limit``: how many differing keys :attr:`TableDiff.first_keys` keeps.
- ``on_progress(rows_done, rows_total)``: called as chunks are compared
  (source rows; the total is an estimate until the end).
- ``workers``: more ``(source, target)`` connection pairs whose transactions
  share the snapshots of ``src`` and ``tgt`` (the caller sets them up): the
  physical batches of the whole-table sums are read on all pairs at once; the
  rest runs on ``src``/``tgt``, so the result is the same as with one pair.
  ``on_progress`` is then called from several threads, one call at a time.
- ``on_range(DiffRange)``: called for every differing range (in key order)
  with the complete list of its differing keys, or with ``diffs=None`` when
  one side of the range is empty (every row of the range is then on one side
  only). The checksum strategy copies exactly these
  ranges/keys; to select a range's rows build the predicate with
  :meth:`pgferry.sync.sides.Side.predicate` (``TableDiff.source_side``).

Returns a :class:`TableDiff`: matched / differing / only-in-source /
only-in-target counts, the first differing keys, and a table checksum per
side (:func:`pgferry.sync.chunks.table_checksum`). :meth:`TableDiff.fill`
copies it into a :class:`pgferry.sync.result.TableResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pgferry.errors import OperationFailed
from pgferry.pg.connect import map_db_error
from pgferry.sync import checksum as ck
from pgferry.sync import packed, passes, small_ints, streamed
from pgferry.sync.chunks import (
    Key,
    KeyDiff,
    KeyRange,
    Sums,
    sub_bits,
    table_checksum,
)
from pgferry.sync.differ import DiffRange

T = TypeVar("T")

#: a sync whose keys can be packed reads pieces of this many chunks at once
PACK_CHUNKS = 20

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
    expect_changes: bool = False,
    pack: bool = True,
) -> TableDiff:
    """Compare ``table`` on ``src`` and ``tgt`` (see the module docstring).

    Server errors raise the mapped pgferry error.
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
            if not expect_changes:  # a comparison that keeps no hash (small_ints)
                s, t = small_ints.plain_int8(src, s, tgt, t)
            out.source_side, out.target_side = s, t
            pairs = [(src, tgt), *workers]
            pools = [stack.enter_context(ThreadPoolExecutor(1)) for _ in pairs]
            run = passes.Comparison(
                pairs,
                pools,
                s,
                t,
                out,
                list_rows=max(1, list_rows),
                fanout=max(2, fanout),
                key_limit=key_limit,
                on_range=on_range,
                on_progress=on_progress,
            )
            estimate = ck.estimate_rows(src, s)
            run.total = estimate or 0
            if not expect_changes:
                whole = run.whole_sums(batch_rows)
                if whole[0] == whole[1]:  # every row matches: one scan a side was enough
                    out.matched, out.chunks = whole[0].rows, 1
                    _finish(out, *whole)
                    out.duration_s = time.monotonic() - started
                    return out
            # integer or uuid keys are read packed (a sync; a verify whose whole sums
            # differ): a table of up to
            # ONE_PIECE_CHUNKS chunks as one piece (one sequential scan a side); a bigger
            # one stored about in key order in pieces of PACK_CHUNKS chunks by key range
            # (its key index walked: pages in order); a bigger one stored out of key order
            # (random uuids) in physical slices (PostgreSQL 14; pgferry.sync.streamed),
            # else by signatures (a key range would read most pages once per piece)
            packable = pack and packed.packable(s, t)
            ordered = packable and packed.in_key_order(src, s)
            sliced = packable and not ordered and streamed.possible(s, t)
            packing = ordered or sliced
            one = packing and packed.one_piece(
                ((src, s), (tgt, t)), packed.ONE_PIECE_CHUNKS * chunk_rows
            )

            def cut(step: int) -> list[Key]:
                if one:
                    return []  # one piece, one sequential scan a side
                # (sampled for a table of 20 chunks or more: an exact cut reads every key)
                if estimate is not None and estimate >= 20 * chunk_rows:
                    return ck.sampled_boundaries(src, s, estimate, step)
                return ck.boundaries(src, s, KeyRange(), step)

            bounds = cut(chunk_rows * PACK_CHUNKS if packing else chunk_rows)
            cap = packed.MAX_CHUNKS * chunk_rows
            got = None
            if sliced and not one:
                got = run.streamed(bounds, -(-(estimate or 0) // (chunk_rows * PACK_CHUNKS)), cap)
                if got is None:  # too many rows moved: signatures, as without slices
                    packing = False
                    bounds = cut(chunk_rows)
            out.chunks = len(bounds) + 1
            if got is not None:
                ss, ts = got
            elif packing:
                ss, ts = run.packed(bounds, cap)
            elif expect_changes:
                ss, ts, wants = run.signatures(bounds, sub_bits(chunk_rows))
                run.differ(0).settle(KeyRange(), bounds, ss, ts, wants=wants)
            else:
                ss, ts = run.chunk_sums(bounds, batch_rows)
                run.differ(0).settle(KeyRange(), bounds, ss, ts)
            out.chunks_differing = sum(a != b for a, b in zip(ss, ts, strict=True))
            _finish(out, sum(ss, Sums()), sum(ts, Sums()))
    except psycopg.Error as e:
        raise map_db_error(e, f"verify {table.qualname}") from None
    out.duration_s = time.monotonic() - started
    if on_progress is not None:
        on_progress(out.source_rows, out.source_rows)
    return out


def _finish(out: TableDiff, ssum: Sums, tsum: Sums) -> None:
    out.source_rows, out.target_rows = ssum.rows, tsum.rows
    out.source_checksum = table_checksum(ssum)
    out.target_checksum = table_checksum(tsum)

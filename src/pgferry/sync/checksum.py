"""The queries of the chunked comparison, run on one side's connection.

Contract: every function takes a connection the caller owns and a
:class:`~pgferry.sync.sides.Side` (re-exported here with :func:`side`,
:func:`agree`, :func:`settings` and :func:`estimate_rows`) and
never begins, commits or rolls back a transaction: it runs inside whatever
transaction (and snapshot) the connection is in. Planner settings a query
needs are set transaction-locally and restored right after it.

A range's checksum is ``count(*)`` plus the XOR of the row hashes
(:mod:`pgferry.sync.sides`), which does not depend on row order, so chunk
checksums come from one scan with ``width_bucket`` over the chunk
boundaries. :func:`signatures` adds, per chunk, the XOR of the row hashes
per sub-bucket (rows grouped by a few bits of a hash of their key), so that
for a chunk that differs :mod:`pgferry.sync.readback` reads the keys and row hashes
of only the rows in sub-buckets that differ.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Generator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from pgferry.sync.chunks import Key, KeyRange, Signature, Sums
from pgferry.sync.columns import ColumnInfo
from pgferry.sync.sides import (
    CANONICAL,
    TABLE_OR_PARTITION,
    Side,
    agree,
    estimate_rows,
    settings,
    side,
)

__all__ = [
    "Blocks",
    "ColumnInfo",
    "Side",
    "agree",
    "block_ranges",
    "in_blocks",
    "boundaries",
    "bucket_sums",
    "CANONICAL",
    "settings",
    "estimate_rows",
    "sampled_boundaries",
    "side",
    "signature_stream",
    "signatures",
    "sums",
]

#: a range of heap blocks ``[lo, hi)`` (None: open), a physical slice of a table (and of each
#: of its partitions): the rows of a table are cut into such slices to read them in batches,
#: each slice read once, whatever the order of the keys on the disk
Blocks = tuple[int | None, int | None]
WHOLE: Blocks = (None, None)

_PAGES = sql.SQL("SELECT coalesce(max(c.relpages), 0)::bigint FROM pg_class c WHERE {}").format(
    TABLE_OR_PARTITION
)


#: planner settings of the :func:`signatures` query
SIGNATURE_SETTINGS = {
    "enable_sort": "off",
    "max_parallel_workers_per_gather": "0",
    "work_mem": "64MB",
}


def block_ranges(conn: psycopg.Connection[Any], s: Side, n: int) -> list[Blocks]:
    """``n`` consecutive block ranges covering ``s``'s table (fewer for a small one).

    From the catalog's page count (of the largest partition, as a block range
    applies to every partition); the last range is open, so pages added since the
    last ``ANALYZE`` or ``VACUUM`` are read too. One range on PostgreSQL 13, which has
    no TID range scan: each range would be a scan of the whole table.
    """
    if s.server_version < 140000:
        return [WHOLE]
    row = conn.execute(_PAGES, {"t": s.table.as_string(conn)}).fetchone()
    pages = int(row[0]) if row else 0
    n = max(1, min(n, pages // 8))
    if n == 1:
        return [WHOLE]
    step = -(-pages // n)
    return [
        (None if i == 0 else i * step, None if i == n - 1 else (i + 1) * step) for i in range(n)
    ]


def in_blocks(blocks: Blocks) -> tuple[sql.Composable, list[Any]]:
    """``ctid`` within ``blocks`` (a TID range scan; PostgreSQL 14 or later), and its params."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for bound, op in zip(blocks, (">=", "<"), strict=True):
        if bound is not None:
            parts.append(sql.SQL("ctid {} %s::tid").format(sql.SQL(op)))
            params.append(f"({bound},0)")
    if not parts:
        return sql.SQL("TRUE"), params
    return sql.SQL(" AND ").join(parts), params


def sums(conn: psycopg.Connection[Any], s: Side, blocks: Blocks = WHOLE) -> Sums:
    """Row count and XOR of the row hashes of ``s``'s rows in ``blocks``: one scan, no grouping.

    The least a comparison can read; when both sides' sums of the whole table
    agree, every row matches.
    """
    pred, params = s.predicate(KeyRange())
    bpred, bparams = in_blocks(blocks)
    lateral, x = s.hashed()
    q = sql.SQL("SELECT count(*), {x} FROM {table} {lat} WHERE {pred} AND {b}").format(
        x=x, table=s.table, lat=lateral, pred=pred, b=bpred
    )
    row = conn.execute(q, [*params, *bparams]).fetchone()
    return Sums(int(row[0]), int(row[1] or 0)) if row and row[0] else Sums()


def boundaries(conn: psycopg.Connection[Any], s: Side, rng: KeyRange, step: int) -> list[Key]:
    """Every ``step``-th key of ``rng`` in key order (the first keys of the 2nd, 3rd... piece)."""
    pred, params = s.predicate(rng)
    q = sql.SQL(
        "SELECT {values} FROM (SELECT {names}, row_number() OVER (ORDER BY {order}) AS "
        "pgferry_rn FROM {table} WHERE {pred}) s WHERE (s.pgferry_rn - 1) %% %s = 0 AND "
        "s.pgferry_rn > 1 ORDER BY s.pgferry_rn"
    ).format(
        values=s.key_values("s"),
        names=s.key_names(),
        order=sql.SQL(", ").join(s.key_exprs()),
        table=s.table,
        pred=pred,
    )
    return [tuple(r) for r in conn.execute(q, [*params, step])]


def sampled_boundaries(
    conn: psycopg.Connection[Any], s: Side, estimate: int, chunk_rows: int
) -> list[Key]:
    """Approximate boundaries every ~``chunk_rows`` rows from a row sample of the table.

    Sorts a block sample of ~400 rows per chunk (``SYSTEM``: it reads only
    the sampled pages) instead of every key. In a table stored in key order a
    page holds neighbouring keys, so chunk sizes then vary, up to a few times
    ``chunk_rows``; that costs nothing in correctness (any sorted list of keys
    cuts both sides alike) and little in speed (a big differing chunk is cut
    further).
    """
    chunks = max(1, estimate // max(1, chunk_rows))
    want = max(400 * chunks, 20_000)
    pct = min(100.0, 100.0 * want / max(1, estimate))
    per_chunk = max(1, round(estimate * pct / 100 / chunks))
    pred, params = s.predicate(KeyRange())
    q = sql.SQL(
        "SELECT {values} FROM (SELECT {names}, row_number() OVER (ORDER BY {order}) AS "
        "pgferry_rn FROM {table} TABLESAMPLE SYSTEM (%s) WHERE {pred}) s "
        "WHERE s.pgferry_rn %% %s = 0 ORDER BY s.pgferry_rn"
    ).format(
        values=s.key_values("s"),
        names=s.key_names(),
        order=sql.SQL(", ").join(s.key_exprs()),
        table=s.table,
        pred=pred,
    )
    return [tuple(r) for r in conn.execute(q, [pct, *params, per_chunk])]


def bucket_sums(
    conn: psycopg.Connection[Any],
    s: Side,
    rng: KeyRange,
    bounds: Sequence[Key],
    blocks: Blocks = WHOLE,
) -> list[Sums]:
    """The :class:`Sums` of each of the ``len(bounds) + 1`` pieces of ``rng`` cut at ``bounds``.

    One scan with ``width_bucket`` (of the rows in ``blocks`` only, a physical
    slice of the table). The planner cannot know there are only a few buckets: it
    would sort the whole table (to disk) to group it, and it would not aggregate
    in parallel workers. Both are corrected for this one statement
    (``enable_sort``, ``parallel_tuple_cost``), then restored.
    """
    pred, params = s.predicate(rng)
    bpred, bparams = in_blocks(blocks)
    out = [Sums() for _ in range(len(bounds) + 1)]
    lateral, x = s.hashed()
    if not bounds:
        q = sql.SQL("SELECT 0, count(*), {x} FROM {table} {lat} WHERE {pred} AND {bp}").format(
            x=x, table=s.table, lat=lateral, pred=pred, bp=bpred
        )
        rows = conn.execute(q, [*params, *bparams]).fetchall()
    else:
        bexpr, aparams = piece_of(s, bounds)
        q = sql.SQL(
            "SELECT {b}, count(*), {x} FROM {table} {lat} WHERE {pred} AND {bp} GROUP BY 1"
        ).format(b=bexpr, x=x, table=s.table, lat=lateral, pred=pred, bp=bpred)
        with settings(conn, enable_sort="off", parallel_tuple_cost="0"):
            rows = conn.execute(q, [*aparams, *params, *bparams]).fetchall()
    for b, n, x in rows:
        if n:
            out[b] = Sums(int(n), int(x or 0))
    return out


def piece_of(s: Side, bounds: Sequence[Key]) -> tuple[sql.Composable, list[Any]]:
    """The server-side expression numbering a row's piece of a range cut at ``bounds``.

    ``width_bucket`` over the bounds. With a composite key, comparing row
    values costs more than hashing a row, so the bucket comes from the first
    key column alone (a binary search), which is exact unless that value is the
    first column of the bound it lands on (one more comparison: the bound at
    that position); only those rows are placed by comparing whole keys.
    """
    if not bounds:
        return sql.SQL("0"), []
    arr, aparams = s.thresholds(bounds)
    whole = sql.SQL("width_bucket({}, {})").format(s.key_tuple(), arr)
    if len(s.key) == 1:
        return whole, list(aparams)
    first = s.key_exprs()[0]
    firsts = sql.SQL("%s::{}[]").format(s.key_type(s.key[0]))
    expr = sql.SQL(
        "CASE WHEN {k} = ({f})[width_bucket({k}, {f})] THEN {whole} ELSE width_bucket({k}, {f}) END"
    ).format(k=first, f=firsts, whole=whole)
    col = [b[0] for b in bounds]
    return expr, [col, col, *aparams, col]


def signatures(
    conn: psycopg.Connection[Any],
    s: Side,
    rng: KeyRange,
    bounds: Sequence[Key],
    bits: int,
    buckets: Sequence[int] | None = None,
) -> dict[int, Signature]:
    """The :class:`Signature` of each non-empty piece of ``rng`` cut at ``bounds``.

    Only the pieces ``buckets`` (all when None). One scan: the server groups
    the rows by piece and sub-bucket (the low ``bits`` bits of
    :meth:`Side.key_hash`) and sends, per piece, its count and XOR and two
    strings, the sub-bucket numbers (``int2send``) and their XORs
    (``int8send``), which Python reads as arrays: no object per row. The two
    aggregates of one group see its rows in the same order (one Agg node), so
    the strings are parallel; no order is asked for (sorting would cost more
    than matching the buckets in Python). Planner settings as in
    :func:`bucket_sums`, except parallel workers: their partial groups would
    hardly be fewer than the rows they read; ``work_mem`` is raised for this
    statement so the grouping of ~``ROWS_PER_SUB`` rows a group stays in memory.
    """
    q, qparams = _signature_query(s, rng, bounds, bits, buckets)
    out: dict[int, Signature] = {}
    with settings(conn, **SIGNATURE_SETTINGS):
        for b, n, x, subs, xors in conn.execute(q, qparams, binary=True):
            out[b] = Signature(int(n), int(x), _array("h", subs), _array("q", xors))
    return out


def _signature_query(
    s: Side, rng: KeyRange, bounds: Sequence[Key], bits: int, buckets: Sequence[int] | None = None
) -> tuple[sql.Composed, list[Any]]:
    pred, params = s.predicate(rng)
    bexpr, aparams = piece_of(s, bounds)
    lateral, x = s.hashed()
    mask = sql.Literal((1 << bits) - 1)
    filt: sql.Composable = sql.SQL("")
    fparams: list[Any] = []
    if buckets is not None:
        filt, fparams = sql.SQL("AND {} = ANY(%s)").format(bexpr), [*aparams, list(buckets)]
    q = sql.SQL(
        "SELECT s.pgferry_g >> {bits}, sum(s.pgferry_n)::int8, {outer_x}, "
        "string_agg(int2send((s.pgferry_g & {mask})::int2), ''::bytea), "
        "string_agg(int8send(s.pgferry_x), ''::bytea) "
        "FROM (SELECT ({b}::int8 << {bits}) | ({kh} & {mask}) AS pgferry_g, "
        "count(*) AS pgferry_n, {x} AS pgferry_x FROM {table} {lat} WHERE {pred} {filt} "
        "GROUP BY 1) s GROUP BY 1"
    ).format(
        bits=sql.Literal(bits),
        mask=mask,
        b=bexpr,
        kh=s.key_hash(),
        outer_x=s.xor_agg(sql.SQL("s.pgferry_x")),
        x=x,
        lat=lateral,
        table=s.table,
        pred=pred,
        filt=filt,
    )
    return q, [*aparams, *params, *fparams]


def signature_stream(
    conn: psycopg.Connection[Any], s: Side, bounds: Sequence[Key], bits: int, *, fetch: int = 32
) -> Generator[tuple[int, Signature], None, None]:
    """``(piece, Signature)`` of every non-empty piece of the table, in piece order.

    :func:`signatures` of the whole table in one scan, read through a server-side
    cursor ``fetch`` pieces at a time, so that only a few pieces' signatures are in
    memory at once, however big the table. The first ``next()`` waits for the scan
    (the server groups every row before it sends the first piece). Runs in the
    connection's open transaction; its planner settings hold until the iterator
    is exhausted or closed.
    """
    q, params = _signature_query(s, KeyRange(), bounds, bits)
    q = sql.SQL("{} ORDER BY 1").format(q)
    with (
        settings(conn, **SIGNATURE_SETTINGS),
        conn.cursor("pgferry_signatures", binary=True) as cur,
    ):
        cur.execute(q, params)
        while rows := cur.fetchmany(fetch):
            for b, n, x, subs, xors in rows:
                yield b, Signature(int(n), int(x), _array("h", subs), _array("q", xors))


def _array(typecode: str, data: bytes | None) -> array[int]:
    """A big-endian ``int2send``/``int8send`` string as an array of ints."""
    a = array(typecode)
    if data:
        a.frombytes(data)
        if sys.byteorder == "little":
            a.byteswap()
    return a

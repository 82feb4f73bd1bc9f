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
for a chunk that differs :func:`rows_in_subs` reads the keys and row hashes
of only the rows in sub-buckets that differ.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from pgferry.sync.chunks import Key, KeyRange, Signature, Sums
from pgferry.sync.sides import (
    CANONICAL,
    ColumnInfo,
    Side,
    agree,
    estimate_rows,
    settings,
    side,
)

__all__ = [
    "ColumnInfo",
    "Side",
    "agree",
    "boundaries",
    "bucket_sums",
    "CANONICAL",
    "settings",
    "estimate_rows",
    "first_keys",
    "row_hashes",
    "rows_in_subs",
    "sampled_boundaries",
    "side",
    "signatures",
]


#: planner settings of the :func:`signatures` query
SIGNATURE_SETTINGS = {
    "enable_sort": "off",
    "max_parallel_workers_per_gather": "0",
    "work_mem": "64MB",
}


def boundaries(conn: psycopg.Connection[Any], s: Side, rng: KeyRange, step: int) -> list[Key]:
    """Every ``step``-th key of ``rng`` in key order (the first keys of the 2nd, 3rd... piece)."""
    pred, params = s.predicate(rng)
    q = sql.SQL(
        "SELECT {names} FROM (SELECT {names}, row_number() OVER (ORDER BY {order}) AS "
        "pgferry_rn FROM {table} WHERE {pred}) s WHERE (s.pgferry_rn - 1) %% %s = 0 AND "
        "s.pgferry_rn > 1 ORDER BY s.pgferry_rn"
    ).format(names=s.key_names(), order=sql.SQL(", ").join(s.key_exprs()), table=s.table, pred=pred)
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
        "SELECT {names} FROM (SELECT {names}, row_number() OVER (ORDER BY {order}) AS "
        "pgferry_rn FROM {table} TABLESAMPLE SYSTEM (%s) WHERE {pred}) s "
        "WHERE s.pgferry_rn %% %s = 0 ORDER BY s.pgferry_rn"
    ).format(names=s.key_names(), order=sql.SQL(", ").join(s.key_exprs()), table=s.table, pred=pred)
    return [tuple(r) for r in conn.execute(q, [pct, *params, per_chunk])]


def bucket_sums(
    conn: psycopg.Connection[Any], s: Side, rng: KeyRange, bounds: Sequence[Key]
) -> list[Sums]:
    """The :class:`Sums` of each of the ``len(bounds) + 1`` pieces of ``rng`` cut at ``bounds``.

    One scan with ``width_bucket``. The planner cannot know there are only a
    few buckets: it would sort the whole table (to disk) to group it, and it
    would not aggregate in parallel workers. Both are corrected for this one
    statement (``enable_sort``, ``parallel_tuple_cost``), then restored.
    """
    pred, params = s.predicate(rng)
    out = [Sums() for _ in range(len(bounds) + 1)]
    lateral, x = s.hashed()
    if not bounds:
        q = sql.SQL("SELECT 0, count(*), {x} FROM {table} {lat} WHERE {pred}").format(
            x=x, table=s.table, lat=lateral, pred=pred
        )
        rows = conn.execute(q, params).fetchall()
    else:
        bexpr, aparams = piece_of(s, bounds)
        q = sql.SQL(
            "SELECT {b}, count(*), {x} FROM {table} {lat} WHERE {pred} GROUP BY 1"
        ).format(b=bexpr, x=x, table=s.table, lat=lateral, pred=pred)
        with settings(conn, enable_sort="off", parallel_tuple_cost="0"):
            rows = conn.execute(q, [*aparams, *params]).fetchall()
    for b, n, x in rows:
        if n:
            out[b] = Sums(int(n), int(x or 0))
    return out


def piece_of(s: Side, bounds: Sequence[Key]) -> tuple[sql.Composable, list[Any]]:
    """The server-side expression numbering a row's piece of a range cut at ``bounds``.

    ``width_bucket`` over the bounds. With a composite key, comparing row
    values costs more than hashing a row, so the bucket comes from the first
    key column alone, which is exact unless that value is the first column of
    a bound; only those rows are placed by comparing whole keys.
    """
    if not bounds:
        return sql.SQL("0"), []
    arr, aparams = s.thresholds(bounds)
    whole = sql.SQL("width_bucket({}, {})").format(s.key_tuple(), arr)
    if len(s.key) == 1:
        return whole, list(aparams)
    first = s.key_exprs()[0]
    firsts = sql.SQL("%s::{}[]").format(s.key[0].type)
    expr = sql.SQL("CASE WHEN {k} = ANY({f}) THEN {whole} ELSE width_bucket({k}, {f}) END").format(
        k=first, f=firsts, whole=whole
    )
    col = [b[0] for b in bounds]
    return expr, [col, *aparams, col]


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
    out: dict[int, Signature] = {}
    with settings(conn, **SIGNATURE_SETTINGS):
        for b, n, x, subs, xors in conn.execute(q, [*aparams, *params, *fparams], binary=True):
            out[b] = Signature(int(n), int(x), _array("h", subs), _array("q", xors))
    return out


def rows_in_subs(
    conn: psycopg.Connection[Any],
    s: Side,
    rng: KeyRange,
    bounds: Sequence[Key],
    bits: int,
    wanted: bytes,
    *,
    scan: bool = False,
) -> list[tuple[int, Key, int]]:
    """``(piece, key, row hash)`` of the rows of ``rng`` in the wanted sub-buckets, in key order.

    ``piece`` numbers the pieces of ``rng`` cut at ``bounds`` (0 without
    bounds); a row is wanted when bit ``(piece << bits) | sub-bucket`` of
    ``wanted`` is set (:func:`pgferry.sync.chunks.sub_bitset`). Every row of
    ``rng`` is read, but only the wanted ones are hashed and sent. ``scan``:
    ``rng`` is a large part of the table, so read it with a (parallel)
    sequential scan; the planner would otherwise walk the key index to return
    the few rows in key order, one process, random heap reads.
    """
    pred, params = s.predicate(rng)
    nk = len(s.key)
    bexpr, aparams = piece_of(s, bounds)
    q = sql.SQL(
        "SELECT {b}, {names}, {h} FROM {table} WHERE {pred} AND "
        "get_bit(%s::bytea, ({b}::int8 << {bits}) | ({kh} & {mask})) = 1 ORDER BY {order}"
    ).format(
        b=bexpr,
        names=s.key_names(),
        h=s.row_hash(),
        table=s.table,
        pred=pred,
        bits=sql.Literal(bits),
        kh=s.key_hash(),
        mask=sql.Literal((1 << bits) - 1),
        order=sql.SQL(", ").join(s.key_exprs()),
    )
    planner = (
        {"enable_indexscan": "off", "enable_bitmapscan": "off", "parallel_tuple_cost": "0"}
        if scan
        else {}
    )
    with settings(conn, **planner):
        rows = conn.execute(q, [*aparams, *params, wanted, *aparams], binary=True).fetchall()
    return [(r[0], tuple(r[1 : 1 + nk]), r[1 + nk]) for r in rows]


def _array(typecode: str, data: bytes | None) -> array[int]:
    """A big-endian ``int2send``/``int8send`` string as an array of ints."""
    a = array(typecode)
    if data:
        a.frombytes(data)
        if sys.byteorder == "little":
            a.byteswap()
    return a


def row_hashes(conn: psycopg.Connection[Any], s: Side, rng: KeyRange) -> list[tuple[Key, int]]:
    """``(key, row hash)`` of every row in ``rng``, in key order."""
    pred, params = s.predicate(rng)
    nk = len(s.key)
    q = sql.SQL("SELECT {names}, {h} FROM {table} WHERE {pred} ORDER BY {order}").format(
        names=s.key_names(),
        h=s.row_hash(),
        table=s.table,
        pred=pred,
        order=sql.SQL(", ").join(s.key_exprs()),
    )
    # binary results: keys and hashes parse faster than from text
    return [(tuple(r[:nk]), r[nk]) for r in conn.execute(q, params, binary=True)]


def first_keys(conn: psycopg.Connection[Any], s: Side, rng: KeyRange, limit: int) -> list[Key]:
    """The first ``limit`` keys of ``rng`` in key order."""
    if limit <= 0:
        return []
    pred, params = s.predicate(rng)
    q = sql.SQL("SELECT {names} FROM {table} WHERE {pred} ORDER BY {order} LIMIT %s").format(
        names=s.key_names(), table=s.table, pred=pred, order=sql.SQL(", ").join(s.key_exprs())
    )
    return [tuple(r) for r in conn.execute(q, [*params, limit])]

"""The comparison's reads of rows, not of sums: keys and row hashes, in key order.

Contract: as :mod:`pgferry.sync.checksum` (a connection the caller owns, a
:class:`~pgferry.sync.sides.Side`, no transaction begun or ended here): the rows of
a range (:func:`row_hashes`), its first keys (:func:`first_keys`), and the rows of
the sub-buckets whose signatures differ (:func:`rows_in_subs` for a small range at
once, :func:`sub_rows_stream` for a large span through a server-side cursor, one
scan however many rows it returns).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import psycopg
from psycopg import sql

from pgferry.sync.checksum import piece_of
from pgferry.sync.chunks import Key, KeyRange
from pgferry.sync.sides import Side, settings


def _sub_rows_query(
    s: Side, rng: KeyRange, bounds: Sequence[Key], bits: int, wanted: bytes
) -> tuple[sql.Composed, list[Any]]:
    pred, params = s.predicate(rng)
    bexpr, aparams = piece_of(s, bounds)
    q = sql.SQL(
        "SELECT {b}, {names}, {h} FROM {table} WHERE {pred} AND "
        "get_bit(%s::bytea, ({b}::int8 << {bits}) | ({kh} & {mask})) = 1 ORDER BY {order}"
    ).format(
        b=bexpr,
        names=s.key_values(),
        h=s.row_hash(),
        table=s.table,
        pred=pred,
        bits=sql.Literal(bits),
        kh=s.key_hash(),
        mask=sql.Literal((1 << bits) - 1),
        order=sql.SQL(", ").join(s.key_exprs()),
    )
    return q, [*aparams, *params, wanted, *aparams]


#: planner settings of a read of many pieces' rows: a (parallel) sequential scan, as reading
#: the span costs less than walking its index to return the few rows in key order (random
#: heap reads, one process)
_SCAN = {"enable_indexscan": "off", "enable_bitmapscan": "off", "parallel_tuple_cost": "0"}


def rows_in_subs(
    conn: psycopg.Connection[Any],
    s: Side,
    rng: KeyRange,
    bounds: Sequence[Key],
    bits: int,
    wanted: bytes,
) -> list[tuple[int, Key, int]]:
    """``(piece, key, row hash)`` of the rows of ``rng`` in the wanted sub-buckets, in key order.

    ``piece`` numbers the pieces of ``rng`` cut at ``bounds`` (0 without
    bounds); a row is wanted when bit ``(piece << bits) | sub-bucket`` of
    ``wanted`` is set (:func:`pgferry.sync.chunks.sub_bitset`). Every row of
    ``rng`` is read, but only the wanted ones are hashed and sent; the planner
    picks how (a small range: its key index). A large span is read by
    :func:`sub_rows_stream`.
    """
    q, params = _sub_rows_query(s, rng, bounds, bits, wanted)
    nk = len(s.key)
    rows = conn.execute(q, params, binary=True).fetchall()
    return [(r[0], tuple(r[1 : 1 + nk]), r[1 + nk]) for r in rows]


def sub_rows_stream(
    conn: psycopg.Connection[Any],
    s: Side,
    rng: KeyRange,
    bounds: Sequence[Key],
    bits: int,
    wanted: bytes,
    *,
    name: str,
    fetch: int = 10_000,
) -> Generator[tuple[int, Key, int], None, None]:
    """:func:`rows_in_subs` of a large span (a sequential scan), read through server-side cursor
    ``name`` ``fetch`` rows at a time: one scan of the span however many rows it returns,
    and only ``fetch`` of them in memory at once. The first ``next()`` waits for the scan
    and the sort of the wanted rows. Runs in the connection's open transaction; its
    planner settings hold until the iterator is exhausted or closed.
    """
    q, params = _sub_rows_query(s, rng, bounds, bits, wanted)
    nk = len(s.key)
    with settings(conn, **_SCAN), conn.cursor(name, binary=True) as cur:
        cur.execute(q, params)
        while rows := cur.fetchmany(fetch):
            for r in rows:
                yield r[0], tuple(r[1 : 1 + nk]), r[1 + nk]


def row_hashes(conn: psycopg.Connection[Any], s: Side, rng: KeyRange) -> list[tuple[Key, int]]:
    """``(key, row hash)`` of every row in ``rng``, in key order."""
    pred, params = s.predicate(rng)
    nk = len(s.key)
    q = sql.SQL("SELECT {names}, {h} FROM {table} WHERE {pred} ORDER BY {order}").format(
        names=s.key_values(),
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
        names=s.key_values(), table=s.table, pred=pred, order=sql.SQL(", ").join(s.key_exprs())
    )
    return [tuple(r) for r in conn.execute(q, [*params, limit])]

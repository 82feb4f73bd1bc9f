"""A range compared by its rows in one scan a side: every (key, row hash), packed and matched.

Contract: :func:`packable` says whether two sides' keys can be packed (every key
column an integer or a uuid, declared alike on both sides), :func:`in_key_order` and
:func:`rows_now` how to cut the table (the caller decides); :func:`read` runs one
query on a connection the caller owns, inside whatever transaction it is in, and
returns the range's row count and its rows as one ``bytea``: per row the binary
form of each key column (``int8send`` ...) and of the 64-bit row hash
(:meth:`pgferry.sync.sides.Side.row_hash`), aggregated with ``string_agg`` in no
particular order; :func:`compare` matches two such reads in numpy (no Python
object per row; reads of at most :data:`SMALL` rows in plain Python) and returns
both sides' :class:`~pgferry.sync.chunks.Sums` and the differing keys as
:class:`~pgferry.sync.chunks.KeyDiff` (with both row hashes).
:mod:`pgferry.sync.ahead` reads a table's pieces (or slices) on both servers at once.

Why: a sync expects about every chunk to hold a change, so reading chunk sums, then
signatures per sub-bucket and then the rows of the differing sub-buckets costs a
grouped aggregate and a second scan; one scan that returns 16 bytes a row costs
little more than the hash itself (bench/sync.py; docs/benchmarks.md).

Keys match by their bytes, which for these types is equality; a read whose bytes do
not hold ``count`` rows (a NULL key) is reported as such (None) and the caller reads
the range row by row instead.
"""

from __future__ import annotations

import functools
import operator
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from pgferry.sync.checksum import WHOLE, Blocks, in_blocks
from pgferry.sync.chunks import Key, KeyDiff, KeyRange, Sums
from pgferry.sync.sides import TABLE_OR_PARTITION, Side

if TYPE_CHECKING:
    import numpy as np

#: key types packed: (send function, bytes, numpy big-endian type or None for raw bytes)
TYPES: dict[str, tuple[str, int, str | None]] = {
    "pg_catalog.int2": ("int2send", 2, ">i2"),
    "pg_catalog.int4": ("int4send", 4, ">i4"),
    "pg_catalog.int8": ("int8send", 8, ">i8"),
    "pg_catalog.uuid": ("uuid_send", 16, None),
}


@dataclass(frozen=True)
class Packed:
    """One side's read of one range: its row count and the packed rows (see the module)."""

    rows: int
    data: bytes


def packable(s: Side, t: Side) -> bool:
    """Can both sides' keys be packed: integers or uuids, of the same types on both sides?"""
    if len(s.key) != len(t.key):
        return False
    return all(
        a.type_name in TYPES and a.type_name == b.type_name
        for a, b in zip(s.key, t.key, strict=True)
    )


def width(s: Side) -> int:
    return sum(TYPES[k.type_name][1] for k in s.key) + 8


def packed_row(s: Side) -> sql.Composable:
    """One row packed: its key columns' and its row hash's binary forms, concatenated."""
    parts: list[sql.Composable] = [
        sql.SQL("pg_catalog.{}({})").format(
            sql.Identifier(TYPES[k.type_name][0]), sql.Identifier(k.name)
        )
        for k in s.key
    ]
    parts.append(sql.SQL("pg_catalog.int8send(({})::int8)").format(s.row_hash()))
    return sql.SQL(" || ").join(parts)


def read(
    conn: psycopg.Connection[Any], s: Side, rng: KeyRange, cap: int, blocks: Blocks = WHOLE
) -> Packed:
    """The rows of ``rng`` on ``s`` (in the heap blocks ``blocks``) packed (see the module
    docstring): one scan.

    At most ``cap`` + 1 rows are read: a count above ``cap`` says the range is too big to
    hold (the sides differ that much: a sample of the source cut the ranges), and the
    caller compares it otherwise.
    """
    pred, params = s.predicate(rng)
    bpred, bparams = in_blocks(blocks)
    q = sql.SQL(
        "SELECT count(*), pg_catalog.string_agg(p, ''::bytea) FROM "
        "(SELECT {row} AS p FROM {table} WHERE {pred} AND {b} LIMIT {n}) AS pgferry_packed"
    ).format(row=packed_row(s), table=s.table, pred=pred, b=bpred, n=sql.Literal(cap + 1))
    row = conn.execute(q, [*params, *bparams], binary=True).fetchone()
    assert row is not None
    return Packed(int(row[0]), bytes(row[1] or b""))


#: a table of at most this many chunks' rows is read as one piece, by one sequential scan a
#: side (a key range of a third of a table read by its index costs more per row than the
#: whole table read in order): at the default 10,000-row chunks, 1M rows, 16 to 40 MB a side
ONE_PIECE_CHUNKS = 100

#: a packed read holds at most this many chunks' rows (2M at the default chunks, 32 to 48
#: MB): a range bigger on either side (a target that holds far more rows than the source's
#: sample cut for) is compared by sums and signatures, cut into pieces
MAX_CHUNKS = 200

_ROWS_NOW = sql.SQL("""
SELECT CASE WHEN bool_and(c.reltuples >= 0) THEN sum(
    CASE WHEN c.relpages > 0
         THEN c.reltuples * (pg_catalog.pg_relation_size(c.oid)
                             / pg_catalog.current_setting('block_size')::int) / c.relpages
         ELSE 0 END)::int8 END
FROM pg_catalog.pg_class c
WHERE {}
""").format(TABLE_OR_PARTITION)


def rows_now(conn: psycopg.Connection[Any], s: Side) -> int | None:
    """The table's rows as the planner counts them: its statistics' rows per page times its
    pages now (a table grown since its last ``ANALYZE`` counts as grown); None: never
    analyzed."""
    row = conn.execute(_ROWS_NOW, {"t": s.table.as_string(conn)}).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def one_piece(sides: Sequence[tuple[psycopg.Connection[Any], Side]], rows: int) -> bool:
    """Does each side count at most ``rows`` rows (:func:`rows_now`; a target may hold far
    more than the source)? Unknown counts as no."""
    counts = [rows_now(conn, s) for conn, s in sides]
    return all(n is not None and n <= rows for n in counts)


_CORRELATION = sql.SQL("""
SELECT min(abs(s.correlation)) FROM pg_catalog.pg_stats s
JOIN pg_catalog.pg_namespace n ON n.nspname = s.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
WHERE NOT s.inherited AND s.attname = %(a)s AND {}
""").format(TABLE_OR_PARTITION)


def in_key_order(conn: psycopg.Connection[Any], s: Side) -> bool:
    """Are the table's rows stored about in key order, so that a key range reads few pages?

    The correlation of the first key column in the statistics of the table, or of each of
    its partitions (the least of them; a partitioned table's own statistics mix its
    partitions); unknown (never analyzed) counts as yes.
    """
    row = conn.execute(_CORRELATION, {"a": s.key[0].name, "t": s.table.as_string(conn)}).fetchone()
    return row is None or row[0] is None or float(row[0]) >= 0.9


@dataclass
class Compared:
    """Both sides' sums of one range, its matching rows and its differing keys (key order:
    the source's differing and missing keys first, then the target's extra ones)."""

    source: Sums
    target: Sums
    matched: int
    diffs: list[KeyDiff]


#: reads of at most this many rows (both sides) are matched in plain Python: importing numpy
#: (0.09 to 0.13 s) would cost a small table's sync more than the matching
SMALL = 20_000


def compare(s: Side, a: Packed, b: Packed) -> Compared | None:
    """Match two reads of one range (None: a read does not hold its count of rows)."""
    size = width(s)
    if len(a.data) != a.rows * size or len(b.data) != b.rows * size:
        return None
    if a.rows + b.rows <= SMALL:
        return _compare_small(s, a, b)
    import numpy as np

    rtype = dtype(s)
    ra, rb = np.frombuffer(a.data, dtype=rtype), np.frombuffer(b.data, dtype=rtype)
    ha, hb = ra["h"].astype(np.int64), rb["h"].astype(np.int64)
    ia, ib = match(keys(s, ra), keys(s, rb))
    changed = ha[ia] != hb[ib]
    only_a = np.ones(len(ra), dtype=bool)
    only_a[ia] = False
    only_b = np.ones(len(rb), dtype=bool)
    only_b[ib] = False
    diffs = [
        KeyDiff("differing", k, x, y)
        for k, x, y in zip(
            decode(s, ra[ia[changed]]),
            ha[ia[changed]].tolist(),
            hb[ib[changed]].tolist(),
            strict=True,
        )
    ]
    diffs += [
        KeyDiff("only_in_source", k, x, None)
        for k, x in zip(decode(s, ra[only_a]), ha[only_a].tolist(), strict=True)
    ]
    diffs.sort(key=lambda d: d.key)
    extra = [
        KeyDiff("only_in_target", k, None, y)
        for k, y in zip(decode(s, rb[only_b]), hb[only_b].tolist(), strict=True)
    ]
    extra.sort(key=lambda d: d.key)
    return Compared(
        Sums(a.rows, xor(ha)),
        Sums(b.rows, xor(hb)),
        len(ia) - int(changed.sum()),
        diffs + extra,
    )


def _compare_small(s: Side, a: Packed, b: Packed) -> Compared:
    """:func:`compare` without numpy: the same sums, matches and differing keys."""
    uuids = [TYPES[k.type_name][2] is None for k in s.key]  # raw bytes, as in :func:`decode`
    sizes = [TYPES[k.type_name][1] for k in s.key]
    ints = {2: "h", 4: "i", 8: "q"}  # big-endian signed, as the server sends them
    codes = [f"{n}s" if u else ints[n] for n, u in zip(sizes, uuids, strict=True)]
    fmt = ">" + "".join(codes) + "q"

    def rows(p: Packed) -> dict[tuple[Any, ...], int]:
        return {tuple(r[:-1]): r[-1] for r in struct.iter_unpack(fmt, p.data)}

    def key(k: tuple[Any, ...]) -> Key:
        return tuple(uuid.UUID(bytes=v) if u else v for v, u in zip(k, uuids, strict=True))

    ra, rb = rows(a), rows(b)
    matched, diffs = 0, []
    for k, h in ra.items():
        other = rb.get(k)
        if other is None:
            diffs.append(KeyDiff("only_in_source", key(k), h, None))
        elif other != h:
            diffs.append(KeyDiff("differing", key(k), h, other))
        else:
            matched += 1
    diffs.sort(key=lambda d: d.key)
    extra = [KeyDiff("only_in_target", key(k), None, h) for k, h in rb.items() if k not in ra]
    extra.sort(key=lambda d: d.key)
    return Compared(
        Sums(a.rows, functools.reduce(operator.xor, ra.values(), 0)),
        Sums(b.rows, functools.reduce(operator.xor, rb.values(), 0)),
        matched,
        diffs + extra,
    )


def match(
    ka: np.ndarray[Any, Any], kb: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The positions ``(ia, ib)`` of the keys found on both sides (``ka[ia] == kb[ib]``).

    Keys are unique on each side. Integer keys are merged by binary search, each side
    sorted first unless it is in key order already (a table stored so, read by a
    sequential scan or its key index; a stable sort finds the runs of a side stored about
    so). Other keys (bytes) are matched the same way by a 64-bit number folded from their
    bytes, and every pair found is checked byte for byte; when two keys fold alike (on
    one side, or a pair that differs) they are sorted as bytes instead.
    """
    import numpy as np

    if not (len(ka) and len(kb)):
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    if ka.dtype == np.int64:
        merged = _merge(ka, kb)
        assert merged is not None
        return merged
    fa, fb = _fold(ka), _fold(kb)
    got = _merge(fa, fb, unique=True)
    if got is not None and bool((ka[got[0]] == kb[got[1]]).all()):
        return got
    _, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    return ia, ib


def _merge(ka: Any, kb: Any, *, unique: bool = False) -> tuple[Any, Any] | None:
    """:func:`match` of two int64 arrays; None when ``unique`` and a side holds a value twice."""
    import numpy as np

    oa, ob = _order(ka), _order(kb)
    sa = ka if oa is None else ka[oa]
    sb = kb if ob is None else kb[ob]
    if unique and any(
        o is not None and bool((x[1:] == x[:-1]).any()) for o, x in ((oa, sa), (ob, sb))
    ):
        return None
    i = np.searchsorted(sa, sb)
    np.minimum(i, len(sa) - 1, out=i)
    found = sa[i] == sb
    ia, ib = i[found], np.flatnonzero(found)
    return (ia if oa is None else oa[ia]), (ib if ob is None else ob[ib])


def _order(keys: Any) -> Any:
    """The positions that sort ``keys``, or None when they are in strictly increasing order.

    Keys about in order (a table stored so: few descents) sort with the stable sort, which
    merges the runs it finds (250,000 keys, 1% moved: 2.6 ms against quicksort's 7.8);
    keys in no order (random uuids folded) with quicksort, twice as fast there (250,000
    keys: 14 ms against 27).
    Equal keys (only folds of bytes may be: :func:`_merge` looks for them) sort in either
    order.
    """
    import numpy as np

    descents = int(np.count_nonzero(keys[1:] <= keys[:-1]))  # a key twice counts too
    if not descents:
        return None
    return np.argsort(keys, kind="stable" if descents * 8 < len(keys) else "quicksort")


def _fold(keys: Any) -> Any:
    """A 64-bit number per key of bytes (``S<n>``), from all of its bytes."""
    import numpy as np

    n = keys.dtype.itemsize
    raw = np.ascontiguousarray(keys).view(np.uint8).reshape(len(keys), n)
    if n % 8:
        raw = np.concatenate((raw, np.zeros((len(keys), 8 - n % 8), dtype=np.uint8)), axis=1)
    words = np.ascontiguousarray(raw).view(">u8").astype(np.uint64)
    h = words[:, 0].copy()
    for w in words[:, 1:].T:
        h *= np.uint64(0x9E3779B97F4A7C15)
        h ^= w
    return h.view(np.int64)


def dtype(s: Side) -> np.dtype[Any]:
    import numpy as np

    fields: list[tuple[str, str]] = []
    for i, k in enumerate(s.key):
        _, n, kind = TYPES[k.type_name]
        fields.append((f"k{i}", kind or f"V{n}"))
    fields.append(("h", ">i8"))
    return np.dtype(fields)


def native_key(s: Side) -> bool:
    """Is the key one integer column (compared as a native int64, not as bytes)?"""
    return len(s.key) == 1 and TYPES[s.key[0].type_name][2] is not None


def keys(s: Side, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """One value per row that sorts as the server sorts its key: a native integer, or the
    key's bytes with each integer's sign bit flipped (uuids sort by their bytes)."""
    import numpy as np

    if native_key(s):
        return rows["k0"].astype(np.int64)
    n = width(s) - 8
    raw = np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), n + 8)[:, :n].copy()
    at = 0
    for k in s.key:
        _, size, kind = TYPES[k.type_name]
        if kind is not None:
            raw[:, at] ^= 0x80
        at += size
    return raw.view(f"S{n}").reshape(len(rows))


def key_bytes(s: Side, key: Key) -> bytes:
    """A key as :func:`keys` makes the bytes of a row's (same order)."""
    out = b""
    for k, v in zip(s.key, key, strict=True):
        _, n, kind = TYPES[k.type_name]
        out += v.bytes if kind is None else (int(v) + (1 << (8 * n - 1))).to_bytes(n, "big")
    return out


def decode(s: Side, rows: np.ndarray[Any, Any]) -> list[Key]:
    """The keys of ``rows`` as psycopg reads them (ints, UUIDs)."""
    cols: list[list[Any]] = []
    for i, k in enumerate(s.key):
        values = rows[f"k{i}"]
        if TYPES[k.type_name][2] is None:
            cols.append([uuid.UUID(bytes=bytes(v)) for v in values])
        else:
            cols.append(values.tolist())
    return list(zip(*cols, strict=True)) if cols else []


def xor(h: np.ndarray[Any, Any]) -> int:
    """The XOR of the row hashes ``h`` (0 for none)."""
    import numpy as np

    return int(np.bitwise_xor.reduce(h)) if len(h) else 0

"""diff_table with differences scattered over every chunk: signatures per sub-bucket.

Every chunk differs, so each is settled by its signature (XOR of row hashes
per sub-bucket of a few rows, by key hash): only the rows of differing
sub-buckets are read back. The results must equal a row-by-row comparison in
Python for every key kind, and a piece whose read rows do not explain its
sums must fall back to reading it whole.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgferry.sync import checksum, readback
from pgferry.sync.verify import DiffRange
from pgferry.sync.verify import diff_table as _diff_table
from tests.helpers.sync import KINDS, Spec, fill

#: the chunk-sum and signature paths (integer keys are read packed by default)
diff_table = partial(_diff_table, pack=False)


def _rows(c: psycopg.Connection[Any], key: tuple[str, ...]) -> dict[tuple[Any, ...], Any]:
    names = sql.SQL(", ").join(map(sql.Identifier, key))
    q = sql.SQL("SELECT {}, g, v, n FROM k").format(names)
    return {tuple(r[: len(key)]): r[len(key) :] for r in c.execute(q)}


@pytest.mark.parametrize("kind", list(KINDS))
def test_scattered_differences_in_every_chunk(
    pair: Any, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, tgt = pair
    ddl, key, old_key, new_key = KINDS[kind]
    for c in pair:
        c.execute(ddl)
        fill(c, old_key)
    # about 3% of the rows differ, spread evenly: updates, NULLs, deletes on either side,
    # rows only on one side
    tgt.execute("UPDATE k SET v = v || '!' WHERE g % 53 = 0")
    tgt.execute("UPDATE k SET n = NULL WHERE g % 211 = 1")
    tgt.execute("DELETE FROM k WHERE g % 331 = 2")
    src.execute("DELETE FROM k WHERE g % 347 = 3")
    fill(src, new_key, "g % 401 = 5")
    fill(tgt, new_key, "g % 409 = 7")
    a, b = _rows(src, key), _rows(tgt, key)
    want = {
        "differing": {k for k in a.keys() & b.keys() if a[k] != b[k]},
        "only_in_source": a.keys() - b.keys(),
        "only_in_target": b.keys() - a.keys(),
    }
    assert all(want.values())
    fetched: list[int] = []
    real, real_stream = readback.rows_in_subs, readback.sub_rows_stream

    def spy(*args: Any, **kw: Any) -> Any:
        got = real(*args, **kw)
        fetched.append(len(got))
        return got

    def stream_spy(*args: Any, **kw: Any) -> Any:
        for row in real_stream(*args, **kw):
            fetched.append(1)
            yield row

    monkeypatch.setattr(readback, "rows_in_subs", spy)
    monkeypatch.setattr(readback, "sub_rows_stream", stream_spy)
    ranges: list[DiffRange] = []
    d = diff_table(
        src,
        tgt,
        Spec("k", key, [*key, "g", "v", "n"]),
        chunk_rows=400,
        batch_rows=2000,
        key_limit=5,
        on_range=ranges.append,
    )
    assert d.chunks_differing == d.chunks >= 10
    assert (d.differing, d.only_in_source, d.only_in_target) == tuple(
        len(want[k]) for k in ("differing", "only_in_source", "only_in_target")
    )
    assert d.matched == len(a) - d.differing - d.only_in_source
    assert (d.source_rows, d.target_rows) == (len(a), len(b))
    listed = [(k.kind, k.key) for r in ranges for k in r.diffs or []]
    assert len(listed) == len(set(listed)) == sum(len(v) for v in want.values())
    assert all(key_ in want[kind_] for kind_, key_ in listed)
    assert all(k.key in want[k.kind] for k in d.first_keys) and len(d.first_keys) == 5
    # only the rows of differing sub-buckets were read back, a small part of both tables
    changed = sum(len(v) for v in want.values())
    assert changed <= sum(fetched) <= (len(a) + len(b)) // 3


def test_a_piece_the_read_rows_do_not_explain_is_read_whole(
    pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, tgt = pair
    for c in pair:
        c.execute("CREATE TABLE k (id int PRIMARY KEY, v text)")
        c.execute("INSERT INTO k SELECT g, 'v' || g FROM generate_series(1, 3000) g")
    tgt.execute("UPDATE k SET v = 'x' WHERE id % 97 = 0")
    lost: list[Any] = []
    whole: list[Any] = []
    real_rows, real_whole = readback.rows_in_subs, readback.row_hashes
    real_stream = readback.sub_rows_stream

    def lossy(conn: psycopg.Connection[Any], *args: Any, **kw: Any) -> Any:
        # one row of the target goes missing from what the server sent, as if it had
        # been changed between two reads: its piece no longer adds up
        got = real_rows(conn, *args, **kw)
        if conn is tgt and got and not lost:
            lost.append(got.pop())
        return got

    def lossy_stream(conn: psycopg.Connection[Any], *args: Any, **kw: Any) -> Any:
        for row in real_stream(conn, *args, **kw):
            if conn is tgt and not lost:
                lost.append(row)
                continue
            yield row

    def spy(*args: Any, **kw: Any) -> Any:
        whole.append(kw.get("rng"))
        return real_whole(*args, **kw)

    monkeypatch.setattr(readback, "rows_in_subs", lossy)
    monkeypatch.setattr(readback, "sub_rows_stream", lossy_stream)
    monkeypatch.setattr(readback, "row_hashes", spy)
    d = diff_table(src, tgt, Spec("k", ("id",), ["id", "v"]), chunk_rows=500, key_limit=100)
    assert lost and len(whole) == 2  # the one piece, read whole on both sides
    assert d.differing == 3000 // 97 and d.only_in_source == d.only_in_target == 0
    assert sorted(k.key[0] for k in d.first_keys) == list(range(97, 3001, 97))


def test_composite_key_pieces_from_the_first_column_match_whole_key_comparison(db: str) -> None:
    # the first column alone places a row unless it equals a bound's first column: ties
    # (order 7 holds a bound and rows on both sides of it) are placed by the whole key
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("CREATE TABLE o (ord bigint, line int, PRIMARY KEY (ord, line))")
        c.execute("INSERT INTO o SELECT g / 5, g % 5 FROM generate_series(0, 999) g")
        s = checksum.side(c, "public", "o", ["ord", "line"], ["ord", "line"])
        bounds = [(7, 2), (7, 4), (8, 0), (50, 3), (120, 0), (199, 4)]
        expr, params = checksum.piece_of(s, bounds)
        whole, wparams = s.thresholds(bounds)
        q = sql.SQL("SELECT ord, line, {}, width_bucket({}, {}) FROM o").format(
            expr, s.key_tuple(), whole
        )
        rows = c.execute(q, [*params, *wparams]).fetchall()
        assert len(rows) == 1000 and all(r[2] == r[3] for r in rows)
        assert {r[2] for r in rows if r[0] == 7} == {0, 1, 2}

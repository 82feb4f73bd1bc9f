"""A sync's comparison of tables keyed by integers or uuids: every piece read once a side,
packed, and matched in numpy (pgferry.sync.packed), by key range or in physical slices
(pgferry.sync.streamed).

Invariant: the differing keys it reports are exactly those of a row-by-row comparison of
both tables, of each kind, and both sides' checksums and counts equal those of the same
comparison without packing (signatures), for any key of those types (negative and extreme
values, several columns), any differences, any piece size and rows stored in key order
or not, on PostgreSQL 18, 15 and 13 (whose row hash is another function).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from pgferry.sync import packed
from pgferry.sync.verify import diff_table
from tests.helpers.sync import Spec, results_of

KEYS: dict[str, tuple[str, ...]] = {
    "int2": ("smallint",),
    "int4": ("int",),
    "int8": ("bigint",),
    "uuid": ("uuid",),
    "int4_int8": ("int", "bigint"),
    "uuid_int2": ("uuid", "smallint"),
}
EXTREMES = {
    "smallint": [-(2**15), 2**15 - 1, 0, -1],
    "int": [-(2**31), 2**31 - 1, 0, -1],
    "bigint": [-(2**63), 2**63 - 1, 0, -1],
}


#: a new table name per example: a connection's prepared statements outlive a dropped table
_names = itertools.count()


def _unpacked(*args: Any, **kw: Any) -> Any:
    """:func:`diff_table` as for keys that cannot be packed (signatures, rows read back)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(packed, "packable", lambda s, t: False)
        return diff_table(*args, **kw)


def _value(kind: str, n: int) -> Any:
    if kind == "uuid":
        return uuid.UUID(int=(n * 0x9E3779B97F4A7C15) % 2**128)
    lo = EXTREMES[kind][0]
    span = 2 * -lo
    return lo + (n * 7919) % span if n >= len(EXTREMES[kind]) else EXTREMES[kind][n]


def _make(
    conn: psycopg.Connection[Any],
    name: str,
    types: tuple[str, ...],
    rows: dict[Any, Any],
    ordered: bool = True,
) -> None:
    names = [f"k{i}" for i in range(len(types))]
    cols = ", ".join(f"{n} {t}" for n, t in zip(names, types, strict=True))
    conn.execute(f"CREATE TABLE {name} ({cols}, v int, w text, PRIMARY KEY ({', '.join(names)}))")
    # in key order, as the packed comparison by key range wants them stored (statistics
    # will say so), or in the order given
    with conn.cursor().copy(f"COPY {name} ({', '.join(names)}, v, w) FROM STDIN") as cp:
        for key, (v, w) in sorted(rows.items()) if ordered else rows.items():
            cp.write_row((*key, v, w))
    conn.execute(f"ANALYZE {name}")


def _truth(src: dict[Any, Any], tgt: dict[Any, Any]) -> set[tuple[str, Any]]:
    out = {("only_in_source", k) for k in src.keys() - tgt.keys()}
    out |= {("only_in_target", k) for k in tgt.keys() - src.keys()}
    out |= {("differing", k) for k in src.keys() & tgt.keys() if src[k] != tgt[k]}
    return out


def _compare(
    src: psycopg.Connection[Any], tgt: psycopg.Connection[Any], spec: Spec, chunk: int
) -> tuple[Any, set[tuple[str, Any]]]:
    listed: list[Any] = []
    d = diff_table(
        src,
        tgt,
        spec,
        chunk_rows=chunk,
        key_limit=5,
        on_range=listed.append,
        expect_changes=True,
    )
    found: set[tuple[str, Any]] = set()
    for r in listed:
        for k in r.diffs or []:
            found.add((k.kind, k.key))
    return d, found


def _check(
    src: psycopg.Connection[Any],
    tgt: psycopg.Connection[Any],
    types: tuple[str, ...],
    s_rows: dict[Any, Any],
    t_rows: dict[Any, Any],
    chunk: int,
    ordered: bool = True,
) -> None:
    key = tuple(f"k{i}" for i in range(len(types)))
    spec = Spec(f"t{next(_names)}", key, [*key, "v", "w"])
    _make(src, spec.name, types, s_rows, ordered)
    _make(tgt, spec.name, types, t_rows, ordered)
    truth = _truth(s_rows, t_rows)
    with pytest.MonkeyPatch.context() as m:
        reads = results_of(m, packed, "read")
        d, found = _compare(src, tgt, spec, chunk)
    assert reads  # the path under test
    # a range one side lacks entirely is reported as a range (its keys are not listed)
    whole = d.only_in_source + d.only_in_target + d.differing
    assert whole == len(truth), (d, truth)
    assert found <= truth
    assert (d.differing, d.matched) == (
        sum(1 for k, _ in truth if k == "differing"),
        len(s_rows.keys() & t_rows.keys()) - sum(1 for k, _ in truth if k == "differing"),
    )
    other = _unpacked(src, tgt, spec, chunk_rows=chunk, expect_changes=True)
    assert (d.source_checksum, d.target_checksum, d.matched, d.differing) == (
        other.source_checksum,
        other.target_checksum,
        other.matched,
        other.differing,
    )
    assert d.identical == (not truth)


rows_strategy = st.dictionaries(
    st.integers(0, 400), st.tuples(st.integers(0, 3), st.sampled_from(["a", "b", None]))
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    shape=st.sampled_from(sorted(KEYS)),
    base=rows_strategy,
    changes=st.lists(
        st.tuples(st.sampled_from(["update", "delete", "insert"]), st.integers(0, 450)),
        max_size=40,
    ),
    chunk=st.integers(1, 15),
    ordered=st.booleans(),
)
def test_packed_comparison_lists_exactly_the_differing_keys(
    pair: Any,
    shape: str,
    base: dict[int, Any],
    changes: list[tuple[str, int]],
    chunk: int,
    ordered: bool,
) -> None:
    src, tgt = pair
    types = KEYS[shape]

    def key(n: int) -> tuple[Any, ...]:
        return tuple(_value(t if t != "uuid" else "uuid", n + i) for i, t in enumerate(types))

    s_rows = {key(n): v for n, v in base.items()}
    t_rows = dict(s_rows)
    for what, n in changes:
        k = key(n)
        if what == "delete":
            t_rows.pop(k, None)
        elif what == "insert":
            s_rows[k] = (n, "new")
        elif k in t_rows:
            t_rows[k] = (t_rows[k][0] + 1, t_rows[k][1])
    # stored in key order (read by key ranges), or in the order the rows came (read in
    # one piece or in physical slices: pgferry.sync.streamed)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(packed, "in_key_order", lambda *a: ordered)
        _check(src, tgt, types, s_rows, t_rows, chunk, ordered)


@pytest.mark.parametrize("target", ["15", "13"])
def test_packed_comparison_across_server_versions(
    make_db: Callable[..., str], request: pytest.FixtureRequest, target: str
) -> None:
    # PostgreSQL 13 has no hash_record_extended: both sides hash with version 3
    other = request.getfixturevalue(f"make_db{target}")
    with (
        psycopg.connect(make_db("src"), autocommit=True) as src,
        psycopg.connect(other("tgt"), autocommit=True) as tgt,
    ):
        for shape in ("int8", "uuid_int2"):
            types = KEYS[shape]
            s_rows = {
                tuple(_value(t, n + i) for i, t in enumerate(types)): (n % 5, "x")
                for n in range(300)
            }
            t_rows = {k: v for i, (k, v) in enumerate(s_rows.items()) if i % 37 != 3}
            for i, k in enumerate(list(t_rows)):
                if i % 23 == 0:
                    t_rows[k] = (99, "y")
            t_rows[tuple(_value(t, 1000 + i) for i, t in enumerate(types))] = (1, "z")
            _check(src, tgt, types, s_rows, t_rows, 7)


def test_a_null_key_is_compared_row_by_row(pair: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # a unique key that allows NULL (a sync refuses it; the comparison must not misread it:
    # string_agg leaves out a NULL, so the packed read is short of its count of rows)
    from pgferry.sync import readback

    src, tgt = pair
    whole = results_of(monkeypatch, readback, "row_hashes")
    for c in pair:
        c.execute("CREATE TABLE n (id bigint UNIQUE, v int)")
        c.execute("INSERT INTO n SELECT g, g FROM generate_series(1, 50) g")
        c.execute("INSERT INTO n VALUES (NULL, 1), (NULL, 2)")
    tgt.execute("UPDATE n SET v = 0 WHERE id = 7")
    spec = Spec("n", ("id",), ["id", "v"])
    got = diff_table(src, tgt, spec, chunk_rows=1000, expect_changes=True)
    assert len(whole) == 2  # read again row by row, on both sides
    other = _unpacked(src, tgt, spec, chunk_rows=1000, expect_changes=True)
    assert got.differing >= 1 and got.differing == other.differing
    assert (got.source_checksum, got.target_checksum, got.matched) == (
        other.source_checksum,
        other.target_checksum,
        other.matched,
    )


def test_rows_out_of_key_order_are_compared_by_signatures_without_slices(
    pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uuid keys stored in random order: a key range would read most of the table's pages,
    # once per piece; the statistics' correlation says so. Where the table cannot be read
    # in physical slices (PostgreSQL 13: no TID range scan), signatures read it once
    from pgferry.sync import streamed

    src, tgt = pair
    reads = results_of(monkeypatch, packed, "read")
    monkeypatch.setattr(streamed, "possible", lambda s, t: False)
    for c in pair:
        c.execute("CREATE TABLE r (id uuid PRIMARY KEY, v int)")
        c.execute("INSERT INTO r SELECT md5(g::text)::uuid, g FROM generate_series(1, 3000) g")
        c.execute("ANALYZE r")
    tgt.execute("UPDATE r SET v = 0 WHERE v % 100 = 7")
    spec = Spec("r", ("id",), ["id", "v"])
    assert not packed.in_key_order(src, packed_side(src, spec))
    got = diff_table(src, tgt, spec, chunk_rows=20, expect_changes=True)
    assert reads == [] and (got.differing, got.matched) == (30, 2970)
    # the same table rewritten in key order is read packed, by key range
    for c in pair:
        c.execute("CLUSTER r USING r_pkey")
        c.execute("ANALYZE r")
    assert packed.in_key_order(src, packed_side(src, spec))
    again = diff_table(src, tgt, spec, chunk_rows=20, expect_changes=True)
    assert reads and (again.differing, again.matched) == (30, 2970)


def packed_side(conn: psycopg.Connection[Any], spec: Spec) -> Any:
    from pgferry.sync import checksum

    return checksum.side(conn, spec.schema, spec.name, spec.key, spec.columns)


def test_a_range_far_bigger_on_the_target_is_not_held_in_memory(
    pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the pieces are cut from the source; a target holding 30 times its rows would make
    # one read hold them all: a read stops past its cap and the range is cut and compared
    # by sums and signatures instead
    src, tgt = pair
    reads = results_of(monkeypatch, packed, "read")
    src.execute("CREATE TABLE big (id int PRIMARY KEY, v int, w text)")
    src.execute("INSERT INTO big SELECT g * 30, g, 'x' FROM generate_series(1, 100) g")
    tgt.execute("CREATE TABLE big (id int PRIMARY KEY, v int, w text)")
    tgt.execute("INSERT INTO big SELECT g, g / 30, 'x' FROM generate_series(1, 3000) g")
    spec = Spec("big", ("id",), ["id", "v", "w"])
    got = diff_table(src, tgt, spec, chunk_rows=5, expect_changes=True)
    cap = packed.MAX_CHUNKS * 5
    assert max(r.rows for r in reads) == cap + 1  # cut short
    other = _unpacked(src, tgt, spec, chunk_rows=5, expect_changes=True)
    assert (got.only_in_target, got.differing, got.matched) == (2900, 0, 100)
    assert (got.only_in_target, got.differing, got.matched, got.target_checksum) == (
        other.only_in_target,
        other.differing,
        other.matched,
        other.target_checksum,
    )


def test_a_partitioned_table_is_in_key_order_when_each_partition_is(pair: Any) -> None:
    # the parent's own statistics mix its partitions (ids interleaved by region): each
    # partition read by key range reads its pages in order all the same
    src, tgt = pair
    for c in pair:
        c.execute(
            "CREATE TABLE pt (id int, region int, v int, PRIMARY KEY (id, region))"
            " PARTITION BY LIST (region)"
        )
        for r in range(4):
            c.execute(f"CREATE TABLE pt_{r} PARTITION OF pt FOR VALUES IN ({r})")
        c.execute("INSERT INTO pt SELECT g, g % 4, g FROM generate_series(1, 8000) g")
        c.execute("ANALYZE pt")
    tgt.execute("UPDATE pt SET v = 0 WHERE id % 97 = 0")
    spec = Spec("pt", ("id", "region"), ["id", "region", "v"])
    assert packed.in_key_order(src, packed_side(src, spec))
    got = diff_table(src, tgt, spec, chunk_rows=50, expect_changes=True)
    assert (got.differing, got.matched) == (82, 8000 - 82)


@pytest.mark.parametrize(
    ("shape", "target"), [("int8", ""), ("uuid", ""), ("int4_int8", ""), ("uuid_int2", "15")]
)
def test_a_table_read_in_physical_slices_lists_exactly_the_differing_keys(
    make_db: Callable[..., str],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
    target: str,
) -> None:
    # bigger than one piece, read in slices of its heap blocks (pgferry.sync.streamed): the
    # rows a sync changed moved on both sides, each its own way, and the target holds more
    # dead rows (so its slices hold fewer rows): rows wait for the other side's slices.
    # PostgreSQL 15 has TID range scans too (13 has none: see the test above)
    from pgferry.sync import streamed

    other = request.getfixturevalue(f"make_db{target}")
    src = psycopg.connect(make_db("src"), autocommit=True)
    tgt = psycopg.connect(other("tgt"), autocommit=True)
    request.addfinalizer(src.close)
    request.addfinalizer(tgt.close)
    pair = (src, tgt)
    reads = results_of(monkeypatch, packed, "read")
    given_up = results_of(monkeypatch, streamed, "compare")
    types = KEYS[shape]
    # stored out of key order, alike on both sides (a target a full sync loaded)
    order = sorted(range(6000), key=lambda n: (n * 7919) % 6007)
    rows = {tuple(_value(t, n + i) for i, t in enumerate(types)): (n % 7, "x") for n in order}
    keys = list(rows)
    key = tuple(f"k{i}" for i in range(len(types)))
    spec = Spec(f"s{next(_names)}", key, [*key, "v", "w"])
    for c in pair:
        _make(c, spec.name, types, rows, ordered=False)
    t_rows = dict(rows)
    table = sql.Identifier(spec.name)
    where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in key)
    writes: dict[tuple[psycopg.Connection[Any], str], list[Any]] = {}
    for i, k in enumerate(keys):
        if i % 97 == 5:  # changed at the source: the row moves to the table's end
            writes.setdefault((src, "SET v = v + 1"), []).append(k)
        elif i % 89 == 3:  # changed at the target
            writes.setdefault((tgt, "SET w = 'y'"), []).append(k)
            t_rows[k] = (rows[k][0], "y")
        elif i % 83 == 1:
            writes.setdefault((tgt, "DELETE"), []).append(k)
            del t_rows[k]
        elif i % 13 == 0:  # rewritten alike on the target: moved, and dead rows left behind
            writes.setdefault((tgt, "SET v = v"), []).append(k)
    for (conn, what), ks in writes.items():
        q = (
            sql.SQL("DELETE FROM {} WHERE {}").format(table, where)
            if what == "DELETE"
            else sql.SQL("UPDATE {} {} WHERE {}").format(table, sql.SQL(what), where)
        )
        conn.cursor().executemany(q, ks)
    s_rows = {k: (v + 1 if i % 97 == 5 else v, w) for i, (k, (v, w)) in enumerate(rows.items())}
    new = [tuple(_value(t, 9000 + n + i) for i, t in enumerate(types)) for n in range(20)]
    src.cursor().executemany(
        sql.SQL("INSERT INTO {} VALUES ({})").format(
            table, sql.SQL(", ").join(sql.Placeholder() * (len(key) + 2))
        ),
        [(*k, 1, "n") for k in new],
    )
    s_rows.update((k, (1, "n")) for k in new)
    held: list[int] = []
    add = streamed.Matcher.add

    def spy(m: Any, a: Any, b: Any) -> bool:
        ok = add(m, a, b)
        held.append(len(m.pending[0]) + len(m.pending[1]))
        return ok

    monkeypatch.setattr(streamed.Matcher, "add", spy)
    for c in pair:
        c.execute(f"ANALYZE {spec.name}")
    truth = _truth(s_rows, t_rows)
    d, found = _compare(src, tgt, spec, 10)
    assert given_up and given_up[0] is not None  # read in slices, and not given up
    assert len(reads) > 2 and len({r.rows for r in reads}) > 1
    assert max(held) > 0 and held[-1] == len(truth) - d.differing  # rows waited
    assert found <= truth and d.only_in_source + d.only_in_target + d.differing == len(truth)
    assert d.matched == len(s_rows.keys() & t_rows.keys()) - d.differing
    other = _unpacked(src, tgt, spec, chunk_rows=10, expect_changes=True)
    assert (d.source_checksum, d.target_checksum, d.matched, d.differing) == (
        other.source_checksum,
        other.target_checksum,
        other.matched,
        other.differing,
    )
    assert 1 <= d.chunks_differing <= d.chunks


def test_slices_too_far_apart_give_up_and_the_table_is_compared_by_signatures(
    pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rows stored out of key order, the target's in the reverse of the source's order:
    # every row waits for the other side's last slices, past what the comparison holds
    # (MAX_CHUNKS chunks): it gives up, and the table is compared by signatures instead
    from pgferry.sync import streamed

    src, tgt = pair
    given_up = results_of(monkeypatch, streamed, "compare")
    reads = results_of(monkeypatch, packed, "read")
    for c, order in ((src, "ASC"), (tgt, "DESC")):
        c.execute("CREATE TABLE rv (id bigint PRIMARY KEY, v int)")
        c.execute(
            "INSERT INTO rv SELECT g, g FROM generate_series(1, 8000) g "  # noqa: S608
            f"ORDER BY (g * 7919) % 8009 {order}"
        )
    tgt.execute("UPDATE rv SET v = 0 WHERE id % 100 = 0")
    for c in pair:
        c.execute("ANALYZE rv")
    spec = Spec("rv", ("id",), ["id", "v"])
    assert not packed.in_key_order(src, packed_side(src, spec))
    got = diff_table(src, tgt, spec, chunk_rows=5, expect_changes=True)
    assert given_up == [None]
    # it gave up by the middle of the table (the rows held, at their rate so far, would
    # pass the limit by the end), not after reading it all
    assert 0 < sum(r.rows for r in reads) <= 8000
    assert (got.differing, got.matched, got.only_in_source, got.only_in_target) == (80, 7920, 0, 0)

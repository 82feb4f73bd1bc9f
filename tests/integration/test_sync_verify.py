"""diff_table on real servers: identical tables, every kind of difference, every key type."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.pq import TransactionStatus

from pgferry.errors import BadInput
from pgferry.sync.verify import DiffRange, diff_table
from tests.helpers.sync import Spec, results_of


def both(pair: tuple[psycopg.Connection[Any], ...], stmt: str) -> None:
    for c in pair:
        c.execute(stmt)


ALL_TYPES = """
CREATE TABLE items (
    id bigint PRIMARY KEY, label text, amount numeric(12,2), ratio double precision,
    at timestamptz, doc jsonb, blob bytea, flag boolean, tags text[]
);
INSERT INTO items
SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'label ' || g END, g * 1.25, g / 3.0,
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute',
       CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'x', ARRAY[g, g + 1]) END,
       decode(md5(g::text), 'hex'), g % 2 = 0, ARRAY['t' || g]
FROM generate_series(1, 3000) g;
"""
ITEMS = Spec(
    "items", ("id",), ["id", "label", "amount", "ratio", "at", "doc", "blob", "flag", "tags"]
)


def test_identical_tables_match_row_for_row(pair: Any) -> None:
    src, tgt = pair
    both(pair, ALL_TYPES)
    # settings that change the text form of rows must not matter
    src.execute(
        "SET TimeZone = 'Asia/Kolkata'; SET extra_float_digits = 0; "
        "SET DateStyle = 'German'; SET bytea_output = 'escape'"
    )
    d = diff_table(src, tgt, ITEMS, chunk_rows=500)
    assert d.identical
    assert (d.matched, d.source_rows, d.target_rows) == (3000, 3000, 3000)
    # the whole table's sums matched: one scan a side, no chunk was needed
    assert d.first_keys == [] and d.chunks == 1 and d.chunks_differing == 0
    assert d.source_checksum == d.target_checksum
    assert d.source_checksum.startswith("3000:")
    # idle connections are left idle: verify opened and ended its own transaction
    assert src.info.transaction_status == TransactionStatus.IDLE


def test_every_kind_of_difference_with_nulls(pair: Any) -> None:
    src, tgt = pair
    both(pair, ALL_TYPES)
    tgt.execute("UPDATE items SET label = NULL WHERE id = 10")  # value -> NULL
    tgt.execute("UPDATE items SET label = '' WHERE id = 14")  # NULL -> empty string
    tgt.execute("UPDATE items SET doc = '{\"g\": 2}' WHERE id = 2000")  # jsonb value
    tgt.execute("UPDATE items SET ratio = ratio + 1e-12 WHERE id = 2500")  # last float digits
    tgt.execute("DELETE FROM items WHERE id IN (1, 1500)")
    tgt.execute("INSERT INTO items (id) VALUES (0), (99999)")
    seen: list[DiffRange] = []
    d = diff_table(src, tgt, ITEMS, chunk_rows=400, list_rows=50, on_range=seen.append)
    assert not d.identical
    assert (d.differing, d.only_in_source, d.only_in_target) == (4, 2, 2)
    assert d.matched == 3000 - 4 - 2
    assert (d.source_rows, d.target_rows) == (3000, 3000)
    by_kind = {(k.kind, k.key[0]) for k in d.first_keys}
    assert by_kind == {
        ("differing", 10),
        ("differing", 14),
        ("differing", 2000),
        ("differing", 2500),
        ("only_in_source", 1),
        ("only_in_source", 1500),
        ("only_in_target", 0),
        ("only_in_target", 99999),
    }
    # the ranges handed to the sync hold exactly the same keys
    ranged = {(k.kind, k.key[0]) for r in seen for k in (r.diffs or [])}
    assert ranged == by_kind
    assert d.source_checksum != d.target_checksum


KEY_KINDS = {
    "integer": (
        "CREATE TABLE k (id integer PRIMARY KEY, v text)",
        "INSERT INTO k SELECT g, 'v' || g FROM generate_series(1, 5000) g",
        ("id",),
        ["id", "v"],
    ),
    "uuid": (
        "CREATE TABLE k (id uuid PRIMARY KEY, v text)",
        "INSERT INTO k SELECT md5(g::text)::uuid, 'v' || g FROM generate_series(1, 5000) g",
        ("id",),
        ["id", "v"],
    ),
    "text": (
        "CREATE TABLE k (id text PRIMARY KEY, v text)",
        "INSERT INTO k SELECT 'key-' || g, 'v' || g FROM generate_series(1, 5000) g",
        ("id",),
        ["id", "v"],
    ),
    "composite": (
        "CREATE TABLE k (tenant int, code text, v text, PRIMARY KEY (tenant, code))",
        "INSERT INTO k SELECT g % 7, 'c' || g, 'v' || g FROM generate_series(1, 5000) g",
        ("tenant", "code"),
        ["tenant", "code", "v"],
    ),
}


@pytest.mark.parametrize("kind", list(KEY_KINDS))
def test_differences_for_each_key_type(pair: Any, kind: str) -> None:
    src, tgt = pair
    ddl, fill, key, cols = KEY_KINDS[kind]
    both(pair, ddl)
    both(pair, fill)
    names = sql.SQL(", ").join(map(sql.Identifier, key))
    # pick keys from the source in a way that does not depend on the key type
    picked = [
        tuple(r)
        for r in src.execute(sql.SQL("SELECT {} FROM k ORDER BY md5(v) LIMIT 3").format(names))
    ]
    upd, gone, _ = picked
    cond = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in key)
    tgt.execute(sql.SQL("UPDATE k SET v = 'changed' WHERE {}").format(cond), upd)
    tgt.execute(sql.SQL("DELETE FROM k WHERE {}").format(cond), gone)
    extra = tgt.execute(
        sql.SQL("INSERT INTO k SELECT {sel}, 'extra' FROM k WHERE {c} RETURNING {names}").format(
            sel=sql.SQL(
                {
                    "integer": "id + 100000",
                    "uuid": "md5('x')::uuid",
                    "text": "'zz-extra'",
                    "composite": "tenant + 100, code",
                }[kind]
            ),
            c=cond,
            names=names,
        ),
        upd,
    ).fetchone()
    d = diff_table(src, tgt, Spec("k", key, cols), chunk_rows=700, list_rows=40)
    assert (d.differing, d.only_in_source, d.only_in_target) == (1, 1, 1)
    assert d.matched == 5000 - 2
    got = {k.kind: k.key for k in d.first_keys}
    assert got == {"differing": upd, "only_in_source": gone, "only_in_target": tuple(extra)}
    # and after repairing the target by hand, the tables are identical
    tgt.execute(sql.SQL("DELETE FROM k WHERE {}").format(cond), tuple(extra))
    tgt.execute(sql.SQL("UPDATE k SET v = 'changed' WHERE {}").format(cond), upd)
    src.execute(sql.SQL("UPDATE k SET v = 'changed' WHERE {}").format(cond), upd)
    src.execute(sql.SQL("DELETE FROM k WHERE {}").format(cond), gone)
    assert diff_table(src, tgt, Spec("k", key, cols), chunk_rows=700).identical


def test_bisection_finds_three_scattered_differences_in_50k_rows(pair: Any) -> None:
    src, tgt = pair
    both(pair, "CREATE TABLE big (id bigint PRIMARY KEY, v text, n int)")
    both(pair, "INSERT INTO big SELECT g, md5(g::text), g FROM generate_series(1, 50000) g")
    tgt.execute("UPDATE big SET n = -1 WHERE id IN (123, 31337, 49999)")
    ranges: list[DiffRange] = []
    progress: list[tuple[int, int]] = []
    d = diff_table(
        src,
        tgt,
        Spec("big", ("id",), ["id", "v", "n"]),
        chunk_rows=5000,
        list_rows=64,
        fanout=8,
        batch_rows=20000,
        on_range=ranges.append,
        on_progress=lambda done, total: progress.append((done, total)),
        pack=False,
    )
    assert [k.key for k in d.first_keys] == [(123,), (31337,), (49999,)]
    assert (d.differing, d.matched, d.chunks, d.chunks_differing) == (3, 49997, 10, 3)
    # bisection narrowed each difference to a small range instead of a whole chunk
    assert len(ranges) == 3
    assert all(r.source_rows <= 64 and r.target_rows == r.source_rows for r in ranges)
    assert progress[-1] == (50000, 50000) and len(progress) >= 2
    assert [a for a, _ in progress] == sorted(a for a, _ in progress)


def test_one_side_empty(pair: Any) -> None:
    src, tgt = pair
    both(pair, "CREATE TABLE e (id int PRIMARY KEY, v text)")
    src.execute("INSERT INTO e SELECT g, 'v' FROM generate_series(1, 2500) g")
    ranges: list[DiffRange] = []
    d = diff_table(
        src,
        tgt,
        Spec("e", ("id",), ["id", "v"]),
        chunk_rows=1000,
        key_limit=5,
        on_range=ranges.append,
        pack=False,
    )
    assert (d.only_in_source, d.matched, d.target_rows) == (2500, 0, 0)
    assert [k.key for k in d.first_keys] == [(1,), (2,), (3,), (4,), (5,)]
    # whole chunks missing on the target are reported as ranges, without listing keys
    assert [(r.source_rows, r.target_rows, r.diffs) for r in ranges] == [
        (1000, 0, None),
        (1000, 0, None),
        (500, 0, None),
    ]
    assert d.target_checksum == "0:0000000000000000"
    d = diff_table(
        tgt, src, Spec("e", ("id",), ["id", "v"]), chunk_rows=1000, key_limit=2, pack=False
    )
    assert (d.only_in_target, d.chunks) == (2500, 1)
    assert [k.kind for k in d.first_keys] == ["only_in_target"] * 2
    both(pair, "CREATE TABLE none (id int PRIMARY KEY)")
    d = diff_table(src, tgt, Spec("none", ("id",), ["id"]), pack=False)
    assert d.identical and d.matched == 0


def test_reads_run_inside_the_callers_snapshot(pair: Any) -> None:
    src, tgt = pair
    both(pair, "CREATE TABLE s (id int PRIMARY KEY, v int)")
    both(pair, "INSERT INTO s SELECT g, g FROM generate_series(1, 100) g")
    exporter = psycopg.connect(src.info.dsn)
    exporter.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    snap = exporter.execute("SELECT pg_export_snapshot()").fetchone()
    assert snap
    src.execute("UPDATE s SET v = 0 WHERE id = 7")  # committed after the snapshot
    worker = psycopg.connect(src.info.dsn)
    worker.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    worker.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snap[0])))
    try:
        assert diff_table(worker, tgt, Spec("s", ("id",), ["id", "v"])).identical
        # the caller's transaction is still open, and untouched
        assert worker.info.transaction_status == TransactionStatus.INTRANS
        d = diff_table(src, tgt, Spec("s", ("id",), ["id", "v"]))
        assert [k.key for k in d.first_keys] == [(7,)]
    finally:
        worker.close()
        exporter.close()


def test_key_collations_that_differ_switch_both_sides_to_c(pair: Any) -> None:
    src, tgt = pair
    # (this server has no ICU or libc locales that sort differently; the switch itself and
    # the queries under COLLATE "C", composite key included, are what is tested here)
    src.execute('CREATE TABLE c (id text COLLATE "pg_c_utf8", n int, v int, PRIMARY KEY (id, n))')
    tgt.execute('CREATE TABLE c (id text COLLATE "C", n int, v int, PRIMARY KEY (id, n))')
    both(
        pair,
        "INSERT INTO c SELECT CASE WHEN g % 2 = 0 THEN upper(md5(g::text)) "
        "ELSE md5(g::text) END, g % 3, g FROM generate_series(1, 3000) g",
    )
    spec = Spec("c", ("id", "n"), ["id", "n", "v"])
    d = diff_table(src, tgt, spec, chunk_rows=200)
    assert d.identical and d.matched == 3000
    assert d.source_side is not None and d.source_side.collate_c
    assert d.target_side is not None and d.target_side.collate_c
    tgt.execute("UPDATE c SET v = -v WHERE v IN (10, 11)")
    d = diff_table(src, tgt, spec, chunk_rows=200, list_rows=20)
    assert (d.differing, d.only_in_source, d.only_in_target) == (2, 0, 0)


def test_masking_expressions_and_where(pair: Any) -> None:
    src, tgt = pair
    both(pair, "CREATE TABLE p (id int PRIMARY KEY, email text, active bool)")
    src.execute(
        "INSERT INTO p SELECT g, 'user' || g || '@example.com', g % 3 > 0 "
        "FROM generate_series(1, 300) g"
    )
    # the target holds what a masked sync wrote: a hash of the email
    tgt.execute(
        "INSERT INTO p SELECT g, md5('user' || g || '@example.com'), g % 3 > 0 "
        "FROM generate_series(1, 300) g"
    )
    spec = Spec("p", ("id",), ["id", "email", "active"])
    mask = {"email": sql.SQL("md5({})").format(sql.Identifier("email"))}
    assert not diff_table(src, tgt, spec).identical
    assert diff_table(src, tgt, spec, source_exprs=mask).identical
    # rows outside ``where`` are not compared, on either side
    tgt.execute("UPDATE p SET email = 'x' WHERE NOT active")
    tgt.execute("INSERT INTO p VALUES (1000, 'x', false)")
    spec.where = "active AND email NOT LIKE '%nobody%'"
    d = diff_table(src, tgt, spec, source_exprs=mask)
    assert d.identical and d.matched == 200


def test_types_without_hash_functions_or_differing_between_sides(pair: Any) -> None:
    src, tgt = pair
    src.execute(
        "CREATE TABLE m (id int PRIMARY KEY, doc json, p point, n integer, r int4range, c numeric)"
    )
    # the target declares other types for n and c: they are compared by their text
    tgt.execute(
        "CREATE TABLE m (id bigint PRIMARY KEY, doc json, p point, n bigint, r int4range, c text)"
    )
    both(
        pair,
        "INSERT INTO m SELECT g, json_build_object('g', g), point(g, -g), g * 7, "
        "int4range(g, g + 10), g / 4.0 FROM generate_series(1, 1000) g",
    )
    spec = Spec("m", ("id",), ["id", "doc", "p", "n", "r", "c"])
    d = diff_table(src, tgt, spec, chunk_rows=300)
    assert d.identical and d.matched == 1000
    assert d.source_side is not None and d.source_side.as_text >= {"doc", "p", "n", "c"}
    tgt.execute("UPDATE m SET doc = '{\"g\":  5}' WHERE id = 5")  # json keeps whitespace
    tgt.execute("UPDATE m SET p = point(0, 0) WHERE id = 6")
    tgt.execute("UPDATE m SET c = '1.7500' WHERE id = 7")  # same number, other text
    d = diff_table(src, tgt, spec, chunk_rows=300, list_rows=10)
    assert [(k.kind, k.key) for k in d.first_keys] == [
        ("differing", (5,)),
        ("differing", (6,)),
        ("differing", (7,)),
    ]


def test_sampled_chunk_boundaries_on_an_analyzed_table(pair: Any) -> None:
    src, tgt = pair
    both(pair, "CREATE TABLE s (id uuid PRIMARY KEY, n int)")
    both(pair, "INSERT INTO s SELECT md5(g::text)::uuid, g FROM generate_series(1, 40000) g")
    both(pair, "ANALYZE s")
    tgt.execute("DELETE FROM s WHERE n IN (17, 20000)")
    tgt.execute("UPDATE s SET n = 0 WHERE n = 39999")
    d = diff_table(
        src, tgt, Spec("s", ("id",), ["id", "n"]), chunk_rows=1000, list_rows=50, pack=False
    )
    # boundaries come from a 1% row sample here: about 40 chunks, exact results all the same
    assert 25 <= d.chunks <= 60
    assert (d.only_in_source, d.differing, d.matched) == (2, 1, 39997)


@pytest.mark.parametrize("way", ["verify", "signatures", "packed"])
def test_dense_differences_are_settled_by_signatures(
    pair: Any, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """Every chunk differs, sparsely. Verify and a sync whose keys cannot be packed read
    signatures and then only the rows of differing sub-buckets; a sync with an integer
    key reads each piece of 20 chunks once a side, packed."""
    src, tgt = pair
    from pgferry.sync import checksum, packed, readback

    expect_changes = way != "verify"
    if way == "signatures":  # as for a text key: the packed reads do not apply
        monkeypatch.setattr(packed, "packable", lambda s, t: False)
    reads = results_of(monkeypatch, packed, "read")

    calls: list[str] = []  # the whole-table reads, in order
    fetched: list[int] = []  # rows read back by key per call
    real_rows, real_stream = readback.rows_in_subs, readback.sub_rows_stream

    def spy(name: str, real: Any) -> Any:
        def wrapped(*args: Any, **kw: Any) -> Any:
            calls.append(name)
            return real(*args, **kw)

        return wrapped

    def spy_rows(*args: Any, **kw: Any) -> Any:
        got = real_rows(*args, **kw)
        fetched.append(len(got))
        return got

    def spy_stream(*args: Any, **kw: Any) -> Any:
        fetched.append(0)
        for row in real_stream(*args, **kw):
            fetched[-1] += 1
            yield row

    for name in ("sums", "bucket_sums", "signatures", "signature_stream"):
        monkeypatch.setattr(checksum, name, spy(name, getattr(checksum, name)))
    monkeypatch.setattr(readback, "rows_in_subs", spy_rows)
    monkeypatch.setattr(readback, "sub_rows_stream", spy_stream)
    both(pair, "CREATE TABLE d (id int PRIMARY KEY, v text)")
    both(pair, "INSERT INTO d SELECT g, 'v' || g FROM generate_series(1, 20000) g")
    # every 50th row changed, every 1000th missing: all chunks differ, sparsely
    tgt.execute("UPDATE d SET v = 'x' WHERE id % 50 = 0")
    tgt.execute("DELETE FROM d WHERE id % 1000 = 1")
    ranges: list[DiffRange] = []
    d = diff_table(
        src,
        tgt,
        Spec("d", ("id",), ["id", "v"]),
        chunk_rows=500,
        batch_rows=5000,
        key_limit=3,
        on_range=ranges.append,
        expect_changes=expect_changes,
        pack=way != "verify",
    )
    assert (d.differing, d.only_in_source, d.only_in_target) == (400, 20, 0)
    pieces = 2 if way == "packed" else 40  # of 20 chunks of 500 rows, or of 500 rows
    assert d.matched == 20000 - 420 and d.chunks_differing == d.chunks == pieces
    assert [(k.kind, k.key) for k in d.first_keys] == [
        ("only_in_source", (1,)),
        ("differing", (50,)),
        ("differing", (100,)),
    ]
    listed = sorted(k.key[0] for r in ranges for k in r.diffs or [])
    assert listed == sorted({*range(50, 20001, 50), *range(1, 20000, 1000)})
    if way == "packed":
        # every row's key and hash, once a side, in two pieces; nothing else read
        assert calls == [] and fetched == []
        assert sorted(r.rows for r in reads) == [9990, 9990, 10000, 10000]
        return
    assert reads == []
    if expect_changes:
        # a sync: every chunk's signature in one scan a side, streamed
        assert calls == ["signature_stream"] * 2
    else:
        # verify: the whole table's sums (one scan a side) differ, then every chunk's sums,
        # then the signatures of all the differing chunks in one more scan a side
        assert calls == ["sums"] * 2 + ["bucket_sums"] * 2 + ["signatures"] * 2
    # only the rows of differing sub-buckets (2.5 to 5 rows each) were read back by key
    # (3,970 here), not every row of the differing chunks (40,000), in one stream a side
    assert len(fetched) == 2
    assert 400 * 2 + 20 <= sum(fetched) <= 40_000 // 8


def test_partitioned_table_through_its_parent(pair: Any) -> None:
    src, tgt = pair
    both(pair, "CREATE TABLE pt (id int PRIMARY KEY, v text) PARTITION BY RANGE (id)")
    both(pair, "CREATE TABLE pt_a PARTITION OF pt FOR VALUES FROM (0) TO (20000)")
    both(pair, "CREATE TABLE pt_b PARTITION OF pt FOR VALUES FROM (20000) TO (100000)")
    both(pair, "INSERT INTO pt SELECT g, 'v' || g FROM generate_series(1, 40000) g")
    both(pair, "ANALYZE pt")
    tgt.execute("UPDATE pt SET v = 'x' WHERE id IN (5, 25000)")
    d = diff_table(src, tgt, Spec("pt", ("id",), ["id", "v"]), chunk_rows=1000, pack=False)
    # the row estimate of the partitions makes the boundaries come from a sample
    assert 25 <= d.chunks <= 60
    assert [k.key for k in d.first_keys] == [(5,), (25000,)]
    assert d.matched == 39998


def test_settings_are_restored_in_the_callers_transaction(pair: Any) -> None:
    src, tgt = pair
    both(pair, "CREATE TABLE r (id int PRIMARY KEY, at timestamptz, j json)")
    both(
        pair, "INSERT INTO r SELECT g, '2026-01-01 10:00+00', '{}' FROM generate_series(1, 3000) g"
    )
    src.execute("SET TimeZone = 'Asia/Kolkata'")
    with src.transaction():
        assert diff_table(src, tgt, Spec("r", ("id",), ["id", "at", "j"]), chunk_rows=500).identical
        got = src.execute(
            "SELECT current_setting('TimeZone'), current_setting('enable_sort')"
        ).fetchone()
        assert got == ("Asia/Kolkata", "on")


def test_two_rows_swapping_values_are_found(pair: Any) -> None:
    src, tgt = pair
    both(pair, "CREATE TABLE w (id int PRIMARY KEY, a text, b text)")
    both(pair, "INSERT INTO w SELECT g, 'a' || g, 'b' || g FROM generate_series(1, 1000) g")
    # rows 3 and 4 trade their a values; row 7 trades a and b (same type, other columns)
    tgt.execute("UPDATE w SET a = CASE id WHEN 3 THEN 'a4' ELSE 'a3' END WHERE id IN (3, 4)")
    tgt.execute("UPDATE w SET a = b, b = a WHERE id = 7")
    d = diff_table(src, tgt, Spec("w", ("id",), ["id", "a", "b"]), chunk_rows=400)
    assert [k.key for k in d.first_keys] == [(3,), (4,), (7,)]
    assert d.source_checksum != d.target_checksum


def test_row_hashes_use_all_64_bits(db: str) -> None:
    # a row hash that loses bits collides: 300k rows would then share ~10 hashes
    from pgferry.sync import sides

    with psycopg.connect(db, autocommit=True) as c:
        c.execute("CREATE TABLE h (id bigint PRIMARY KEY, a text, t timestamptz, n numeric)")
        c.execute(
            "INSERT INTO h SELECT g, 'user' || g, '2024-01-01'::timestamptz + g * "
            "interval '1 second', g / 100.0 FROM generate_series(1, 300000) g"
        )
        s = sides.side(c, "public", "h", ["id"], ["id", "a", "t", "n"])
        q = sql.SQL("SELECT count(*) - count(DISTINCT {}) FROM h").format(s.row_hash())
        assert c.execute(q).fetchone() == (0,)


def test_big_integer_keys_that_fold_alike_are_told_apart(pair: Any) -> None:
    # hashint8extended(2^32 + 4) = hashint8extended(5): a key-only comparison must still see
    # a row only on the source and another only on the target
    src, tgt = pair
    both(pair, "CREATE TABLE b (id bigint PRIMARY KEY)")
    both(pair, "INSERT INTO b SELECT g FROM generate_series(1000, 1100) g")
    src.execute("INSERT INTO b VALUES (5)")
    tgt.execute("INSERT INTO b VALUES ((1::bigint << 32) + 4)")
    d = diff_table(src, tgt, Spec("b", ("id",), ["id"]))
    assert {(k.kind, k.key) for k in d.first_keys} == {
        ("only_in_source", (5,)),
        ("only_in_target", (2**32 + 4,)),
    }


def test_names_that_need_quoting(pair: Any) -> None:
    src, tgt = pair
    both(
        pair,
        'CREATE SCHEMA "Sales"; CREATE TABLE "Sales"."Order Lines" '
        '("Order Id" bigint, "Line" int, "Note" text, PRIMARY KEY ("Order Id", "Line"))',
    )
    both(
        pair,
        'INSERT INTO "Sales"."Order Lines" SELECT g / 4, g % 4, \'n\' || g '
        "FROM generate_series(1, 30000) g",
    )
    both(pair, 'ANALYZE "Sales"."Order Lines"')
    tgt.execute('UPDATE "Sales"."Order Lines" SET "Note" = NULL WHERE "Order Id" = 77')
    spec = Spec(
        "Order Lines",
        ("Order Id", "Line"),
        ["Order Id", "Line", "Note"],
        schema="Sales",
        where='"Note" IS NULL OR "Note" NOT LIKE \'%x%\'',
    )
    d = diff_table(src, tgt, spec, chunk_rows=500, pack=False)
    assert d.chunks > 20  # boundaries from the sample (the estimate read the quoted name)
    assert sorted(k.key for k in d.first_keys) == [(77, 0), (77, 1), (77, 2), (77, 3)]
    # a name with % cannot go through psycopg's placeholders: refused in one sentence
    both(pair, 'ALTER TABLE "Sales"."Order Lines" RENAME COLUMN "Note" TO "Note%"')
    with pytest.raises(BadInput, match="names containing '%'"):
        diff_table(src, tgt, replace(spec, columns=["Order Id", "Line", "Note%"]), pack=False)

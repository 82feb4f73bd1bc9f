"""Row hashes that a type's own hash function would get wrong: numeric signs, enum OIDs,
bigints and timestamps whose halves fold alike."""

from __future__ import annotations

from typing import Any

from pgferry.sync.verify import diff_table
from tests.helpers.sync import Spec


def test_numeric_values_that_differ_in_sign_or_are_special(pair: Any) -> None:
    # hash_numeric leaves the sign out (3 and -3 share a hash) and hashes NaN and both
    # infinities alike; equal values of another scale must still match
    src, tgt = pair
    values = ["3", "-3", "0", "NaN", "Infinity", "-Infinity", "1.5", None]
    for c in pair:
        c.execute("CREATE TABLE n (id int PRIMARY KEY, v numeric)")
    src.cursor().executemany("INSERT INTO n VALUES (%s, %s::numeric)", list(enumerate(values)))
    flipped = ["-3", "3", "0.000", "Infinity", "NaN", "-Infinity", "1.50", None]
    tgt.cursor().executemany("INSERT INTO n VALUES (%s, %s::numeric)", list(enumerate(flipped)))
    d = diff_table(src, tgt, Spec("n", ("id",), ["id", "v"]))
    assert sorted(k.key[0] for k in d.first_keys) == [0, 1, 3, 4]
    assert (d.differing, d.matched) == (4, 4)


def test_enum_labels_match_across_databases(pair: Any) -> None:
    # the same label has another OID in another database (enum hash functions hash it)
    src, tgt = pair
    tgt.execute("CREATE TYPE filler AS ENUM ('x', 'y', 'z')")  # shifts the target's OIDs
    for c in pair:
        c.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
        c.execute("CREATE TABLE e (m mood, n int, v mood, PRIMARY KEY (m, n))")
        c.execute(
            "INSERT INTO e SELECT (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood, g, "
            "(ARRAY['sad', 'ok', 'happy'])[g % 2 + 1]::mood FROM generate_series(1, 2000) g"
        )
    spec = Spec("e", ("m", "n"), ["m", "n", "v"])
    oid = "SELECT oid FROM pg_enum WHERE enumlabel = 'sad'"
    assert src.execute(oid).fetchone() != tgt.execute(oid).fetchone()
    d = diff_table(src, tgt, spec, chunk_rows=300)
    assert d.identical and d.matched == 2000
    tgt.execute("UPDATE e SET v = 'happy' WHERE n % 100 = 0")
    d = diff_table(src, tgt, spec, chunk_rows=300)
    assert (d.differing, d.only_in_source, d.only_in_target) == (20, 0, 0)


def test_bigint_and_timestamp_values_that_fold_alike(pair: Any) -> None:
    # hashint8extended (and so hash_record_extended, and the timestamp hashes built on
    # it) folds the high 32 bits into the low ones before hashing: 0 and 2**32 + 1 hash
    # alike, and so do the instants 0 and 2**32 + 1 microseconds after 2000-01-01 UTC
    src, tgt = pair
    epoch = "2000-01-01 00:00:00+00"
    later = "2000-01-01 01:11:34.967297+00"  # 4,294,967,297 microseconds after it
    ((same_int, same_ts),) = src.execute(
        "SELECT hash_record_extended(ROW(0::int8), 0)"
        " = hash_record_extended(ROW(4294967297::int8), 0),"
        " hash_record_extended(ROW(%s::timestamptz), 0)"
        " = hash_record_extended(ROW(%s::timestamptz), 0)",
        [epoch, later],
    ).fetchall()
    assert (same_int, same_ts) == (True, True)  # the server's own hash cannot tell them apart
    for c in pair:
        c.execute("CREATE TABLE f (id int PRIMARY KEY, n bigint, t timestamptz)")
    src.execute("INSERT INTO f VALUES (1, 0, %s), (2, 7, %s), (3, 5, %s)", [epoch, epoch, later])
    tgt.execute(
        "INSERT INTO f VALUES (1, 4294967297, %s), (2, 7, %s), (3, 5, %s)", [epoch, later, later]
    )
    d = diff_table(src, tgt, Spec("f", ("id",), ["id", "n", "t"]))
    assert sorted(k.key[0] for k in d.first_keys) == [1, 2]
    assert (d.differing, d.matched) == (2, 1)

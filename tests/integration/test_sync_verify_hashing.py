"""Row hashes that a type's own hash function would get wrong: numeric signs, enum OIDs."""

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

"""Row hashes that a type's own hash function would get wrong: numeric signs, enum OIDs,
bigints and timestamps whose halves fold alike (and the bigints a verify may hash as they
are: every value, on both sides, where the fold changes nothing)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

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


def _int8_pair(
    pair: Any, values: list[tuple[int | None, int | None]], *, index: bool, stamp: bool = True
) -> Spec:
    """Table ``w`` (bigint key, bigint ``n``) on both sides: row i holds ``values[i]``.

    ``stamp``: with a timestamptz column too (the same value in every row), so that the
    table is hashed in version 2, where bigints are hashed by their bytes (or plainly,
    small_ints); without it every column is hashed by its own function, in version 3.
    """
    extra = ", at timestamptz DEFAULT '2026-01-02 03:04:05+00'" if stamp else ""
    for c in pair:
        c.execute("DROP TABLE IF EXISTS w")
        c.execute(f"CREATE TABLE w (id bigint PRIMARY KEY, n bigint{extra})")
        if index:
            c.execute("CREATE INDEX w_n ON w (n)")
    for c, side in zip(pair, (0, 1), strict=True):
        c.cursor().executemany(
            "INSERT INTO w (id, n) VALUES (%s, %s)", [(i, v[side]) for i, v in enumerate(values)]
        )
    return Spec("w", ("id",), ["id", "n", "at"] if stamp else ["id", "n"])


def test_small_bigints_are_hashed_as_they_are_and_differences_still_show(pair: Any) -> None:
    # every value of id and n fits in 32 bits on both sides: the fold of
    # hashint8extended changes nothing there, so a verify hashes them as they are
    values = [(v, v) for v in (0, 1, -(2**31), 2**31 - 1, None, 42)]
    spec = _int8_pair(pair, values, index=True)
    d = diff_table(pair[0], pair[1], spec)
    assert d.source_side is not None and d.source_side.plain_int8 == {"id", "n"}
    assert d.identical and d.matched == len(values)
    pair[1].execute("UPDATE w SET n = 43 WHERE id = 5")
    pair[1].execute("UPDATE w SET n = 0 WHERE id = 4")  # NULL against 0
    d = diff_table(pair[0], pair[1], spec)
    assert sorted(k.key[0] for k in d.first_keys) == [4, 5]
    # a sync's comparison keeps the exact hash: its conflicts base stores row hashes
    d = diff_table(pair[0], pair[1], spec, expect_changes=True)
    assert d.source_side is not None and d.source_side.plain_int8 == frozenset()
    assert (d.differing, d.matched) == (2, len(values) - 2)


@pytest.mark.parametrize(
    ("a", "b"),
    [(0, 2**32 + 1), (5, 5 - 2**32), (-1, 2**32 - 1), (2**31, -(2**31))],
    ids=["high-half", "negative", "minus-one", "sign"],
)
def test_bigints_that_would_fold_alike_keep_the_exact_hash(pair: Any, a: int, b: int) -> None:
    # two values the server's own bigint hash cannot tell apart, one on each side: the
    # ranges read before the comparison rule the plain hash out for the column
    src, _ = pair
    ((alike,),) = src.execute(
        "SELECT hash_record_extended(ROW(%s::int8), 0) = hash_record_extended(ROW(%s::int8), 0)",
        [a, b],
    ).fetchall()
    assert alike  # the server's own hash cannot tell them apart
    spec = _int8_pair(pair, [(1, 1), (a, b), (7, 7)], index=True)
    d = diff_table(pair[0], pair[1], spec)
    assert d.source_side is not None and "n" not in d.source_side.plain_int8
    assert "id" in d.source_side.plain_int8
    assert [k.key[0] for k in d.first_keys] == [1] and (d.differing, d.matched) == (1, 2)


def test_a_bigint_no_index_leads_keeps_the_exact_hash(pair: Any) -> None:
    spec = _int8_pair(pair, [(1, 1), (2, 3)], index=False)
    d = diff_table(pair[0], pair[1], spec)
    assert d.source_side is not None and d.source_side.plain_int8 == {"id"}
    assert (d.differing, d.matched) == (1, 1)


_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 2**31, 2**32 - 1, 2**32, 2**32 + 1, -(2**32) + 5, 5]


@pytest.mark.parametrize("stamp", [True, False], ids=["version-2", "version-3"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(_EDGES), st.integers(-(2**63), 2**63 - 1)),
            st.one_of(st.none(), st.sampled_from(_EDGES), st.integers(-(2**33), 2**33)),
        ),
        min_size=1,
        max_size=6,
    )
)
# values the server's own bigint hash folds alike, one on each side
@example(rows=[(0, 2**32 + 1), (5, 5 - 2**32), (-1, 2**32 - 1), (2**31, -(2**31)), (7, 7)])
def test_verify_reports_exactly_the_rows_whose_bigints_differ(
    pair: Any, rows: list[tuple[int | None, int | None]], stamp: bool
) -> None:
    # the invariant: a verify says equal of a row exactly when its values are equal,
    # whichever hash (version 2, plain or exact, or version 3) the table's columns and
    # the ranges of the values chose
    spec = _int8_pair(pair, rows, index=True, stamp=stamp)
    d = diff_table(pair[0], pair[1], spec)
    assert d.source_side is not None and d.source_side.hash_version == (2 if stamp else 3)
    assert sorted(k.key[0] for k in d.first_keys) == [i for i, (a, b) in enumerate(rows) if a != b]


_SPECIAL = [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("-0.0")]
#: a table of columns version 3 hashes each by its own function (so it is hashed in 3)
_DIRECT = {
    "i": ("int", st.integers(-(2**31), 2**31 - 1)),
    "b": ("bigint", st.one_of(st.sampled_from(_EDGES), st.integers(-(2**63), 2**63 - 1))),
    "t": (
        "text",
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6),
    ),
    "n": (
        "numeric",
        st.one_of(
            st.sampled_from(_SPECIAL),
            st.decimals(min_value=-(10**9), max_value=10**9, allow_nan=False, places=3),
        ),
    ),
    "f": ("float8", st.floats(allow_nan=True, allow_infinity=True)),
    "d": ("date", st.dates()),
    "o": ("bool", st.booleans()),
    "u": ("uuid", st.uuids()),
}


def _same(a: Any, b: Any) -> bool:
    """Equal as PostgreSQL's ``IS NOT DISTINCT FROM`` says (NaN equals NaN, -0 equals 0,
    1.50 equals 1.5)."""
    if a is None or b is None:
        return a is b
    if isinstance(a, float | Decimal) and a != a:  # NaN
        return bool(b != b)
    return bool(a == b)


_ROW = st.fixed_dictionaries({k: st.one_of(st.none(), s) for k, (_, s) in _DIRECT.items()})


def _only(col: str, value: Any) -> dict[str, Any]:
    return {**dict.fromkeys(_DIRECT), col: value}


#: values a type's own hash (or a NULL's stand-in) would take for another: 3 and -3, NaN
#: and Infinity, float 0 and NULL, bigints folded alike, '' and NULL
_ALIKE = [
    ("n", Decimal(3), Decimal(-3)),
    ("n", Decimal("NaN"), Decimal("Infinity")),
    ("f", 0.0, None),
    ("b", 0, 2**32 + 1),
    ("t", "", None),
]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(_ROW, min_size=1, max_size=6),
    changes=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(sorted(_DIRECT)), _ROW)),
)
@example(
    rows=[_only(col, a) for col, a, _ in _ALIKE],
    changes=[(i, col, _only(col, b)) for i, (col, _, b) in enumerate(_ALIKE)],
)
def test_version_3_reports_exactly_the_rows_that_differ(
    pair: Any, rows: list[dict[str, Any]], changes: list[tuple[int, str, dict[str, Any]]]
) -> None:
    # the invariant: a table hashed column by column (row hash version 3, chosen for a
    # table whose every column has a hash function of its own) is equal in a verify
    # exactly where every value is equal, as the server compares them
    names = sorted(_DIRECT)
    target = [dict(r) for r in rows]
    for i, col, other in changes:
        if i < len(target):
            target[i][col] = other[col]
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(_DIRECT[k][0])) for k in names
    )
    select = sql.SQL("SELECT {} FROM h ORDER BY id").format(
        sql.SQL(", ").join(map(sql.Identifier, names))
    )
    for c, data in zip(pair, (rows, target), strict=True):
        c.execute("DROP TABLE IF EXISTS h")
        c.execute(sql.SQL("CREATE TABLE h (id int PRIMARY KEY, {})").format(cols))
        c.cursor().executemany(
            sql.SQL("INSERT INTO h VALUES (%s, {})").format(
                sql.SQL(", ").join(sql.Placeholder() * len(names))
            ),
            [(i, *(r[k] for k in names)) for i, r in enumerate(data)],
        )
    got = [dict(zip(names, row, strict=True)) for c in pair for row in c.execute(select)]
    src, tgt = got[: len(rows)], got[len(rows) :]
    differ = [i for i in range(len(rows)) if not all(_same(src[i][k], tgt[i][k]) for k in names)]
    d = diff_table(pair[0], pair[1], Spec("h", ("id",), ["id", *names]))
    assert d.source_side is not None and d.source_side.hash_version == 3
    assert sorted(k.key[0] for k in d.first_keys) == differ

"""Keys that one side orders otherwise: text in a collation of one name, enums.

The comparison cuts both tables at the same key ranges, in the key columns' order; it
did so whenever the two collations had one *name*, and whatever each database's enum
label order. A collation's name says nothing about its order: ``en_US.UTF-8`` sorts by
bytes on macOS and otherwise on Linux, glibc 2.28 reordered it, and a collation an
application created (``CREATE COLLATION k ...``) can be anything on each side; an
enum's labels sort in the order each database added them (``ADD VALUE ... BEFORE``).
Found and fixed here: with ``k`` ICU ``en-US`` on one side and ``C`` on the other, 300
changed rows of 300,000 were reported as ``matched -20804``, 320,772 only in the source
and 880,032 only in the target; a sync of them reported 295,663 rows inserted and
295,663 deleted and rewrote the whole table (24 s instead of 2 s; on a protected
target, before-images of every row). An enum key (``(status, id)``, labels in another
order) of 200,000 rows with 200 changed: ``matched -80040``, 280,000 only in the
source. A collation is now known by what orders it (provider, locale, ICU rules,
library version) and by the order it gives a probe of strings, an enum by its labels
in order; where the two sides differ, keys compare in ``COLLATE "C"``, an enum as its
label's text.

Invariant: the reported counts are the true ones, and after a sync the target equals
the source. ICU needs a server built with it: Debian's PostgreSQL 15 is, the embedded
build is not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Project, Result, q, run_json, sql, write_project

ICU = "CREATE COLLATION k (provider = icu, locale = 'en-US');"
BYTES = "CREATE COLLATION k (provider = libc, locale = 'C');"
TABLE = "CREATE TABLE t (code text COLLATE k PRIMARY KEY, v int NOT NULL);"
#: mixed case, spaces and punctuation: the en-US order and the byte order disagree
ROWS = """
INSERT INTO t SELECT translate(substr(md5(g::text), 1, 8), '0123456789', 'ABCDEF-_ .'), g
FROM generate_series(1, %s) g ON CONFLICT DO NOTHING;
"""


def _rows(dsn: str) -> list[tuple[str, int]]:
    return [(r[0], r[1]) for r in q(dsn, 'SELECT code, v FROM t ORDER BY code COLLATE "C"')]


def _counts(r: Result) -> tuple[int, int, int]:
    (t,) = r.json["tables"]
    return t["differing"], t["only_in_source"], t["only_in_target"]


def _closes(
    cli: Callable[..., Result],
    p: Project,
    truth: tuple[int, int, int],
    rows: Callable[[str], list[Any]],
) -> None:
    """A verify reports ``truth`` (differing, only in the source, only in the target), a
    sync writes exactly that and makes the target equal to the source, and a second
    verify finds nothing."""
    want = rows(p.dsns["dev"])
    r = run_json(cli, p, "verify", "dev", "stage")
    assert r.code == (1 if any(truth) else 0) and _counts(r) == truth, r.out + r.err
    r = run_json(cli, p, "sync", "dev", "stage")
    assert r.code == 0, r.out + r.err
    (t,) = r.json["tables"]
    assert (t["updated"], t["inserted"], t["deleted"]) == truth
    assert rows(p.dsns["stage"]) == want
    r = run_json(cli, p, "verify", "dev", "stage")
    assert r.code == 0 and _counts(r) == (0, 0, 0), r.out + r.err


def test_one_name_two_orders_compares_by_bytes(
    tmp_path: Path,
    make_db: Callable[..., str],
    make_db15: Callable[..., str],
    cli: Callable[..., Result],
) -> None:
    """Source ``k`` orders by bytes (PostgreSQL 18), target ``k`` is ICU en-US (15)."""
    p = write_project(tmp_path, {"dev": make_db("src"), "stage": make_db15("stage")})
    sql(p.dsns["dev"], BYTES + TABLE + ROWS % 30000)
    sql(p.dsns["stage"], ICU + TABLE + ROWS % 30000)
    first = [r[0] for r in q(p.dsns["stage"], "SELECT code FROM t ORDER BY code LIMIT 3")]
    assert first != [r[0] for r in q(p.dsns["dev"], "SELECT code FROM t ORDER BY code LIMIT 3")]
    sql(p.dsns["stage"], "UPDATE t SET v = -v WHERE v % 100 = 0")  # 300 differ
    sql(p.dsns["stage"], "DELETE FROM t WHERE v % 1001 = 0")  # 29 only in the source
    sql(p.dsns["stage"], "INSERT INTO t VALUES ('zz-Only', 1), ('ZZ only', 2), ('zz only', 3)")
    _closes(cli, p, (300, 29, 3), _rows)


def _truth(src: list[tuple[str, int]], tgt: list[tuple[str, int]]) -> tuple[int, int, int]:
    a, b = dict(src), dict(tgt)
    return (
        sum(1 for k in a.keys() & b.keys() if a[k] != b[k]),
        len(a.keys() - b.keys()),
        len(b.keys() - a.keys()),
    )


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    n=st.integers(20_200, 22_000),  # above packed.SMALL: the table is cut into ranges
    seed=st.integers(0, 10**6),
    symbols=st.permutations("aAbB -_.zZ"),
    every=st.tuples(*[st.integers(40, 4000)] * 3),
)
def test_any_keys_and_changes_sync_to_the_source(
    tmp_path_factory: pytest.TempPathFactory,
    make_db15: Callable[..., str],
    cli: Callable[..., Result],
    n: int,
    seed: int,
    symbols: list[str],
    every: tuple[int, int, int],
) -> None:
    """Random keys of case, spaces and punctuation; random rows changed, missing, extra."""
    p = write_project(
        tmp_path_factory.mktemp("order"), {"dev": make_db15("src"), "stage": make_db15("tgt")}
    )
    rows = """
    INSERT INTO t SELECT translate(substr(md5((g + %(seed)s)::text), 1, 6), '0123456789',
                                   %(symbols)s), g
    FROM generate_series(1, %(n)s) g ON CONFLICT DO NOTHING;
    """
    values = {"seed": seed, "symbols": "".join(symbols), "n": n}
    for dsn, collation in ((p.dsns["dev"], ICU), (p.dsns["stage"], BYTES)):
        sql(dsn, collation + TABLE)
        sql(dsn, rows, values)
    changed, gone, extra = every
    sql(
        p.dsns["stage"],
        "UPDATE t SET v = -v WHERE hashint4(v + %s)::int8 %% %s = 0",
        [seed, changed],
    )
    sql(p.dsns["stage"], "DELETE FROM t WHERE hashint4(v - %s)::int8 %% %s = 0", [seed, gone])
    sql(
        p.dsns["stage"],
        "INSERT INTO t SELECT code || 'zZ', 0 FROM t WHERE hashint4(v * 3 + %s)::int8 %% %s = 0",
        [seed, extra],
    )
    _closes(cli, p, _truth(_rows(p.dsns["dev"]), _rows(p.dsns["stage"])), _rows)


ENUM_SOURCE = "CREATE TYPE st AS ENUM ('new', 'open', 'closed', 'archived');"
ENUM_TARGET = """
CREATE TYPE st AS ENUM ('archived', 'closed', 'new', 'open');
ALTER TYPE st ADD VALUE 'spam' BEFORE 'new';
"""
ENUM_TABLE = "CREATE TABLE e (s st, id int, v int NOT NULL, PRIMARY KEY (s, id));"
ENUM_ROWS = """
INSERT INTO e SELECT (ARRAY['new', 'open', 'closed', 'archived'])[1 + g %% 4]::st, g, g
FROM generate_series(1, %s) g;
"""


def _enum_rows(dsn: str) -> list[tuple[str, int, int]]:
    return [(r[0], r[1], r[2]) for r in q(dsn, "SELECT s::text, id, v FROM e ORDER BY 1, 2")]


def test_enum_labels_in_another_order_compare_by_their_text(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """A key ``(status, id)`` whose enum sorts its labels otherwise on the target, which
    also has a label the source lacks (and rows of it)."""
    p = write_project(tmp_path, {"dev": make_db("src"), "stage": make_db("stage")})
    sql(p.dsns["dev"], ENUM_SOURCE)
    sql(p.dsns["stage"], ENUM_TARGET)
    for dsn in p.dsns.values():
        sql(dsn, ENUM_TABLE)
        sql(dsn, ENUM_ROWS, [30000])
    sql(p.dsns["stage"], "UPDATE e SET v = -v WHERE id % 100 = 0")  # 300 differ
    sql(p.dsns["stage"], "DELETE FROM e WHERE id % 1001 = 0")  # 29 only in the source
    sql(p.dsns["stage"], "INSERT INTO e SELECT 'spam', g, g FROM generate_series(1, 40) g")
    _closes(cli, p, (300, 29, 40), _enum_rows)

"""Property: verify reports exactly the rows whose values are not identical, and a sync
makes them identical.

"Identical" is the text form under pinned output settings. The values come from pools of
the kinds that fooled the comparison before: equal but not identical (interval '1 mon' and
'30 days', citext 'Ann' and 'ann', the same range written another way), arrays of another
shape ('{{1,2}}', '{1,2}', '[0:1]={1,2}'), a float array's 0, -0 and NULL, a composite
with a json field (json has no equality) and 1.5 against 1.50 inside it or in a numeric
array, a domain over a domain over interval, box (whose = compares areas), and NULLs.
Top-level numeric, float and jsonb keep their type's equality by design (docs/sync.md,
"Equal or identical") and are not drawn here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgferry.config import load_config
from pgferry.pg.connect import Target
from pgferry.sync import engine
from tests.helpers.sync import ddl_pair

POOLS: dict[str, tuple[str, list[str | None]]] = {
    "iv": ("interval", ["1 mon", "30 days", "1 day", "24 hours", "0", None]),
    "ia": ("int[]", ["{1,2}", "{{1,2}}", "[0:1]={1,2}", "{}", "{1,NULL}", None]),
    "fa": ("float8[]", ["{0}", "{-0}", "{NULL}", "{1.5}", None]),
    "nr": ("numrange", ["[1.5,2)", "[1.50,2)", "empty", "[1,2]", None]),
    "ci": ("citext", ["Ann", "ann", "ANN", None]),
    "tx": ("text", ["a", "A", "", None]),
    "ts": ("timestamptz", ["2026-01-01 00:00+00", "2026-01-01 01:00+01", None]),
    "cp": ("price", ["(1.5,{})", "(1.50,{})", '(1.5,"{""a"": 1}")', "(,)", None]),
    "dd": ("dur", ["1 mon", "30 days", "1 day", "24 hours", None]),
    "na": ("numeric[]", ["{1.5}", "{1.50}", "{NaN}", "{}", None]),
    "bx": ("box", ["(2,2),(0,0)", "(4,1),(0,0)", None]),
}
COLS = list(POOLS)
DDL = (
    "CREATE EXTENSION IF NOT EXISTS citext; CREATE TYPE price AS (amount numeric, meta json);"
    "CREATE DOMAIN dur0 AS interval; CREATE DOMAIN dur AS dur0;"
    "CREATE TABLE v (id int PRIMARY KEY, "
    + ", ".join(f"{c} {t}" for c, (t, _) in POOLS.items())
    + ")"
)
PINNED = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';"
    "SET extra_float_digits = 1"
)

row = st.fixed_dictionaries({c: st.sampled_from(POOLS[c][1]) for c in COLS})
# a target row: missing (None), the source's ("same"), or the source's with one column
# drawn again (column, value): a twin alone in its row is what the comparison must see
change = st.sampled_from(COLS).flatmap(
    lambda c: st.tuples(st.just(c), st.sampled_from(POOLS[c][1]))
)
pair = st.tuples(row, st.one_of(st.none(), st.just("same"), change))


def _fill(c: psycopg.Connection[Any], rows: dict[int, dict[str, str | None]]) -> None:
    c.execute("TRUNCATE v")
    for i, r in rows.items():
        casts = ", ".join(f"%s::{POOLS[k][0]}" for k in COLS)
        c.execute(f"INSERT INTO v VALUES (%s, {casts})", [i, *(r[k] for k in COLS)])  # noqa: S608


def _text(dsn: str) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        c.execute(PINNED)
        cols = ", ".join(f"{k}::text" for k in COLS)
        return {r[0]: r[1:] for r in c.execute(f"SELECT id, {cols} FROM v")}  # noqa: S608


@pytest.fixture
def envs(tmp_path: Path, make_db: Callable[..., str]) -> tuple[Path, str, str]:
    return ddl_pair(tmp_path, make_db, DDL)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pairs=st.lists(pair, min_size=1, max_size=12), mode=st.sampled_from(["incremental", "full"]))
def test_verify_reports_exactly_the_rows_not_identical_and_sync_makes_them_so(
    envs: tuple[Path, str, str], pairs: list[tuple[dict[str, Any], Any]], mode: str
) -> None:
    config, dev, prod = envs
    src = {i: s for i, (s, _) in enumerate(pairs)}
    tgt = {
        i: (s if t == "same" else {**s, t[0]: t[1]})
        for i, (s, t) in enumerate(pairs)
        if t is not None
    }
    with psycopg.connect(dev, autocommit=True) as a, psycopg.connect(prod, autocommit=True) as b:
        _fill(a, src)
        _fill(b, tgt)
    a_text, b_text = _text(dev), _text(prod)
    differing = {i for i in src if i in b_text and a_text[i] != b_text[i]}
    cfg = load_config(config)
    source, target = Target("dev", dev), Target("prod", prod)
    found = engine.run(cfg, source, target, engine.Options(mode="verify")).table("public.v")
    assert (found.differing, found.only_in_source, found.only_in_target) == (
        len(differing),
        len(src) - len(tgt),
        0,
    ), (differing, a_text, b_text)
    res = engine.run(cfg, source, target, engine.Options(mode=mode))  # type: ignore[arg-type]
    assert res.exit_code == 0, res.to_dict()
    t = res.table("public.v")
    assert (t.updated, t.inserted) == (len(differing), len(src) - len(tgt))
    assert _text(prod) == a_text
    after = engine.run(cfg, source, target, engine.Options(mode="verify")).table("public.v")
    assert (after.differing, after.only_in_source, after.only_in_target) == (0, 0, 0)

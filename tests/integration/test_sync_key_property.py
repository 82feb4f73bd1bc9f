"""Property: whatever the key's type, a sync makes the target's rows the source's, and
verify then finds nothing.

Keys come from pools of types that need care when read back into Python: citext (its
equality folds case, and psycopg has no loader for it), an enum, pg_lsn, dates and
timestamps with 'infinity', interval ('1 mon' equals '30 days'), numeric with NaN, and a
composite key of an enum and a citext. Rows are written on both sides from one random
draw: a target row is missing, the source's, the source's with another value, or a
row the source does not have; small chunks make the comparison cut ranges at keys it
read back.
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

KEYS: dict[str, tuple[str, list[str]]] = {
    "ci": ("citext", ["a", "B", "c@x", "Ann", "zed", "Zoe", "m", "Q"]),
    "en": ("mood", ["sad", "ok", "happy"]),
    "ls": ("pg_lsn", ["0/1", "1/0", "FF/10", "0/0", "16/B374D848"]),
    "dt": ("date", ["infinity", "-infinity", "2026-01-01", "1999-12-31", "2026-02-28"]),
    "ts": (
        "timestamptz",
        ["infinity", "-infinity", "2026-01-01 00:00+00", "2026-01-01 00:00:00.5+00"],
    ),
    "iv": ("interval", ["1 day", "1 mon", "2 mons", "1 year", "00:00:01"]),
    "nu": ("numeric", ["NaN", "1", "1.5", "-2", "1e10"]),
}
DDL = (
    "CREATE EXTENSION IF NOT EXISTS citext; CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');"
    + "".join(f"CREATE TABLE k_{n} (k {t} PRIMARY KEY, v int);" for n, (t, _) in KEYS.items())
    + "CREATE TABLE k_pair (m mood, c citext, v int, PRIMARY KEY (m, c));"
)


def _table(name: str) -> st.SearchStrategy[tuple[dict[str, int], dict[str, int]]]:
    """(source rows, target rows) of one table: key text -> v."""
    keys = KEYS[name][1]
    fate = st.sampled_from(["same", "missing", "other", "extra"])
    return st.lists(
        st.tuples(st.sampled_from(keys), fate, st.integers(0, 3)), unique_by=lambda x: x[0]
    ).map(
        lambda rows: (
            {k: v for k, f, v in rows if f != "extra"},
            {k: (v + 1 if f == "other" else v) for k, f, v in rows if f != "missing"},
        )
    )


def _fill(dsn: str, data: dict[str, dict[str, int]], pairs: dict[tuple[str, str], int]) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for name, rows in data.items():
            for k, v in rows.items():
                c.execute(f"INSERT INTO k_{name} VALUES (%s::{KEYS[name][0]}, %s)", [k, v])  # noqa: S608
        for (m, ci), v in pairs.items():
            c.execute("INSERT INTO k_pair VALUES (%s::mood, %s, %s)", [m, ci, v])


def _text(dsn: str) -> list[Any]:
    with psycopg.connect(dsn) as c:
        c.execute("SET TimeZone = 'UTC'; SET IntervalStyle = 'postgres'")
        return [
            c.execute(f"SELECT x::text FROM k_{n} x ORDER BY x::text").fetchall()  # noqa: S608
            for n in [*KEYS, "pair"]
        ]


@pytest.fixture
def envs(tmp_path: Path, make_db: Callable[..., str]) -> tuple[Path, str, str]:
    return ddl_pair(tmp_path, make_db, DDL)


pair_rows = st.dictionaries(
    st.tuples(st.sampled_from(KEYS["en"][1]), st.sampled_from(KEYS["ci"][1])), st.integers(0, 3)
)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tables=st.fixed_dictionaries({n: _table(n) for n in KEYS}),
    pairs=st.tuples(pair_rows, pair_rows),
    mode=st.sampled_from(["incremental", "full"]),
)
def test_a_sync_makes_every_key_type_identical(
    envs: tuple[Path, str, str],
    tables: dict[str, tuple[dict[str, int], dict[str, int]]],
    pairs: tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]],
    mode: str,
) -> None:
    config, dev, prod = envs
    for dsn in (dev, prod):
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("TRUNCATE " + ", ".join(f"k_{n}" for n in [*KEYS, "pair"]))
    _fill(dev, {n: s for n, (s, _) in tables.items()}, pairs[0])
    _fill(prod, {n: t for n, (_, t) in tables.items()}, pairs[1])
    cfg = load_config(config)
    source, target = Target("dev", dev), Target("prod", prod)
    opts: dict[str, Any] = {"chunk_rows": 2, "key_limit": 1}
    res = engine.run(cfg, source, target, engine.Options(mode=mode, **opts))  # type: ignore[arg-type]
    assert res.exit_code == 0, [(t.table, t.error) for t in res.tables]
    assert _text(prod) == _text(dev)
    after = engine.run(cfg, source, target, engine.Options(mode="verify", **opts))
    assert after.exit_code == 0, [
        (t.table, t.differing, t.only_in_source, t.only_in_target) for t in after.tables
    ]

"""Property: random inserts/updates/deletes on both sides, then sync -> verify finds them equal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgferry.config import load_config
from pgferry.pg.connect import Target
from pgferry.sync import engine
from tests.helpers.sync import ddl_pair

DDL = """CREATE TABLE kv (k1 int, k2 text, v text, n numeric, PRIMARY KEY (k1, k2));"""

keys = st.tuples(st.integers(0, 30), st.sampled_from(["a", "b", "ü", "Z"]))
op = st.one_of(
    st.tuples(st.just("put"), keys, st.text(max_size=5), st.integers(-5, 5)),
    st.tuples(st.just("del"), keys, st.just(""), st.just(0)),
)


def apply(c: psycopg.Connection, ops: list[tuple[str, tuple[int, str], str, int]]) -> None:
    for kind, (k1, k2), v, n in ops:
        if kind == "put":
            c.execute(
                "INSERT INTO kv VALUES (%s, %s, %s, %s) ON CONFLICT (k1, k2) DO UPDATE"
                " SET v = excluded.v, n = excluded.n",
                [k1, k2, v.replace("\x00", ""), n],
            )
        else:
            c.execute("DELETE FROM kv WHERE k1 = %s AND k2 = %s", [k1, k2])


@pytest.fixture
def envs(tmp_path: Path, make_db: Callable[..., str]) -> tuple[Path, str, str]:
    return ddl_pair(tmp_path, make_db, DDL)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    src_ops=st.lists(op, max_size=25),
    tgt_ops=st.lists(op, max_size=25),
    mode=st.sampled_from(["incremental", "full"]),
    batch=st.integers(1, 8),
)
def test_sync_then_verify_is_identical(
    envs: tuple[Path, str, str],
    src_ops: list[tuple[str, tuple[int, str], str, int]],
    tgt_ops: list[tuple[str, tuple[int, str], str, int]],
    mode: str,
    batch: int,
) -> None:
    config, dev, prod = envs
    with psycopg.connect(dev, autocommit=True) as a, psycopg.connect(prod, autocommit=True) as b:
        apply(a, src_ops)
        apply(b, tgt_ops)
    cfg = load_config(config)
    src, tgt = Target("dev", dev), Target("prod", prod)
    res = engine.run(cfg, src, tgt, engine.Options(mode=mode, batch_size=batch))  # type: ignore[arg-type]
    assert res.exit_code == 0, res.to_dict()
    check = engine.run(cfg, src, tgt, engine.Options(mode="verify"))
    kv = check.table("public.kv")
    assert (kv.differing, kv.only_in_source, kv.only_in_target) == (0, 0, 0)
    with psycopg.connect(dev) as a, psycopg.connect(prod) as b:
        q = 'SELECT * FROM kv ORDER BY k1, k2 COLLATE "C"'
        assert a.execute(q).fetchall() == b.execute(q).fetchall()

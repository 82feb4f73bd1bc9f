"""Source rows that share a value of the key a sync matches rows by are refused, not merged.

Where the target's primary key differs from the source's (prod migrated to a narrower
key, or dev to a wider one), a sync matches rows by the target's; a configured
``[sync.tables] key`` likewise. Nothing on the source keeps such a key unique. Found and
fixed here: with source key ``(tenant, id)`` and target key ``(id)``, two source rows of
``id = 5`` were one target row; the sync wrote one of them over the target's row,
reported the table ``ok`` and exited 0, and the next sync failed with "ON CONFLICT DO
UPDATE command cannot affect row a second time". Now the source is asked, before any
write, for rows sharing a key value; a table that has them fails with one sentence
naming them, and nothing is written to it.

Invariant: a sync either makes the target equal to the source (exit 0), or, where the
source holds rows sharing a key, changes nothing in that table (exit 3) and names them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import Result, q, run_json, sql, write_project

SOURCE = "CREATE TABLE m (tenant int NOT NULL, id int NOT NULL, v int, PRIMARY KEY (tenant, id));"
TARGET = "CREATE TABLE m (tenant int NOT NULL, id int PRIMARY KEY, v int);"


def _rows(dsn: str) -> list[tuple[int, int, int]]:
    return [(r[0], r[1], r[2]) for r in q(dsn, "SELECT tenant, id, v FROM m ORDER BY id, tenant")]


def test_a_narrower_target_key_shared_by_source_rows_stops_the_table(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(tmp_path, {"dev": make_db("src"), "prod": make_db("prod")})
    sql(p.dsns["dev"], SOURCE)
    sql(p.dsns["prod"], TARGET)
    sql(p.dsns["dev"], "INSERT INTO m SELECT g % 3, g, g FROM generate_series(1, 500) g")
    sql(p.dsns["prod"], "INSERT INTO m SELECT g % 3, g, g FROM generate_series(1, 500) g")
    sql(p.dsns["dev"], "INSERT INTO m VALUES (7, 5, 555), (7, 6, 666), (8, 6, 6666)")
    sql(p.dsns["dev"], "UPDATE m SET v = -v WHERE id = 100")
    before = _rows(p.dsns["prod"])

    r = run_json(cli, p, "sync", "dev", "prod", "--yes", "--dry-run")
    (t,) = r.json["tables"]  # the dry run names them too (the console: "stopped")
    assert t["status"] == "failed" and "id=6 (3 rows)" in t["error"], r.out
    r = run_json(cli, p, "sync", "dev", "prod", "--yes")
    assert r.code == 3, r.out + r.err
    (t,) = r.json["tables"]
    assert t["status"] == "failed"
    assert "id=6 (3 rows); id=5 (2 rows)" in t["error"], t["error"]
    assert "the source's primary key is (tenant, id)" in t["error"]
    assert _rows(p.dsns["prod"]) == before

    # the source's extra rows go (or the keys are made to agree): the sync goes ahead
    sql(p.dsns["dev"], "DELETE FROM m WHERE tenant IN (7, 8)")
    r = run_json(cli, p, "sync", "dev", "prod", "--yes")
    assert r.code == 0, r.out + r.err
    assert _rows(p.dsns["prod"]) == _rows(p.dsns["dev"])


def test_a_configured_key_the_source_does_not_keep_unique(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    extra = '[sync.tables."public.u"]\nkey = ["email"]\n'
    p = write_project(tmp_path, {"dev": make_db("src"), "stage": make_db("stage")}, extra=extra)
    sql(p.dsns["dev"], "CREATE TABLE u (id int PRIMARY KEY, email text NOT NULL)")
    sql(p.dsns["stage"], "CREATE TABLE u (id int PRIMARY KEY, email text NOT NULL UNIQUE)")
    sql(p.dsns["dev"], "INSERT INTO u VALUES (1, 'a@x'), (2, 'b@x'), (3, 'a@x')")
    r = run_json(cli, p, "sync", "dev", "stage")
    assert r.code == 3, r.out + r.err
    (t,) = r.json["tables"]
    assert "email=a@x (2 rows)" in t["error"], t["error"]
    assert q(p.dsns["stage"], "SELECT count(*) FROM u") == [(0,)]


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    source=st.sets(st.tuples(st.integers(0, 2), st.integers(1, 12)), max_size=20),
    target=st.sets(st.integers(1, 12), max_size=12),
)
def test_any_rows_sync_whole_or_not_at_all(
    tmp_path_factory: pytest.TempPathFactory,
    make_db: Callable[..., str],
    cli: Callable[..., Result],
    source: set[tuple[int, int]],
    target: set[int],
) -> None:
    p = write_project(
        tmp_path_factory.mktemp("shared"), {"dev": make_db("src"), "stage": make_db("stage")}
    )
    sql(p.dsns["dev"], SOURCE)
    sql(p.dsns["stage"], TARGET)
    for tenant, i in source:
        sql(p.dsns["dev"], "INSERT INTO m VALUES (%s, %s, %s)", [tenant, i, 10 * i + tenant])
    for i in target:
        sql(p.dsns["stage"], "INSERT INTO m VALUES (9, %s, 0)", [i])
    before = _rows(p.dsns["stage"])
    r = run_json(cli, p, "sync", "dev", "stage")
    ids = [i for _, i in source]
    if len(ids) == len(set(ids)):
        assert r.code == 0, r.out + r.err
        assert _rows(p.dsns["stage"]) == _rows(p.dsns["dev"])
    else:
        assert r.code == 3, r.out + r.err
        assert "share a value of the key" in r.json["tables"][0]["error"]
        assert _rows(p.dsns["stage"]) == before

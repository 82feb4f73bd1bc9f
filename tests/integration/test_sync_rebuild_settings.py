"""The sessions that build set-aside indexes back run with the settings pgferry chose.

The costliest build (a GIN index here) may start ``--jobs`` - 1 parallel workers, the
others none; every build runs with ``[sync] maintenance_work_mem`` when it is set, and
by default a btree build with more than the server's (up to 256MB), a GIN build with
the server's. Each index calls :data:`BUILT_WITH`, which refuses to index a row unless
its session has the settings the test expects: a build run otherwise fails, and the
sync says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.helpers import Result, q, run_json, sql, write_project
from tests.helpers.sync import constraints, definitions, recorded, rows

BUILT_WITH = """
CREATE FUNCTION built_with(x anyelement, workers int, memory bigint) RETURNS anyelement
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF current_setting('max_parallel_maintenance_workers')::int <> workers
       OR pg_size_bytes(current_setting('maintenance_work_mem')) <> memory THEN
        RAISE EXCEPTION 'built with max_parallel_maintenance_workers % and maintenance_work_mem %',
            current_setting('max_parallel_maintenance_workers'),
            current_setting('maintenance_work_mem');
    END IF;
    RETURN x;
END $$;
CREATE TABLE docs (id int PRIMARY KEY, meta jsonb NOT NULL, n int NOT NULL);
"""


def indexes(gin: int, btree: int) -> str:
    """The indexes, each checking its build's settings (bytes of maintenance_work_mem)."""
    return f"""
SET maintenance_work_mem = '{gin // 1024}kB';
SET max_parallel_maintenance_workers = 1;
CREATE INDEX docs_meta_idx ON docs USING gin (built_with(meta, 1, {gin}) jsonb_path_ops);
SET maintenance_work_mem = '{btree // 1024}kB';
SET max_parallel_maintenance_workers = 0;
CREATE INDEX docs_n_idx ON docs (built_with(n, 0, {btree}));
"""


MB96 = 96 << 20
DATA = """
INSERT INTO docs SELECT g, jsonb_build_object('k', g % 7, 't', 'title ' || g), g % 100
FROM generate_series(1, 20000) g;
"""


def test_the_costliest_build_gets_the_workers_and_every_build_the_memory(
    tmp_path: Any, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("rdev"), "stage": make_db("rstage")},
        protected=(),
        extra='[sync]\njobs = 2\nmaintenance_work_mem = "96MB"\n',
    )
    sql(p.dsns["dev"], BUILT_WITH + DATA + indexes(MB96, MB96))
    sql(p.dsns["stage"], BUILT_WITH + indexes(MB96, MB96))
    r = run_json(cli, p, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 0, r.err + r.out
    (table,) = r.json["tables"]
    assert sorted(table["rebuilt_indexes"]) == ["docs_meta_idx", "docs_n_idx", "docs_pkey"]
    # the indexes are the source's, the rows too
    assert definitions(p.dsns["stage"]) == definitions(p.dsns["dev"])
    assert constraints(p.dsns["stage"]) == constraints(p.dsns["dev"])
    assert recorded(p.dsns["stage"]) == []
    assert rows(p.dsns["dev"], "docs") == rows(p.dsns["stage"], "docs")


def test_by_default_btree_builds_get_more_memory_and_gin_builds_the_servers(
    tmp_path: Any, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("rdev"), "stage": make_db("rstage")},
        protected=(),
        extra="[sync]\njobs = 2\n",
    )
    server, cache = q(
        p.dsns["stage"],
        "SELECT pg_size_bytes(current_setting('maintenance_work_mem')),"
        " pg_size_bytes(current_setting('effective_cache_size'))",
    )[0]
    # up to 256MB, an eighth of effective_cache_size over the 2 builds at once
    btree = max(server, min(256 << 20, cache // 16))
    sql(p.dsns["dev"], BUILT_WITH + DATA + indexes(server, btree))
    sql(p.dsns["stage"], BUILT_WITH + indexes(server, btree))
    r = run_json(cli, p, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 0, r.err + r.out
    assert definitions(p.dsns["stage"]) == definitions(p.dsns["dev"])
    assert rows(p.dsns["dev"], "docs") == rows(p.dsns["stage"], "docs")


def test_a_build_with_other_settings_would_fail(
    tmp_path: Any, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """The check above checks: without the memory setting, the builds refuse the rows."""
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("rdev"), "stage": make_db("rstage")},
        protected=(),
        extra="[sync]\njobs = 2\n",
    )
    sql(p.dsns["dev"], BUILT_WITH + DATA + indexes(MB96, MB96))
    sql(p.dsns["stage"], BUILT_WITH + indexes(MB96, MB96))
    r = run_json(cli, p, "sync", "dev", "stage", "--mode", "full")
    assert r.code != 0
    (table,) = r.json["tables"]
    assert table["status"] == "failed"
    assert "built with max_parallel_maintenance_workers" in table["error"]
    assert "docs" in " ".join(recorded(p.dsns["stage"]))

"""The sessions that build set-aside indexes back run with the settings pgferry chose.

The costliest build (a GIN index here) may start ``--jobs`` - 1 parallel workers, the
others none, and every one runs with ``[sync] maintenance_work_mem`` when it is set.
Each index calls :data:`BUILT_WITH`, which refuses to index a row unless its session
has the settings the test expects: a build run otherwise fails, and the sync says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.helpers import Result, run_json, sql, write_project
from tests.helpers.sync import rows
from tests.integration.test_sync_set_aside import constraints, definitions, recorded

BUILT_WITH = """
CREATE FUNCTION built_with(x anyelement, workers int, memory text) RETURNS anyelement
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF current_setting('max_parallel_maintenance_workers')::int <> workers
       OR current_setting('maintenance_work_mem') <> memory THEN
        RAISE EXCEPTION 'built with max_parallel_maintenance_workers % and maintenance_work_mem %',
            current_setting('max_parallel_maintenance_workers'),
            current_setting('maintenance_work_mem');
    END IF;
    RETURN x;
END $$;
CREATE TABLE docs (id int PRIMARY KEY, meta jsonb NOT NULL, n int NOT NULL);
"""
INDEXES = """
SET maintenance_work_mem = '96MB';
SET max_parallel_maintenance_workers = 1;
CREATE INDEX docs_meta_idx ON docs USING gin (built_with(meta, 1, '96MB') jsonb_path_ops);
SET max_parallel_maintenance_workers = 0;
CREATE INDEX docs_n_idx ON docs (built_with(n, 0, '96MB'));
"""
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
    sql(p.dsns["dev"], BUILT_WITH + DATA + INDEXES)
    sql(p.dsns["stage"], BUILT_WITH + INDEXES)
    r = run_json(cli, p, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 0, r.err + r.out
    (table,) = r.json["tables"]
    assert sorted(table["rebuilt_indexes"]) == ["docs_meta_idx", "docs_n_idx", "docs_pkey"]
    # the indexes are the source's, the rows too
    assert definitions(p.dsns["stage"]) == definitions(p.dsns["dev"])
    assert constraints(p.dsns["stage"]) == constraints(p.dsns["dev"])
    assert recorded(p.dsns["stage"]) == []
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
    sql(p.dsns["dev"], BUILT_WITH + DATA + INDEXES)
    sql(p.dsns["stage"], BUILT_WITH + INDEXES)
    r = run_json(cli, p, "sync", "dev", "stage", "--mode", "full")
    assert r.code != 0
    (table,) = r.json["tables"]
    assert table["status"] == "failed"
    assert "built with max_parallel_maintenance_workers" in table["error"]
    assert "docs" in " ".join(recorded(p.dsns["stage"]))

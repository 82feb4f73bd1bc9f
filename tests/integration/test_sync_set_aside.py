"""Empty target tables load with their secondary indexes set aside, rebuilt after (issue 16).

Never on a protected target, never on a table that holds rows; a crash between the
drop and the rebuild leaves the definitions in ``pgferry.set_aside``, and the next
sync rebuilds them. Whether an index was set aside shows in its OID: a rebuilt
index is a new relation.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.helpers import Project, Result, sql, write_project
from tests.helpers.sync import (
    constraints,
    definitions,
    indexes,
    recorded,
    rows,
    slow_len,
    wait_for_backend,
)

SCHEMA = """
CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE items (
    id bigint PRIMARY KEY, parent_id int REFERENCES parent (id), code text NOT NULL,
    qty int, note text, tags jsonb
);
CREATE INDEX items_parent_idx ON items (parent_id);
CREATE UNIQUE INDEX items_code_key ON items (code);
CREATE INDEX items_note_lower_idx ON items (lower(note)) WHERE qty > 2;
CREATE INDEX items_tags_idx ON items USING gin (tags);
ALTER TABLE items ADD CONSTRAINT items_code_qty UNIQUE (code, qty);
CREATE TABLE part (id int NOT NULL, day date NOT NULL, v text, PRIMARY KEY (id, day))
    PARTITION BY RANGE (day);
CREATE TABLE part_a PARTITION OF part FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
CREATE TABLE part_b PARTITION OF part FOR VALUES FROM ('2024-07-01') TO ('2025-01-01');
CREATE INDEX part_v_idx ON part (v);
"""
DATA = """
INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 50) g;
INSERT INTO items SELECT g, g % 50 + 1, 'c' || g, g % 7, 'Note ' || g,
    jsonb_build_object('k', g % 5) FROM generate_series(1, 3000) g;
INSERT INTO part SELECT g, date '2024-01-01' + g % 360, 'v' || g FROM generate_series(1, 2000) g;
"""
TABLES = ("parent", "items", "part")
SET_ASIDE = {
    "items_pkey",
    "items_parent_idx",
    "items_code_key",
    "items_note_lower_idx",
    "items_tags_idx",
    "items_code_qty",
    "part_a_v_idx",
    "part_b_v_idx",
    "part_a_pkey",
    "part_b_pkey",
}


@pytest.fixture
def proj(tmp_path: Any, make_db: Callable[..., str]) -> Project:
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("sdev"), "stage": make_db("sstage"), "prod": make_db("sprod")},
        protected=("prod",),
    )
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    sql(p.dsns["dev"], DATA)
    return p


def run(cli: Callable[..., Result], p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), "--json", *args)


def test_an_empty_table_loads_without_its_indexes_and_gets_them_back(
    proj: Project, cli: Callable[..., Result]
) -> None:
    before = indexes(proj.dsns["stage"])
    r = run(cli, proj, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    rebuilt = {n for t in by.values() for n in t["rebuilt_indexes"]}
    assert rebuilt == SET_ASIDE
    after = indexes(proj.dsns["stage"])
    # every index is back as it was defined (names included), each a new relation
    assert definitions(proj.dsns["stage"]) == definitions(proj.dsns["dev"])
    assert constraints(proj.dsns["stage"]) == constraints(proj.dsns["dev"])
    changed = {n for n in after if after[n][0] != before[n][0]}
    assert changed == SET_ASIDE | {"part_v_idx", "part_pkey"}
    # the primary key a foreign key references was never dropped; items' and the
    # partitioned table's were, and are back as their constraints
    assert before["parent_pkey"][0] == after["parent_pkey"][0]
    assert "items_pkey PRIMARY KEY (id)" in constraints(proj.dsns["stage"])
    assert "part_pkey PRIMARY KEY (id, day)" in constraints(proj.dsns["stage"])
    assert recorded(proj.dsns["stage"]) == []
    for t in TABLES:
        assert rows(proj.dsns["dev"], t) == rows(proj.dsns["stage"], t)
    assert run(cli, proj, "verify", "dev", "stage").code == 0
    # the plan says which lock this takes
    r = run(cli, proj, "sync", "dev", "stage", "--dry-run")
    plan = {t["table"]: t for t in r.json["options"]["plan"]["tables"]}
    assert plan["public.items"]["defer_indexes"] is True
    assert any("rebuilt" in lock for lock in plan["public.items"]["locks"])


def test_never_on_a_protected_target(proj: Project, cli: Callable[..., Result]) -> None:
    before = indexes(proj.dsns["prod"])
    r = run(cli, proj, "sync", "dev", "prod", "--mode", "full", "--yes")
    assert r.code == 0, r.err + r.out
    assert all(t["rebuilt_indexes"] == [] for t in r.json["tables"])
    assert indexes(proj.dsns["prod"]) == before  # not one index was dropped
    assert recorded(proj.dsns["prod"]) == []
    for t in TABLES:
        assert rows(proj.dsns["dev"], t) == rows(proj.dsns["prod"], t)


def test_never_on_a_table_that_has_rows(proj: Project, cli: Callable[..., Result]) -> None:
    sql(
        proj.dsns["stage"],
        "INSERT INTO parent VALUES (999, 'stray');"
        "INSERT INTO items (id, code) VALUES (99999, 'stray')",
    )
    before = indexes(proj.dsns["stage"])
    r = run(cli, proj, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.items"]["rebuilt_indexes"] == [] == by["public.parent"]["rebuilt_indexes"]
    after = indexes(proj.dsns["stage"])
    assert all(after[n] == before[n] for n in before if n.startswith(("items", "parent")))
    # the partitioned table was empty: its index was set aside and rebuilt
    assert after["part_a_v_idx"][0] != before["part_a_v_idx"][0]
    for t in TABLES:
        assert rows(proj.dsns["dev"], t) == rows(proj.dsns["stage"], t)


def test_defer_indexes_false_keeps_them(
    tmp_path: Any, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(
        tmp_path / "k",
        {"dev": make_db("kdev"), "stage": make_db("kstage")},
        protected=(),
        extra="[sync]\ndefer_indexes = false\n",
    )
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    sql(p.dsns["dev"], DATA)
    before = indexes(p.dsns["stage"])
    r = run(cli, p, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 0, r.err + r.out
    assert indexes(p.dsns["stage"]) == before


def test_a_row_that_fails_the_fast_path_loads_with_every_index_in_place(
    proj: Project, cli: Callable[..., Result]
) -> None:
    # a check only the target has: COPY fails on one row, the batches isolate it
    sql(proj.dsns["stage"], "ALTER TABLE items ADD CONSTRAINT no_13 CHECK (id <> 13)")
    before = indexes(proj.dsns["stage"])
    r = run(cli, proj, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 1, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.items"]["dead_lettered"] == 1
    assert by["public.items"]["rebuilt_indexes"] == []
    after = indexes(proj.dsns["stage"])
    assert all(after[n] == before[n] for n in before if n.startswith("items"))
    assert "items" not in " ".join(recorded(proj.dsns["stage"]))


def test_a_unique_index_the_loaded_rows_may_not_hold_stays(
    tmp_path: Any,
    make_db: Callable[..., str],
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # items.code is masked to one value, and labels.name is citext on the target only:
    # the source's unique indexes say nothing of the rows the load writes there, so they
    # stay in place and the load meets the duplicates (dead letters) instead of loading
    # them, committing and failing to rebuild the index (which left duplicates in the
    # table and its uniqueness gone, exit 3)
    monkeypatch.setenv("PGFERRY_MASK_KEY", "k" * 32)
    p = write_project(
        tmp_path / "m",
        {"dev": make_db("udev"), "stage": make_db("ustage")},
        protected=(),
        extra='[sync.mask]\n"public.items.code" = { rule = "fixed:x", targets = ["stage"] }\n',
    )
    labels = "CREATE TABLE labels (id int PRIMARY KEY, name text NOT NULL, n int);"
    labels += "CREATE UNIQUE INDEX labels_name_key ON labels (name);"
    labels += "CREATE INDEX labels_n_idx ON labels (n);"
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA + labels)
    sql(p.dsns["stage"], "CREATE EXTENSION IF NOT EXISTS citext")
    sql(p.dsns["stage"], "ALTER TABLE labels ALTER name TYPE citext")
    sql(p.dsns["dev"], DATA)
    # (300 items are enough: each one the index refuses is isolated as a dead letter)
    sql(p.dsns["dev"], "DELETE FROM items WHERE id > 300")
    sql(p.dsns["dev"], "INSERT INTO labels VALUES (1, 'a', 1), (2, 'A', 2), (3, 'b', 3)")
    before = indexes(p.dsns["stage"])
    r = run(
        cli,
        p,
        "sync",
        "dev",
        "stage",
        "--mode",
        "full",
        "--tables",
        "public.parent,public.items,public.labels",
    )
    assert r.code == 1, r.err + r.out  # dead letters and the type finding, not a failure
    by = {t["table"]: t for t in r.json["tables"]}
    assert [by[t]["status"] for t in ("public.items", "public.labels")].count("failed") == 0
    assert (by["public.items"]["dead_lettered"], by["public.labels"]["dead_lettered"]) == (299, 1)
    after = indexes(p.dsns["stage"])
    for n in ("items_code_key", "items_code_qty", "labels_name_key"):
        assert after[n] == before[n]  # never dropped
    assert recorded(p.dsns["stage"]) == []
    with psycopg.connect(p.dsns["stage"]) as c:
        assert c.execute("SELECT count(*), count(DISTINCT code) FROM items").fetchone() == (1, 1)
        assert c.execute("SELECT count(*) FROM labels").fetchone() == (2,)


def test_sigkill_between_drop_and_rebuild_leaves_the_definitions_and_the_rerun_rebuilds(
    proj: Project, pg_admin_dsn: str
) -> None:
    stage = proj.dsns["stage"]
    # an index that takes seconds to build (a slow function in its expression), built
    # while the function is fast; the sync's build is the slow one
    index = "CREATE INDEX items_slow_idx ON items (slow_len(code))"
    slow_len(stage, 0, index)
    slow_len(proj.dsns["dev"], 0, index)
    slow_len(stage, 0.003)
    want = definitions(proj.dsns["dev"])
    proc = proj.popen("sync", "dev", "stage", "--mode", "full", "--jobs", "1")
    wait_for_backend(stage, proc, "CREATE INDEX items_slow_idx")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:  # the build dies with it
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name LIKE 'pgferry%'"
        )
    deadline = time.monotonic() + 30
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        while (
            c.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'pgferry%'"
            ).fetchone()
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
    # the load committed (the rows are the source's), the index is missing, its definition
    # is recorded where the next sync finds it
    assert rows(proj.dsns["dev"], "items") == rows(stage, "items")
    assert "items_slow_idx" not in indexes(stage)
    assert "public.items_slow_idx" in recorded(stage)
    # and the table has no primary key: the rerun plans with the one recorded (else it
    # would refuse an incremental sync of a table without a key)
    assert not [c for c in constraints(stage) if c.startswith("items_pkey")]
    slow_len(stage, 0)  # the rerun's build need not be slow
    r = proj.run("sync", "dev", "stage", "--json")
    assert r.code == 0, r.err + r.out
    assert any(
        "rebuilt index(es) an interrupted sync had set aside" in w for w in r.json["warnings"]
    )
    assert definitions(stage) == want
    assert constraints(stage) == constraints(proj.dsns["dev"])
    assert recorded(stage) == []
    assert proj.run("verify", "dev", "stage").code == 0

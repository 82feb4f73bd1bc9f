"""A partitioned table's primary key and unique constraints, set aside for the load.

As ``pg_dump`` restores them: the parent's constraint ``ALTER TABLE ONLY`` (an invalid
index), each partition's index built (in parallel) and made its constraint, attached;
the names are the ones they had. Never when a foreign key references the key, on a
sub-partitioned tree, on a protected target; a crash leaves records the next run
rebuilds from (planning with the missing key meanwhile).
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
from tests.helpers.sync import recorded, rows, slow_len, wait_for_backend

SCHEMA = """
CREATE TABLE part (id int NOT NULL, day date, v text, n int,
    PRIMARY KEY (id, day), CONSTRAINT part_v_day UNIQUE (v, day)) PARTITION BY RANGE (day);
CREATE TABLE part_a PARTITION OF part FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
CREATE TABLE part_b PARTITION OF part FOR VALUES FROM ('2024-07-01') TO ('2025-01-01');
ALTER TABLE part_b RENAME CONSTRAINT part_b_pkey TO part_b_own_pk;
CREATE INDEX part_n_idx ON part (n);
CREATE TABLE sub (id int, k int, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
CREATE TABLE sub_1 PARTITION OF sub FOR VALUES IN (1) PARTITION BY HASH (id);
CREATE TABLE sub_1_0 PARTITION OF sub_1 FOR VALUES WITH (MODULUS 1, REMAINDER 0);
"""
DATA = """
INSERT INTO part SELECT g, date '2024-01-01' + g % 360, 'v' || g, g % 9
    FROM generate_series(1, 2000) g;
INSERT INTO sub SELECT g, 1 FROM generate_series(1, 100) g;
"""
TABLES = ("part", "sub")
#: a foreign key that references the partitioned key (test_a_referenced_key_stays)
REFERENCED = (
    "CREATE TABLE refs (id int PRIMARY KEY, pid int, pday date,"
    " FOREIGN KEY (pid, pday) REFERENCES part (id, day));"
)

CONSTRAINTS = """
SELECT c.conname, c.contype::text, c.conrelid::regclass::text, c.conindid::regclass::text,
       coalesce(p.conname, ''), c.conislocal, c.coninhcount, pg_get_constraintdef(c.oid)
FROM pg_constraint c LEFT JOIN pg_constraint p ON p.oid = c.conparentid
WHERE c.connamespace = 'public'::regnamespace
ORDER BY 3, 1
"""
INDEXES = """
SELECT ic.relname, ic.oid::int, pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisprimary,
       coalesce((SELECT h.inhparent::regclass::text FROM pg_inherits h
                 WHERE h.inhrelid = i.indexrelid), '')
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE ic.relnamespace = 'public'::regnamespace
"""
NOT_NULL = """
SELECT attrelid::regclass::text, attname, attnotnull FROM pg_attribute
WHERE attrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace
                   AND relkind IN ('r', 'p')) AND attnum > 0 AND NOT attisdropped
ORDER BY 1, 2
"""


def catalog(dsn: str) -> dict[str, Any]:
    """Constraints (with their parents and inheritance), indexes, NOT NULL columns.

    A partition's NOT NULL constraint (PostgreSQL 18 keeps them in pg_constraint) that its
    parent's passes down shows with its inheritance count but not whether it is also
    declared locally: adding a partition's primary key ``USING INDEX`` declares its
    columns NOT NULL there (PostgreSQL 18; no SQL undoes it), which decides nothing
    while the parent's are there. Nor ``connoinherit`` (a partition's key restored by
    ``pg_restore`` differs there too; a key constraint is not inherited either way).
    """
    with psycopg.connect(dsn) as c:
        cons = [
            (*r[:5], None if r[1] == "n" and r[6] > 0 else r[5], *r[6:])
            for r in c.execute(CONSTRAINTS)
        ]
        idx = {r[0]: (r[2], r[3], r[4], r[5]) for r in c.execute(INDEXES)}
        notnull = list(c.execute(NOT_NULL))
    return {"constraints": cons, "indexes": idx, "not_null": notnull}


def oids(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as c:
        return {r[0]: r[1] for r in c.execute(INDEXES)}


@pytest.fixture
def proj(tmp_path: Any, make_db: Callable[..., str]) -> Project:
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("pdev"), "stage": make_db("pstage"), "prod": make_db("pprod")},
        protected=("prod",),
    )
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    sql(p.dsns["dev"], DATA)
    return p


def run(cli: Callable[..., Result], p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), "--json", *args)


def same_after(dev: str, stage: str, statements: str) -> None:
    """The same DDL on both sides leaves the same catalog (the keys behave as the source's)."""
    sql(dev, statements)
    sql(stage, statements)
    assert catalog(stage) == catalog(dev)


def kill(proc: Any, admin: str) -> None:
    """SIGKILL pgferry, and end its sessions (a build or a lock wait outlives its client)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
            "application_name LIKE 'pgferry%'"
        )
        deadline = time.monotonic() + 30
        while (
            c.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'pgferry%'"
            ).fetchone()
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)


def test_a_partitioned_key_and_unique_constraint_are_set_aside_and_come_back_as_they_were(
    proj: Project, cli: Callable[..., Result]
) -> None:
    dev, stage = proj.dsns["dev"], proj.dsns["stage"]
    before = oids(stage)
    r = run(cli, proj, "sync", "dev", "stage", "--mode", "full", "--jobs", "2")
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert set(by["public.part"]["rebuilt_indexes"]) == {
        "part_a_pkey",
        "part_b_own_pk",
        "part_a_v_day_key",
        "part_b_v_day_key",
        "part_a_n_idx",
        "part_b_n_idx",
    }
    after = oids(stage)
    assert {n for n in after if after[n] != before[n]} == {
        "part_pkey",
        "part_v_day",
        "part_n_idx",
        *by["public.part"]["rebuilt_indexes"],
    }
    # a sub-partitioned tree keeps its key
    assert by["public.sub"]["rebuilt_indexes"] == []
    assert all(after[n] == before[n] for n in after if n.startswith("sub"))
    # names, definitions, validity, parents, inheritance: the source's
    assert catalog(stage) == catalog(dev)
    assert recorded(stage) == []
    for t in TABLES:
        assert rows(dev, t) == rows(stage, t)
    with psycopg.connect(stage) as c:
        for bad in ("(1, '2024-01-02', 'x', 0)", "(NULL, '2024-01-02', 'y', 0)"):
            with pytest.raises(psycopg.errors.IntegrityError):  # duplicate key, NULL key
                c.execute(f"INSERT INTO part VALUES {bad}")  # noqa: S608 - test literals
            c.rollback()
    assert run(cli, proj, "verify", "dev", "stage").code == 0
    # and they behave as the source's: detach, attach, drop
    same_after(dev, stage, "ALTER TABLE part DETACH PARTITION part_b")
    same_after(
        dev,
        stage,
        "ALTER TABLE part ATTACH PARTITION part_b FOR VALUES FROM ('2024-07-01') TO ('2025-01-01')",
    )
    same_after(dev, stage, "ALTER TABLE part DROP CONSTRAINT part_pkey")
    same_after(dev, stage, "ALTER TABLE part DROP CONSTRAINT part_v_day")


def test_a_referenced_key_stays(proj: Project, cli: Callable[..., Result]) -> None:
    for dsn in proj.dsns.values():
        sql(dsn, REFERENCED)
    before = oids(proj.dsns["stage"])
    r = run(cli, proj, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 0, r.err + r.out
    after = oids(proj.dsns["stage"])
    # the key a foreign key references and its partitions' were never dropped; the unique
    # constraint nothing references was
    assert all(after[n] == before[n] for n in ("part_pkey", "part_a_pkey", "part_b_own_pk"))
    assert after["part_v_day"] != before["part_v_day"]
    assert catalog(proj.dsns["stage"]) == catalog(proj.dsns["dev"])
    assert rows(proj.dsns["dev"], "part") == rows(proj.dsns["stage"], "part")


def test_never_on_a_protected_target(proj: Project, cli: Callable[..., Result]) -> None:
    before = oids(proj.dsns["prod"])
    r = run(cli, proj, "sync", "dev", "prod", "--mode", "full", "--yes")
    assert r.code == 0, r.err + r.out
    assert all(t["rebuilt_indexes"] == [] for t in r.json["tables"])
    assert oids(proj.dsns["prod"]) == before
    assert recorded(proj.dsns["prod"]) == []
    assert rows(proj.dsns["dev"], "part") == rows(proj.dsns["prod"], "part")


def test_sigkill_while_the_partitioned_key_is_missing_and_the_rerun_rebuilds_it(
    proj: Project, pg_admin_dsn: str
) -> None:
    dev, stage = proj.dsns["dev"], proj.dsns["stage"]
    # a partitioned index whose partitions take seconds each (a slow function, built
    # first: the costliest); while it builds, a reader of the table starts, for whom the
    # guard's ADD CONSTRAINT waits once every build is done (and committed, by the jobs)
    # (built while the function is fast: the sync's builds are the slow ones)
    index = "CREATE INDEX part_slow_idx ON part (slow_len(v))"
    slow_len(stage, 0, index)
    slow_len(dev, 0, index)
    slow_len(stage, 0.003)
    want = catalog(dev)
    proc = proj.popen("sync", "dev", "stage", "--mode", "full", "--jobs", "2")
    wait_for_backend(stage, proc, "CREATE INDEX part_._slow")
    reader = psycopg.connect(stage)
    try:
        reader.execute("SELECT count(*) FROM part")
        wait_for_backend(stage, proc, "ADD CONSTRAINT")
        kill(proc, pg_admin_dsn)
    finally:
        reader.close()
    assert rows(dev, "part") == rows(stage, "part")
    got = catalog(stage)
    # the parent's key is missing (the guard's transaction died), the partitions' indexes
    # are there without their constraints; every step is recorded
    assert not [c for c in got["constraints"] if c[0] in ("part_pkey", "part_a_pkey")]
    assert {"part_a_pkey", "part_b_own_pk", "part_a_slow_len_idx"} <= set(got["indexes"])
    assert {"public.part_pkey", "public.part_a_pkey", "public.part_b_own_pk"} <= set(
        recorded(stage)
    )
    # the rerun (incremental: it needs the key) plans with the source's and completes it
    # first, building nothing again (so it warns of no index rebuilt)
    r = proj.run("sync", "dev", "stage", "--json")
    assert r.code == 0, r.err + r.out
    assert catalog(stage) == want
    assert recorded(stage) == []
    assert proj.run("verify", "dev", "stage").code == 0


def test_sigkill_during_the_load_leaves_records_the_rerun_finds_done(
    proj: Project, pg_admin_dsn: str
) -> None:
    dev, stage = proj.dsns["dev"], proj.dsns["stage"]
    # a check that takes a millisecond a row: the load runs for seconds, its key dropped
    # and every step of the rebuild recorded (and committed)
    # (added while the function is fast: the sync's load is the slow one)
    check = "ALTER TABLE part ADD CONSTRAINT part_slow CHECK (slow_len(n::text) >= 0)"
    slow_len(stage, 0, check)
    slow_len(dev, 0, check)
    slow_len(stage, 0.001)
    want = catalog(dev)
    proc = proj.popen("sync", "dev", "stage", "--mode", "full", "--tables", "public.part")
    wait_for_backend(stage, proc, "^COPY")
    time.sleep(0.3)
    kill(proc, pg_admin_dsn)
    assert {"public.part_pkey", "public.part_a_pkey", "public.part_b_own_pk"} <= set(
        recorded(stage)
    )
    assert catalog(stage) == want  # the load rolled back, and the drops with it
    assert rows(stage, "part") == []
    slow_len(stage, 0)  # the rerun's load need not be slow
    # the rerun finds every step done (so repeats none: an ADD CONSTRAINT run again would
    # fail on the name), forgets the records, sets the key aside again for its own load
    r = proj.run("sync", "dev", "stage", "--mode", "full", "--json")
    assert r.code == 0, r.err + r.out
    assert not any("interrupted sync" in w for w in r.json["warnings"])
    by = {t["table"]: t for t in r.json["tables"]}
    assert "part_b_own_pk" in by["public.part"]["rebuilt_indexes"]
    assert catalog(stage) == want
    assert recorded(stage) == []
    assert rows(dev, "part") == rows(stage, "part")


def test_on_postgresql_15(tmp_path: Any, make_db15: Callable[..., str]) -> None:
    p = write_project(tmp_path / "v15", {"dev": make_db15("d15"), "stage": make_db15("s15")})
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    sql(p.dsns["dev"], DATA)
    before = oids(p.dsns["stage"])
    r = p.run("sync", "dev", "stage", "--mode", "full", "--json")
    assert r.code == 0, r.err + r.out
    after = oids(p.dsns["stage"])
    assert after["part_pkey"] != before["part_pkey"]
    assert catalog(p.dsns["stage"]) == catalog(p.dsns["dev"])
    assert rows(p.dsns["dev"], "part") == rows(p.dsns["stage"], "part")
    same_after(p.dsns["dev"], p.dsns["stage"], "ALTER TABLE part DROP CONSTRAINT part_pkey")


def test_readers_go_on_while_the_partitions_keys_build(proj: Project) -> None:
    dev, stage = proj.dsns["dev"], proj.dsns["stage"]
    # a slow partitioned index built on the guard after the key's partitions (one job):
    # the parent's own key, which takes ACCESS EXCLUSIVE, is added after every build
    index = "CREATE INDEX part_slow_idx ON part (slow_len(v))"
    slow_len(stage, 0, index)
    slow_len(dev, 0, index)
    slow_len(stage, 0.002)
    proc = proj.popen("sync", "dev", "stage", "--mode", "full", "--jobs", "1")
    try:
        wait_for_backend(stage, proc, "CREATE INDEX part_a_slow")
        with psycopg.connect(stage, autocommit=True) as c:
            c.execute("SET lock_timeout = '3s'")
            assert c.execute("SELECT count(*) FROM part").fetchone() == (2000,)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err + out
    assert catalog(stage) == catalog(dev)


KEYS = {
    # storage parameters, which pg_get_constraintdef leaves out, and INCLUDE
    "include": "CREATE TABLE t (id int, d date, v text, PRIMARY KEY (id, d) INCLUDE (v)"
    " WITH (fillfactor = 70)) PARTITION BY RANGE (d);",
    "nulls not distinct": "CREATE TABLE t (id int, d date, v text,"
    " CONSTRAINT t_u UNIQUE NULLS NOT DISTINCT (v, d)) PARTITION BY RANGE (d);",
    # a GiST key: USING INDEX takes only a b-tree, so it stays
    "without overlaps": "CREATE EXTENSION IF NOT EXISTS btree_gist; CREATE TABLE t (id int,"
    " d date, v daterange, PRIMARY KEY (id, d, v WITHOUT OVERLAPS)) PARTITION BY RANGE (d);",
    "without overlaps, not partitioned": "CREATE EXTENSION IF NOT EXISTS btree_gist;"
    " CREATE TABLE t (id int, d date, v daterange, PRIMARY KEY (id, v WITHOUT OVERLAPS));",
}


@pytest.mark.parametrize("key", list(KEYS))
def test_keys_of_every_kind_come_back_as_they_were(
    key: str, tmp_path: Any, make_db: Callable[..., str]
) -> None:
    p = write_project(tmp_path / "k", {"dev": make_db("kd"), "stage": make_db("ks")})
    ddl = KEYS[key]
    if "not partitioned" not in key:
        ddl += "CREATE TABLE t_a PARTITION OF t FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');"
    for dsn in p.dsns.values():
        sql(dsn, ddl)
    value = "'v' || g" if "overlaps" not in key else "daterange(date '2024-01-01' + g, NULL)"
    sql(
        p.dsns["dev"],
        f"INSERT INTO t (id, d, v) SELECT g, date '2024-01-01' + g % 300, {value}"  # noqa: S608
        " FROM generate_series(1, 500) g",
    )
    before = oids(p.dsns["stage"])
    r = p.run("sync", "dev", "stage", "--mode", "full", "--json")
    assert r.code == 0, r.err + r.out
    changed = {n for n, o in oids(p.dsns["stage"]).items() if o != before[n]}
    assert bool(changed) == ("overlaps" not in key)
    assert catalog(p.dsns["stage"]) == catalog(p.dsns["dev"])
    assert rows(p.dsns["dev"], "t") == rows(p.dsns["stage"], "t")

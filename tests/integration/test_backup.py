"""backup create / list / verify / restore / prune on a real server, as a non-superuser."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql as q

from pgferry.backup.catalog import list_backups
from tests.helpers import Project, Result, run, sql
from tests.helpers.backup import (
    COUNTS,
    backed_up,
    backups_dir,
    counts,
    fingerprint,
    scratch_databases,
    wait_scratch_gone,
)


def test_create_writes_a_complete_manifest_with_counts_of_its_snapshot(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    r = run(cli, bproj, "backup", "create", "--env", "prod", "--tag", "nightly", "--json")
    assert r.code == 0, r.err
    out = r.json
    d = Path(out["path"])
    assert d.parent == backups_dir(bproj, "prod")
    m = json.loads((d / "manifest.json").read_text())
    for key in (
        "id",
        "env",
        "database",
        "started_at",
        "finished_at",
        "size_bytes",
        "tables",
        "files",
        "server_version",
        "pg_dump_version",
        "tool_version",
        "tag",
        "keep",
    ):
        assert key in m, key
    assert m["env"] == "prod" and m["tag"] == "nightly" and m["keep"] is False
    assert m["started_at"].endswith("Z") and m["finished_at"] >= m["started_at"]
    assert {k: m["tables"][k] for k in COUNTS} == COUNTS
    assert m["pg_dump_version"].startswith("18") and m["server_version"].startswith("18")
    assert "dump/toc.dat" in m["files"]
    assert m["size_bytes"] == sum(f["size"] for f in m["files"].values())
    assert all((d / rel).stat().st_size == f["size"] for rel, f in m["files"].items())
    assert not (d / ".in-progress").exists()
    # the read-only catalog API the health check imports
    infos = list_backups(bproj.root / "backups", "prod")
    assert [i.id for i in infos] == [m["id"]] and infos[0].complete
    # journaled in the database it backed up
    with psycopg.connect(bproj.dsns["prod"]) as c:
        rows = c.execute("SELECT command, outcome, details->>'id' FROM pgferry.journal").fetchall()
    assert rows == [("backup create", "ok", m["id"])]


def test_counts_are_those_of_the_dump_while_rows_are_written(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    # a writer commits while the dump runs: counts and dump must both be of the snapshot
    import threading
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(bproj.dsns["prod"], autocommit=True) as c:
            i = 100_000
            while not stop.is_set():
                c.execute("INSERT INTO orders VALUES (%s, 1, 1, 'late')", [i])
                i += 1

    with ThreadPoolExecutor(1) as pool:
        wrote = pool.submit(writer)
        try:
            r = run(cli, bproj, "backup", "create", "--env", "prod", "--json")
        finally:
            stop.set()
        wrote.result()
    assert r.code == 0, r.err
    bid = r.json["id"]
    v = run(cli, bproj, "backup", "verify", bid, "--restore-test", "--json")
    assert v.code == 0, v.out + v.err
    assert v.json["restore_test_ok"] is True


def test_list_verify_and_restore_test_write_the_sidecar_only(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    bid = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"]
    d = backups_dir(bproj, "prod") / bid
    manifest_before = (d / "manifest.json").read_bytes()
    r = run(cli, bproj, "backup", "verify", "latest", "--env", "prod", "--json")
    assert r.code == 0, r.out + r.err
    side = json.loads((d / "verification.json").read_text())
    assert side["verify_ok"] is True and side["verified_at"].endswith("Z")
    assert side["restore_tested_at"] is None and side["problems"] == []
    r = run(cli, bproj, "backup", "verify", bid, "--restore-test")
    assert r.code == 0, r.out + r.err
    assert "restore test" in r.out and "3 tables" not in r.err
    side = json.loads((d / "verification.json").read_text())
    assert side["restore_test_ok"] is True and side["restore_tested_at"]
    assert set(side) == {
        "verified_at",
        "verify_ok",
        "restore_tested_at",
        "restore_test_ok",
        "problems",
    }
    assert (d / "manifest.json").read_bytes() == manifest_before
    # the scratch database is dropped (by a detached process, once the result is written)
    wait_scratch_gone(bproj.dsns["prod"])
    r = run(cli, bproj, "backup", "list", "--env", "prod")
    assert r.code == 0, r.err
    assert bid in r.out and "restore-tested" in r.out and "daily" in r.out
    assert "newest complete" in r.out
    lst = run(cli, bproj, "backup", "list", "--env", "prod", "--json").json
    b = lst["backups"][0]
    assert b["id"] == bid and b["state"] == "restore-tested" and "daily" in b["slots"]
    assert lst["freshness"]["newest_complete_age_s"] >= 0
    assert lst["freshness"]["newest_restore_tested_age_s"] is not None


def test_restore_in_place_keeps_an_emergency_backup(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    dsn = bproj.dsns["prod"]
    bid = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"]
    before = fingerprint(dsn)
    sql(dsn, "DELETE FROM orders WHERE id > 100; UPDATE customers SET name = 'oops'")
    r = run(cli, bproj, "backup", "restore", bid, "--env", "prod", "--yes")
    assert r.code == 0, r.out + r.err
    assert fingerprint(dsn) == before and counts(dsn) == COUNTS
    infos = list_backups(bproj.root / "backups", "prod")
    emergency = [i for i in infos if i.tag == "pre-restore"]
    assert len(emergency) == 1 and emergency[0].keep
    assert emergency[0].manifest is not None
    assert emergency[0].manifest.tables["public.orders"] == 100
    assert emergency[0].id in r.out and str(emergency[0].path) in r.out
    with psycopg.connect(dsn) as c:
        cmds = [x[0] for x in c.execute("SELECT command FROM pgferry.journal ORDER BY id")]
    assert cmds == ["backup create", "backup create", "backup restore"]


def test_restore_into_new_leaves_the_old_database_alone(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    dsn, bid, before = backed_up(cli, bproj, "DELETE FROM orders")
    r = run(
        cli, bproj, "backup", "restore", bid, "--env", "prod", "--into-new", "bk_new_a", "--json"
    )
    assert r.code == 0, r.out + r.err
    assert r.json["database"] == "bk_new_a" and r.json["emergency_backup"] is None
    assert fingerprint(dsn) == before
    new = psycopg.conninfo.make_conninfo(dsn, dbname="bk_new_a")
    assert counts(new) == COUNTS
    # not into a database that exists
    r = run(cli, bproj, "backup", "restore", bid, "--env", "prod", "--into-new", "bk_new_a")
    assert r.code == 2 and "already exists" in r.err


def test_restore_of_some_tables_into_another_env(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    bid = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"]
    dev = bproj.dsns["dev"]
    from tests.helpers.backup import SCHEMA

    sql(dev, SCHEMA.split("INSERT", 1)[0])
    sql(dev, "INSERT INTO customers (name) VALUES ('only dev')")
    r = run(
        cli,
        bproj,
        "backup",
        "restore",
        bid,
        "--env",
        "dev",
        "--tables",
        "public.customers,public.orders",
    )
    assert r.code == 0, r.out + r.err
    got = counts(dev)
    assert got["public.customers"] == 300 and got["public.orders"] == 4000
    assert got["odd Schema.Mixed Case"] == 0
    # the identity sequence moved with the data: the next insert does not collide
    sql(dev, "INSERT INTO customers (name) VALUES ('next')")


#: a partitioned table whose key, unique constraint and index its partitions inherit
EVENTS = """
CREATE TABLE events (id bigint, region text, body text, PRIMARY KEY (id, region),
                     UNIQUE (body, region)) PARTITION BY LIST (region);
CREATE TABLE "events EU" PARTITION OF events FOR VALUES IN ('eu');
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
CREATE INDEX events_body_idx ON events (body);
INSERT INTO events SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'b' || g
FROM generate_series(1, 100) g;
"""


def test_a_database_with_a_partitioned_table_is_restored_by_partitions_and_in_place(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    prod = bproj.dsns["prod"]
    sql(prod, EVENTS)
    bid = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"]
    sql(prod, "DELETE FROM events WHERE id > 10; DELETE FROM orders WHERE id > 5")
    # a dump holds a partitioned table's rows in its partitions: naming the table itself is
    # refused (nothing touched), with the partitions to name instead
    args = ("backup", "restore", bid, "--env", "prod", "--yes")
    r = run(cli, bproj, *args, "--tables", "public.events")
    assert r.code == 2, r.out + r.err
    assert (
        "(public.events is partitioned on prod: its rows are in its partitions; name those "
        "the backup holds: --tables public.events EU,public.events_us)" in r.err
    ), r.err
    assert q_count(prod, "events") == 10
    r = run(cli, bproj, *args, "--tables", "public.events EU,public.events_us")
    assert r.code == 0, r.out + r.err
    assert q_count(prod, "events") == 100
    # in place: pg_restore --clean drops a partition's primary key before its partitioned
    # table's, which the server refuses ("cannot drop inherited constraint"): every
    # in-place restore of such a database failed (exit 3, rolled back)
    sql(prod, "DELETE FROM events WHERE id > 10")
    r = run(cli, bproj, *args)
    assert r.code == 0, r.out + r.err
    assert q_count(prod, "events") == 100 and counts(prod) == COUNTS
    with psycopg.connect(prod) as c:
        idx = c.execute(
            "SELECT count(*), bool_and(indisvalid) FROM pg_index"
            " WHERE indrelid IN (SELECT relid FROM pg_partition_tree('events'))"
        ).fetchone()
    assert idx == (9, True)  # three indexes on the table and on each partition, all valid


def test_grants_to_roles_the_server_does_not_have_are_left_out_and_named(
    bproj: Project, cli: Callable[..., Result], pg_admin_dsn: str
) -> None:
    # prod's backup restored where one of its roles does not exist (another project's
    # server, or a role dropped since): the whole restore failed on "role ... does not exist"
    import uuid

    gone, kept = f"gone_{uuid.uuid4().hex[:8]}", f"kept_{uuid.uuid4().hex[:8]}"
    new = f"beside_{uuid.uuid4().hex[:8]}"
    prod = bproj.dsns["prod"]
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        for r in (gone, kept):
            c.execute(q.SQL("CREATE ROLE {}").format(q.Identifier(r)))
    try:
        for r in (gone, kept):
            sql(prod, q.SQL("GRANT SELECT ON orders TO {}").format(q.Identifier(r)))
        bid = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"]
        sql(prod, q.SQL("REVOKE ALL ON orders FROM {}").format(q.Identifier(gone)))
        with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
            c.execute(q.SQL("DROP ROLE {}").format(q.Identifier(gone)))
        sql(prod, "DELETE FROM orders WHERE id > 5")
        res = run(cli, bproj, "--json", "backup", "restore", bid, "--env", "prod", "--yes")
        assert res.code == 0, res.out + res.err
        assert res.json["warnings"] == [
            f"1 grant(s) to roles prod's server does not have were left out: GRANT SELECT ON "
            f"TABLE public.orders TO {gone}; create those roles and grant again where they "
            "are needed"
        ]
        assert counts(prod) == COUNTS
        with psycopg.connect(prod) as c:  # the grant to the role that exists is back
            row = c.execute("SELECT has_table_privilege(%s, 'orders', 'SELECT')", [kept])
            assert row.fetchone() == (True,)
        # beside it, and the test restore (which said "reported errors"): the same
        res = run(
            cli, bproj, "--json", "backup", "restore", bid, "--env", "prod", "--into-new", new
        )
        assert res.code == 0 and len(res.json["warnings"]) == 1, res.out + res.err
        res = run(cli, bproj, "--json", "backup", "verify", bid, "--env", "prod", "--restore-test")
        assert res.code == 0 and res.json["restore_test_ok"] is True, res.out + res.err
    finally:
        sql(prod, q.SQL("REVOKE ALL ON orders FROM {}").format(q.Identifier(kept)))
        wait_scratch_gone(pg_admin_dsn)
        with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
            c.execute(q.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(q.Identifier(new)))
            c.execute(q.SQL("DROP ROLE IF EXISTS {}").format(q.Identifier(kept)))


def q_count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as c:
        row = c.execute(q.SQL("SELECT count(*) FROM {}").format(q.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


def test_prune_applies_keep_and_dry_run_changes_nothing(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    ids = [
        run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"] for _ in range(3)
    ]
    kept = run(cli, bproj, "backup", "create", "--env", "prod", "--keep", "--json").json["id"]
    # all four are of today: daily keeps the newest of the day (the kept one), and the
    # kept flag; min_count 2 keeps the newest other one
    bproj.config.write_text(bproj.config.read_text() + "\n[backup.keep]\nmin_count = 2\n")
    r = run(cli, bproj, "backup", "prune", "--env", "prod", "--dry-run", "--json")
    assert r.code == 0, r.err
    assert sorted(r.json["deleted"]) == sorted(ids[:2]) and r.json["dry_run"] is True
    assert len(list_backups(bproj.root / "backups", "prod")) == 4
    r = run(cli, bproj, "backup", "prune", "--env", "prod", "--json")
    assert r.code == 0 and sorted(r.json["deleted"]) == sorted(ids[:2])
    assert [i.id for i in list_backups(bproj.root / "backups", "prod")] == [kept, ids[2]]
    r = run(cli, bproj, "backup", "prune", "--env", "prod", "--json")
    assert r.json["deleted"] == []


def test_a_restore_test_drops_scratch_databases_a_crash_left_behind(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    dsn = bproj.dsns["prod"]
    old = "pgferry_restoretest_1700000000_dead01"
    fresh = f"pgferry_restoretest_{int(time.time())}_live01"
    with psycopg.connect(dsn, autocommit=True) as c:
        for name in (old, fresh):
            c.execute(q.SQL("CREATE DATABASE {}").format(q.Identifier(name)))
    try:
        bid = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"]
        r = run(cli, bproj, "backup", "verify", bid, "--restore-test")
        assert r.code == 0, r.out + r.err
        deadline = time.monotonic() + 60
        while scratch_databases(dsn) != [fresh]:  # an hour old, nobody connected: dropped
            assert time.monotonic() < deadline, scratch_databases(dsn)
            time.sleep(0.1)
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(q.SQL("DROP DATABASE IF EXISTS {}").format(q.Identifier(fresh)))


def test_restoring_tables_does_not_fire_their_triggers(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    # an updated_at-style trigger on the target would stamp every restored row
    dsn, bid, _ = backed_up(
        cli,
        bproj,
        """
        CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN NEW.name := 'stamped'; RETURN NEW; END $$;
        CREATE TRIGGER stamp BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION stamp();
        CREATE TRIGGER off BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION stamp();
        CREATE TRIGGER always BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION stamp();
        ALTER TABLE customers DISABLE TRIGGER off;
        ALTER TABLE customers ENABLE ALWAYS TRIGGER always;
        DELETE FROM orders; DELETE FROM customers""",
    )
    r = run(
        cli,
        bproj,
        "backup",
        "restore",
        bid,
        "--env",
        "prod",
        "--yes",
        "--tables",
        "public.customers,public.orders",
    )
    assert r.code == 0, r.out + r.err
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM customers WHERE name = 'stamped'").fetchone() == (0,)
        modes: dict[str, str] = dict(
            c.execute(
                "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'customers'::regclass"
                " AND NOT tgisinternal"
            ).fetchall()
        )
        assert modes == {"stamp": "O", "off": "D", "always": "A"}  # as they were
        c.execute("INSERT INTO customers (name) VALUES ('new')")
        assert c.execute("SELECT name FROM customers ORDER BY id DESC LIMIT 1").fetchone() == (
            "stamped",
        )


def test_create_and_prune_delete_only_directories_pgferry_made(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    """An interrupted backup is a directory pgferry named and left without a manifest; a
    directory someone else keeps under the backup root (an old cron job's dumps) is not."""
    theirs = backups_dir(bproj, "prod") / "cron-pg_dump-2026-11"
    theirs.mkdir(parents=True)
    (theirs / "prod.sql").write_text("-- a dump taken by hand\n")
    r = run(cli, bproj, "backup", "create", "--env", "prod", "--json")
    assert r.code == 0 and r.json["cleaned"] == [], r.out + r.err
    r = run(cli, bproj, "backup", "prune", "--env", "prod", "--json")
    assert r.code == 0 and r.json["interrupted_removed"] == [], r.out + r.err
    assert (theirs / "prod.sql").read_text() == "-- a dump taken by hand\n"


def test_restore_latest_run_again_does_not_undo_the_restore(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    """A restore's emergency backup is the newest backup of the environment: `restore latest`
    run a second time (a retry, a runbook step done twice) restored it, the damaged data the
    first restore had replaced, and said it was done."""
    dsn = bproj.dsns["prod"]
    first = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"]
    sql(dsn, "DELETE FROM orders WHERE id > 100")
    r = run(cli, bproj, "backup", "restore", "latest", "--env", "prod", "--yes")
    assert r.code == 0 and counts(dsn) == COUNTS, r.out + r.err
    r = run(cli, bproj, "backup", "restore", "latest", "--env", "prod", "--yes", "--json")
    assert r.code == 0 and r.json["id"] == first, r.out + r.err
    assert counts(dsn) == COUNTS
    emergency = [i for i in list_backups(bproj.root / "backups", "prod") if i.tag == "pre-restore"]
    # by its id, an emergency backup is restored as any other (that is how a restore is undone)
    r = run(cli, bproj, "backup", "restore", emergency[-1].id, "--env", "prod", "--yes")
    assert r.code == 0 and counts(dsn)["public.orders"] == 100, r.out + r.err


@pytest.mark.slow
def test_create_is_not_cut_short_by_a_database_s_idle_timeout(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    """create's snapshot transaction idles while pg_dump reads in it: a database default
    idle_in_transaction_session_timeout (or a role's statement_timeout) ended it, and a good
    dump was thrown away as a failed backup."""
    dsn = bproj.dsns["prod"]
    sql(
        dsn,
        "INSERT INTO orders SELECT g, 1, 1, repeat(md5(g::text), 4)"
        " FROM generate_series(10001, 400000) g",
    )
    with psycopg.connect(dsn, autocommit=True) as c:
        name = c.execute("SELECT current_database()").fetchone()
        assert name is not None
        c.execute(
            q.SQL("ALTER DATABASE {} SET idle_in_transaction_session_timeout = '200ms'").format(
                q.Identifier(name[0])
            )
        )
    r = run(cli, bproj, "backup", "create", "--env", "prod", "--json")
    assert r.code == 0, r.out + r.err
    assert r.json["manifest"]["tables"]["public.orders"] == 4000 + 390000

"""FK order, cycles and --atomic on a real server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.helpers import Result, sql, write_project
from tests.helpers.sync import rows

CYCLE = """
CREATE TABLE a (id int PRIMARY KEY, b_id int);
CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a DEFERRABLE);
ALTER TABLE a ADD FOREIGN KEY (b_id) REFERENCES b DEFERRABLE;
CREATE TABLE emp (id int PRIMARY KEY, boss int REFERENCES emp DEFERRABLE INITIALLY IMMEDIATE);
"""
CYCLE_DATA = """
BEGIN; SET CONSTRAINTS ALL DEFERRED;
INSERT INTO a SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO b SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO emp SELECT g, CASE WHEN g < 60 THEN g + 1 END FROM generate_series(1, 60) g;
COMMIT;
"""


def test_deferrable_cycle_and_self_reference_sync(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=()
    )
    sql(p.dsns["dev"], CYCLE + CYCLE_DATA)
    sql(p.dsns["prod"], CYCLE)
    # small batches: a row's boss lives in a later batch, checked at commit (deferrable)
    for mode in ("incremental", "full"):
        r = cli(
            "--config",
            str(p.config),
            "sync",
            "dev",
            "prod",
            "--mode",
            mode,
            "--batch-size",
            "7",
            "--json",
        )
        assert r.code == 0, r.err + r.out
        for t in ("a", "b", "emp"):
            assert rows(p.dsns["dev"], t) == rows(p.dsns["prod"], t)
        sql(
            p.dsns["dev"],
            "BEGIN; SET CONSTRAINTS ALL DEFERRED; DELETE FROM a WHERE id = 5;"
            " DELETE FROM b WHERE id = 5; UPDATE a SET b_id = NULL WHERE b_id = 5;"
            " UPDATE b SET a_id = NULL WHERE a_id = 5; COMMIT;",
        )


def test_non_deferrable_cycle_is_named_with_the_fix(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    ddl = """CREATE TABLE a (id int PRIMARY KEY, b_id int);
             CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a);
             ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES b;
             CREATE TABLE c (id int PRIMARY KEY);"""
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=()
    )
    sql(p.dsns["dev"], ddl + "INSERT INTO c VALUES (1)")  # noqa: S608
    sql(p.dsns["prod"], ddl)
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--json")
    assert r.code == 3
    by = {t["table"]: t for t in r.json["tables"]}
    assert "cycle public.a -> public.b -> public.a" in by["public.a"]["error"]
    assert "DEFERRABLE" in by["public.a"]["error"]
    assert by["public.c"]["status"] == "ok"
    with psycopg.connect(p.dsns["prod"]) as c:
        assert c.execute("SELECT id FROM c").fetchall() == [(1,)]


def test_atomic_rolls_back_every_table_when_one_fails(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    ddl = """CREATE TABLE p1 (id int PRIMARY KEY, v text);
             CREATE TABLE p2 (id int PRIMARY KEY, v text);"""
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=()
    )
    sql(
        p.dsns["dev"],
        ddl + "INSERT INTO p1 VALUES (1, 'a');"  # noqa: S608
        " INSERT INTO p2 VALUES (1, 'b');",
    )
    sql(
        p.dsns["prod"],
        ddl + "CREATE TABLE ext (p2 int REFERENCES p2);"  # noqa: S608
        "INSERT INTO p2 VALUES (2, 'old'); INSERT INTO ext VALUES (2);",
    )
    r = cli(
        "--config",
        str(p.config),
        "sync",
        "dev",
        "prod",
        "--mode",
        "full",
        "--atomic",
        "--tables",
        "public.p1,public.p2",
        "--json",
    )
    assert r.code == 3, r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert "public.ext" in by["public.p2"]["error"]
    assert "rolled back" in by["public.p1"]["error"]
    assert rows(p.dsns["prod"], "p1") == []
    with psycopg.connect(p.dsns["prod"]) as c:
        assert c.execute("SELECT count(*) FROM ext").fetchone() == (1,)
    # without --atomic the table that can be synced is
    r = cli(
        "--config",
        str(p.config),
        "sync",
        "dev",
        "prod",
        "--mode",
        "full",
        "--tables",
        "public.p1,public.p2",
        "--json",
    )
    assert r.code == 3
    assert rows(p.dsns["prod"], "p1") == [(1, "a")]


def test_incremental_atomic_and_verify_after(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    ddl = """CREATE TABLE p (id int PRIMARY KEY, v text);
             CREATE TABLE c (id int PRIMARY KEY, p_id int REFERENCES p, v text);"""
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=()
    )
    data = (
        "INSERT INTO p SELECT g, 'v' FROM generate_series(1, 40) g;"
        "INSERT INTO c SELECT g, g, 'c' FROM generate_series(1, 40) g;"
    )
    sql(p.dsns["dev"], ddl + data)
    sql(
        p.dsns["prod"],
        ddl + data + "INSERT INTO p VALUES (99, 'stray');"  # noqa: S608
        "INSERT INTO c VALUES (99, 99, 'stray'); UPDATE c SET v = 'old' WHERE id < 5;",
    )
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--atomic", "--json")
    assert r.code == 0, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.c"]["updated"] == 4 and by["public.c"]["deleted"] == 1
    assert by["public.p"]["deleted"] == 1
    for t in ("p", "c"):
        assert rows(p.dsns["dev"], t) == rows(p.dsns["prod"], t)
    # --verify-after: the checksums after, and a trigger that rewrites rows is caught
    sql(
        p.dsns["prod"],
        """CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN NEW.v := upper(NEW.v); RETURN NEW; END $$;
        CREATE TRIGGER shout BEFORE INSERT OR UPDATE ON c FOR EACH ROW
        EXECUTE FUNCTION shout();""",
    )
    sql(p.dsns["dev"], "UPDATE c SET v = 'new' WHERE id = 7; UPDATE p SET v = 'w'")
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--verify-after", "--json")
    assert r.code == 1, r.err + r.out
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.p"]["checksums_match"] is True and by["public.p"]["status"] == "ok"
    assert by["public.c"]["status"] == "differs" and by["public.c"]["differing"] == 1


def test_self_reference_to_a_later_batch_is_written_after_the_rest(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    ddl = "CREATE TABLE emp (id int PRIMARY KEY, boss int REFERENCES emp);"  # not deferrable
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=()
    )
    sql(
        p.dsns["dev"],
        ddl + "INSERT INTO emp SELECT g, CASE WHEN g < 60 THEN g + 1 END"  # noqa: S608
        " FROM generate_series(60, 1, -1) g",
    )
    sql(p.dsns["prod"], ddl + "INSERT INTO emp VALUES (60, NULL), (61, 61)")  # not empty  # noqa: S608
    for mode in ("incremental", "full"):
        r = cli(
            "--config",
            str(p.config),
            "sync",
            "dev",
            "prod",
            "--mode",
            mode,
            "--batch-size",
            "7",
            "--json",
        )
        assert r.code == 0, r.err + r.out
        emp = r.json["tables"][0]
        assert emp["dead_lettered"] == 0
        assert rows(p.dsns["dev"], "emp") == rows(p.dsns["prod"], "emp")
        if mode == "incremental":
            assert emp["inserted"] == 59 and emp["deleted"] == 1 and emp["unchanged"] == 1
            sql(
                p.dsns["dev"],
                "UPDATE emp SET boss = NULL WHERE id = 30;"
                " INSERT INTO emp SELECT g, CASE WHEN g < 80 THEN g + 1 END"
                " FROM generate_series(80, 70, -1) g;",
            )


def test_column_differences_types_and_extra_columns(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=()
    )
    sql(
        p.dsns["dev"],
        "CREATE TABLE t (id int PRIMARY KEY, n int, s varchar(10), src_only text);"
        "INSERT INTO t SELECT g, g * 10, 's' || g, 'x' FROM generate_series(1, 50) g;",
    )
    sql(
        p.dsns["prod"],
        "CREATE TABLE t (id int PRIMARY KEY, n bigint, s text, tgt_only text DEFAULT 'd');",
    )
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--dry-run", "--json")
    plan = {t["table"]: t for t in r.json["options"]["plan"]["tables"]}["public.t"]
    assert plan["missing_on_target"] == ["src_only"] and plan["missing_on_source"] == ["tgt_only"]
    # schema drift is a finding: the column missing on the target, and each type difference
    assert sum("apply the migrations first" in f for f in plan["findings"]) == 3
    assert plan["text_columns"] == ["n", "s"]
    for mode in ("full", "incremental"):
        r = cli("--config", str(p.config), "sync", "dev", "prod", "--mode", mode, "--json")
        assert r.code == 1, r.err + r.out  # done (the rows are equal), and drift found
        assert r.json["tables"][0]["status"] == "ok" and r.json["tables"][0]["findings"]
        with psycopg.connect(p.dsns["prod"]) as c, psycopg.connect(p.dsns["dev"]) as d:
            got = c.execute("SELECT id, n, s, tgt_only FROM t ORDER BY id").fetchall()
            want = d.execute("SELECT id, n, s, 'd' FROM t ORDER BY id").fetchall()
        assert got == want and len(got) == 50
        sql(p.dsns["dev"], "UPDATE t SET n = -n WHERE id = 3")
    r = cli("--config", str(p.config), "verify", "dev", "prod", "--json")
    assert r.code == 1 and r.json["tables"][0]["differing"] == 1
    assert "src_only" in " ".join(r.json["tables"][0]["findings"])

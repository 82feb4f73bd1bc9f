"""Values arrive as they left, bad values are dead letters, and a table is synced or untouched.

Issue 9, items 2 (bad values after deletes), 5 (session settings), 8 (key type drift),
20 (virtual generated columns) and 21 (sequences used by defaults), on a real server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Project, Result, sql, write_project


def fetch(dsn: str, q: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        c.execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres';"
            "SET extra_float_digits = 3; SET bytea_output = 'hex'"
        )
        return c.execute(q).fetchall()


def project(tmp_path: Path, make_db: Callable[..., str], extra: str = "") -> Project:
    return write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=(), extra=extra
    )


def run(cli: Callable[..., Result], p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), "--json", *args)


VALUES = """
CREATE TYPE kind AS ENUM ('a', 'b');
CREATE TABLE v (id int PRIMARY KEY, k kind, d date, f float8, i interval, tz timestamptz,
                by bytea, n numeric, ts timestamp);
"""
ROWS = """
INSERT INTO v VALUES
 (1, 'a', '2026-01-02', 0.30000000000000004, '1 year 2 mons 3 days 04:05:06.789',
  '2026-01-02 03:04:05.678+00', '\\xdeadbeef', 1.50, '2026-01-02 03:04:05'),
 (2, 'b', '1999-12-31', 1e-300, '-1 day', '1970-01-01 00:00+00', '\\x00', -0.001,
  '0001-01-01 00:00');
"""


def test_values_survive_odd_database_settings_on_both_sides(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """Rows copied as text (an enum column makes the whole COPY text) keep their values,
    whatever DateStyle, float digits, IntervalStyle, TimeZone or bytea_output the
    databases set (issue 9, item 5)."""
    p = project(tmp_path, make_db)
    odd = {
        "dev": ("SQL, DMY", "0", "sql_standard", "Asia/Kolkata", "escape"),
        "prod": ("SQL, MDY", "-5", "iso_8601", "America/New_York", "escape"),
    }
    for env, (ds, efd, ivs, tz, bo) in odd.items():
        dsn = p.dsns[env]
        db = dsn.split("dbname=")[1].split()[0]
        sql(
            dsn,
            VALUES + f"ALTER DATABASE {db} SET DateStyle = '{ds}';"
            f"ALTER DATABASE {db} SET extra_float_digits = {efd};"
            f"ALTER DATABASE {db} SET IntervalStyle = '{ivs}';"
            f"ALTER DATABASE {db} SET TimeZone = '{tz}';"
            f"ALTER DATABASE {db} SET bytea_output = '{bo}';",
        )
    sql(p.dsns["dev"], ROWS)
    want = fetch(p.dsns["dev"], "SELECT * FROM v ORDER BY id")
    r = run(cli, p, "sync", "dev", "prod")  # empty target: the COPY fast path, as text
    assert r.code == 0, r.out + r.err
    assert fetch(p.dsns["prod"], "SELECT * FROM v ORDER BY id") == want
    sql(
        p.dsns["dev"],
        "UPDATE v SET d = '2026-03-04', f = 0.1 + 0.2, tz = tz + interval "
        "'1 microsecond', i = i + interval '1 second' WHERE id = 1",
    )
    want = fetch(p.dsns["dev"], "SELECT * FROM v ORDER BY id")
    r = run(cli, p, "sync", "dev", "prod")  # through the staging table, text columns cast
    assert r.code == 0, r.out + r.err
    assert r.json["tables"][0]["updated"] == 1
    assert fetch(p.dsns["prod"], "SELECT * FROM v ORDER BY id") == want
    assert run(cli, p, "verify", "dev", "prod").code == 0


def test_bad_values_are_dead_letters_and_the_rest_is_synced(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """Item 2: a value the target refuses (type drift, a domain CHECK, an enum label the
    target lacks) is one dead letter; the other rows, deletes included, are synced."""
    p = project(tmp_path, make_db)
    sql(
        p.dsns["dev"],
        """
        CREATE TYPE lbl AS ENUM ('x', 'y', 'z');
        CREATE DOMAIN small AS int;
        CREATE TABLE t (id int PRIMARY KEY, v text, s small, l lbl);
        INSERT INTO t VALUES (1, '1', 1, 'x'), (2, 'abc', 2, 'x'), (3, '3', 3, 'x'),
                             (4, '4', 400, 'x'), (5, '5', 5, 'z');""",
    )
    sql(
        p.dsns["prod"],
        """
        CREATE TYPE lbl AS ENUM ('x', 'y');
        CREATE DOMAIN small AS int CHECK (VALUE < 100);
        CREATE TABLE t (id int PRIMARY KEY, v int, s small, l lbl);
        INSERT INTO t VALUES (9, 9, 9, 'y');""",
    )
    for mode in ("incremental", "full"):
        r = run(cli, p, "sync", "dev", "prod", "--mode", mode)
        assert r.code == 1, r.out + r.err  # done, and it found a problem
        t = r.json["tables"][0]
        assert t["status"] == "dead_letters"
        assert sorted(d["key"]["id"] for d in t["dead_letters"]) == [2, 4, 5]
        assert fetch(p.dsns["prod"], "SELECT id, v, s, l::text FROM t ORDER BY id") == [
            (1, 1, 1, "x"),
            (3, 3, 3, "x"),
        ]  # the target-only row 9 went, as it should
        assert t["inserted"] + t["updated"] + t["unchanged"] + t["dead_lettered"] == 5
        assert any("apply the migrations first" in f for f in t["findings"])
    with psycopg.connect(p.dsns["prod"]) as c:
        letters = c.execute(
            "SELECT key->>'id', sqlstate, row_data FROM pgferry.dead_letters ORDER BY id"
        ).fetchall()
    assert {(k, s[:2]) for k, s, _ in letters} >= {("2", "22"), ("4", "23"), ("5", "22")}
    assert any(row["v"] == "abc" for _, _, row in letters)  # the value as it was


def test_a_table_that_fails_after_its_deletes_is_left_as_it_was(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """Item 2: a failure that is not a bad row (here a trigger raising 42501) rolls the
    whole table back, its deletes included; it is never reported failed after changing."""
    p = project(tmp_path, make_db)
    for dsn in p.dsns.values():
        sql(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    sql(p.dsns["dev"], "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g")
    sql(
        p.dsns["prod"],
        """
        INSERT INTO t SELECT g, 'old' FROM generate_series(50, 120) g;
        CREATE FUNCTION deny() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id = 10 THEN
            RAISE EXCEPTION 'not allowed' USING ERRCODE = 'insufficient_privilege';
        END IF; RETURN NEW; END $$;
        CREATE TRIGGER deny BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION deny();""",
    )
    before = fetch(p.dsns["prod"], "SELECT * FROM t ORDER BY id")
    r = run(cli, p, "sync", "dev", "prod")
    assert r.code == 3, r.out + r.err
    t = r.json["tables"][0]
    assert t["status"] == "failed" and "nothing was changed" in t["error"]
    assert t["deleted"] == t["inserted"] == t["updated"] == 0
    assert fetch(p.dsns["prod"], "SELECT * FROM t ORDER BY id") == before


def test_key_type_drift_stops_the_table_before_any_write(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """Item 8: text keys on one side, bigint on the other: stopped, one sentence."""
    p = project(tmp_path, make_db)
    sql(
        p.dsns["dev"],
        "CREATE TABLE t (id text PRIMARY KEY, v int);"
        "INSERT INTO t SELECT g::text, g FROM generate_series(1, 30) g;",
    )
    sql(
        p.dsns["prod"],
        "CREATE TABLE t (id bigint PRIMARY KEY, v int);"
        "INSERT INTO t SELECT g, g FROM generate_series(1, 20) g;",
    )
    for mode in ("incremental", "full"):
        r = run(cli, p, "sync", "dev", "prod", "--mode", mode)
        assert r.code == 3
        err = r.json["tables"][0]["error"]
        assert "key column id is text on the source and bigint on the target" in err
        assert "nothing is written" in err
        assert fetch(p.dsns["prod"], "SELECT count(*), sum(v) FROM t") == [(20, 210)]


def test_a_key_that_allows_null_stops_the_table_before_any_write(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    # a configured key on a nullable unique column: a NULL key matches no row, so a full
    # sync into the filled table deleted the target's NULL-key rows, wrote none of the
    # source's back and said ok; an incremental one failed on its conflicts base
    p = project(tmp_path, make_db, extra='[sync.tables."public.people"]\nkey = ["email"]\n')
    for env in ("dev", "prod"):
        sql(
            p.dsns[env],
            "CREATE TABLE people (email text UNIQUE, name text);"
            "INSERT INTO people VALUES ('a@x', 'A'), (NULL, 'N1'), (NULL, 'N2');",
        )
    sql(p.dsns["prod"], "UPDATE people SET name = 'changed' WHERE email IS NULL")
    for mode in ("full", "incremental"):
        r = run(cli, p, "sync", "dev", "prod", "--mode", mode)
        assert r.code == 3, r.out
        err = r.json["tables"][0]["error"]
        assert "key column email allows NULL on the target" in err, err
        assert "nothing is written" in err
        assert fetch(p.dsns["prod"], "SELECT count(*) FROM people WHERE name = 'changed'") == [(2,)]
    r = run(cli, p, "verify", "dev", "prod")  # a verify still compares (NULL keys alike)
    assert r.code == 1, r.out
    assert (r.json["tables"][0]["matched"], r.json["tables"][0]["differing"]) == (1, 2)


def test_virtual_generated_columns_are_skipped(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """Item 20: PostgreSQL 18's virtual generated columns (the default kind) on both sides."""
    p = project(tmp_path, make_db)
    for env in ("dev", "prod"):
        sql(
            p.dsns[env],
            "CREATE TABLE t (id int PRIMARY KEY, a int, "
            "twice int GENERATED ALWAYS AS (a * 2), kept int GENERATED ALWAYS AS (a + 1) "
            "STORED)",
        )
    with psycopg.connect(p.dsns["dev"]) as c:
        kinds = c.execute(
            "SELECT attname, attgenerated FROM pg_attribute WHERE attrelid = "
            "'t'::regclass AND attgenerated <> '' ORDER BY 1"
        ).fetchall()
    assert kinds == [("kept", "s"), ("twice", "v")]
    sql(p.dsns["dev"], "INSERT INTO t (id, a) SELECT g, g FROM generate_series(1, 40) g")
    for mode in ("full", "incremental"):
        r = run(cli, p, "sync", "dev", "prod", "--mode", mode)
        assert r.code == 0, r.out + r.err
        sums = "SELECT sum(twice), sum(kept) FROM t"
        assert fetch(p.dsns["prod"], sums) == fetch(p.dsns["dev"], sums) != [(None, None)]
        sql(p.dsns["dev"], "UPDATE t SET a = a + 1 WHERE id <= 5")
    assert run(cli, p, "verify", "dev", "prod").code == 1  # the last update is not synced
    assert run(cli, p, "sync", "dev", "prod").code == 0
    assert run(cli, p, "verify", "dev", "prod").code == 0


@pytest.mark.parametrize("version", [18, 15])
def test_a_column_generated_on_the_source_only_is_copied_as_drift(
    tmp_path: Path,
    version: int,
    make_db: Callable[..., str],
    make_db15: Callable[..., str],
    cli: Callable[..., Result],
) -> None:
    """A migration on prod dropped the expression (``ALTER COLUMN ... DROP EXPRESSION``):
    its plain column is meant to hold the values. It was skipped with a warning, and a
    verify said ok: prod's new rows had no total. Now the values are copied, and the
    drift is a finding (exit 1) until both sides agree."""
    p = write_project(
        tmp_path / "p",
        {"dev": (make_db15 if version == 15 else make_db)("dev"), "prod": make_db("prod")},
        protected=(),
    )
    ddl = (
        "CREATE TABLE g (id int PRIMARY KEY, price int, total int GENERATED ALWAYS AS ({}) STORED)"
    )
    sql(p.dsns["dev"], ddl.format("price * 2"))
    sql(p.dsns["prod"], ddl.format("price * 2"))
    sql(p.dsns["prod"], "ALTER TABLE g ALTER COLUMN total DROP EXPRESSION")
    sql(p.dsns["dev"], "INSERT INTO g (id, price) SELECT g, g FROM generate_series(1, 40) g")
    totals = "SELECT count(*), sum(total) FROM g"
    for mode in ("full", "incremental"):
        r = run(cli, p, "sync", "dev", "prod", "--mode", mode)
        assert r.code == 1, r.out + r.err  # done, and drift found
        (t,) = r.json["tables"]
        assert t["status"] == "ok" and t["findings"] == [
            "column total is generated on the source and a plain column on the target: "
            "apply the migrations first (until then the source's values are copied into it)"
        ], t
        assert fetch(p.dsns["prod"], totals) == fetch(p.dsns["dev"], totals) != [(40, None)]
        sql(p.dsns["dev"], "UPDATE g SET price = price + 1 WHERE id <= 5")
    sql(p.dsns["prod"], "UPDATE g SET total = 0 WHERE id = 7")
    r = run(cli, p, "verify", "dev", "prod")
    assert r.code == 1 and r.json["tables"][0]["differing"] == 6, r.out  # 5 updated, id 7


def test_a_sequence_used_by_defaults_but_owned_by_no_column_moves_forward(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """Item 21: DEFAULT nextval('shared_seq') in two tables, no OWNED BY."""
    p = project(tmp_path, make_db)
    ddl = (
        "CREATE SEQUENCE shared_seq;"
        "CREATE TABLE a (id bigint PRIMARY KEY DEFAULT nextval('shared_seq'), v text);"
        "CREATE TABLE b (id bigint PRIMARY KEY DEFAULT nextval('shared_seq'), v text);"
    )
    for env in ("dev", "prod"):
        sql(p.dsns[env], ddl)
    sql(
        p.dsns["dev"],
        "INSERT INTO a (v) SELECT 'a' FROM generate_series(1, 30);"
        "INSERT INTO b (v) SELECT 'b' FROM generate_series(1, 20);",
    )
    r = run(cli, p, "sync", "dev", "prod", "--dry-run")
    plan = {t["table"]: t for t in r.json["options"]["plan"]["tables"]}
    assert plan["public.a"]["sequences"] == {"id": "public.shared_seq|public.shared_seq"}
    assert run(cli, p, "sync", "dev", "prod").code == 0
    # the first insert on the target does not collide with a synced row
    sql(p.dsns["prod"], "INSERT INTO a (v) VALUES ('new'); INSERT INTO b (v) VALUES ('new')")
    assert fetch(p.dsns["prod"], "SELECT max(id) FROM a UNION ALL SELECT max(id) FROM b") == [
        (51,),
        (52,),
    ]
    # and it never moves backwards
    assert run(cli, p, "sync", "dev", "prod", "--tables", "public.b").code == 0
    assert fetch(p.dsns["prod"], "SELECT last_value FROM shared_seq") == [(52,)]
    assert json.loads(json.dumps(plan["public.b"]["sequences"]))


def test_a_domain_over_an_enum_is_written_and_refused_as_a_key(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """A domain over an enum has no ``=`` PostgreSQL can resolve ("operator does not
    exist: mood_d = mood_d"), so an upsert's ``IS DISTINCT FROM`` failed on it and no
    table holding one could be synced once its rows existed on the target (exit 3).
    Such a column is compared by its text now; as a key it is refused in one sentence,
    nothing written, the other tables synced."""
    p = project(tmp_path, make_db)
    for env, labels in (("dev", "'sad', 'ok', 'happy'"), ("prod", "'happy', 'sad', 'ok'")):
        sql(
            p.dsns[env],
            f"CREATE TYPE mood AS ENUM ({labels}); CREATE DOMAIN mood_d AS mood;"
            "CREATE TABLE v (id int PRIMARY KEY, m mood_d, ms mood_d[], note text);"
            "CREATE TABLE k (m mood_d, id int, PRIMARY KEY (m, id));",
        )
    sql(
        p.dsns["dev"],
        "INSERT INTO v SELECT g, (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, "
        "ARRAY['ok'::mood], 'n' FROM generate_series(1, 30) g;"
        "INSERT INTO k VALUES ('ok', 1)",
    )
    first = run(cli, p, "sync", "dev", "prod")
    assert first.code == 3, first.out + first.err
    assert "key column m is of mood_d, a domain over an enum" in first.out
    assert fetch(p.dsns["prod"], "SELECT count(*) FROM k") == [(0,)]
    sql(p.dsns["dev"], "UPDATE v SET m = 'happy', ms = ARRAY['sad'::mood] WHERE id <= 5")
    again = run(cli, p, "sync", "dev", "prod", "--exclude", "public.k")
    assert again.code == 0, again.out + again.err
    rows = json.loads(again.out)["tables"]
    assert [(t["table"], t["updated"]) for t in rows] == [("public.v", 5)]
    q = "SELECT id, m::text, ms::text[], note FROM v ORDER BY id"
    assert fetch(p.dsns["prod"], q) == fetch(p.dsns["dev"], q)
    assert run(cli, p, "verify", "dev", "prod", "--exclude", "public.k").code == 0


def test_a_deferrable_key_is_refused_and_a_deferrable_unique_is_synced(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """``INSERT ... ON CONFLICT`` cannot take a deferrable constraint as its arbiter, so
    every sync of a table whose primary key is DEFERRABLE failed on PostgreSQL's message
    once rows existed; the plan says so first, with what to do. A deferrable UNIQUE
    elsewhere (positions of a list, swapped) is checked at commit and is synced."""
    p = project(tmp_path, make_db)
    for env in ("dev", "prod"):
        sql(
            p.dsns[env],
            "CREATE TABLE dp (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text);"
            "CREATE TABLE li (id int PRIMARY KEY, list int NOT NULL, pos int NOT NULL,"
            " UNIQUE (list, pos) DEFERRABLE INITIALLY DEFERRED)",
        )
        sql(p.dsns[env], "INSERT INTO li SELECT g, 1, g FROM generate_series(1, 10) g")
    sql(p.dsns["dev"], "INSERT INTO dp VALUES (1, 'v'); UPDATE li SET pos = 11 - pos")
    r = run(cli, p, "sync", "dev", "prod")
    assert r.code == 3, r.out + r.err
    tables = {t["table"]: t for t in json.loads(r.out)["tables"]}
    assert "unique constraint on the key (id) is DEFERRABLE" in tables["public.dp"]["error"]
    assert fetch(p.dsns["prod"], "SELECT count(*) FROM dp") == [(0,)]
    assert (tables["public.li"]["status"], tables["public.li"]["updated"]) == ("ok", 10)
    q = "SELECT id, pos FROM li ORDER BY id"
    assert fetch(p.dsns["prod"], q) == fetch(p.dsns["dev"], q)

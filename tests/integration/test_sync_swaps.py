"""Unique values that swap, rotate or pass between rows are synced and reverted, on a real server.

A source changes such values in one transaction (through a temporary value); the target's
constraints are not ``DEFERRABLE``, so PostgreSQL checks them row by row and no order of
single-row upserts can write a swap. Before, every row of a swap became a dead letter
and the target kept the old values. Invariant: after a sync the target equals the
source, or (where a replace could change more than the rows: a cascading foreign key, a
firing trigger) the rows are dead letters and every other row is untouched; a revert
puts the target back as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql as q

from pgferry.pg import embedded
from tests.helpers import Project, Result, sql, write_project

SCHEMA = """
CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL UNIQUE, name text);
CREATE TABLE items (id int PRIMARY KEY, list_id int NOT NULL, pos int NOT NULL,
                    UNIQUE (list_id, pos));
CREATE TABLE bookings (id int PRIMARY KEY, during tstzrange NOT NULL,
                       EXCLUDE USING gist (during WITH &&));
CREATE TABLE orders (id int PRIMARY KEY, user_id int NOT NULL REFERENCES users);
"""
ROWS = """
INSERT INTO users SELECT g, 'u' || g || '@x', 'n' || g FROM generate_series(1, 12) g;
INSERT INTO items SELECT g, 1 + g / 10, g % 10 FROM generate_series(0, 29) g;
INSERT INTO bookings SELECT g, tstzrange(timestamptz '2026-01-01 00:00+00' + g * interval '1 h',
    timestamptz '2026-01-01 00:00+00' + (g + 1) * interval '1 h') FROM generate_series(1, 6) g;
INSERT INTO orders SELECT g, 1 + g % 12 FROM generate_series(1, 40) g;
"""
#: one transaction at the source, through temporary values, as an application does it
MOVES = """
BEGIN;
UPDATE users SET email = 'tmp' || id WHERE id <= 6;
UPDATE users SET email = 'u2@x' WHERE id = 1;          -- 1 and 2 swap
UPDATE users SET email = 'u1@x' WHERE id = 2;
UPDATE users SET email = 'u4@x' WHERE id = 3;          -- 3 -> 4 -> 5 -> 3 rotate
UPDATE users SET email = 'u5@x' WHERE id = 4;
UPDATE users SET email = 'u3@x' WHERE id = 5;
UPDATE users SET email = 'u6@x' WHERE id = 6;
UPDATE users SET email = 'new7@x' WHERE id = 7;        -- a chain: 13 takes 7's old value
INSERT INTO users VALUES (13, 'u7@x', 'n13');
UPDATE items SET pos = -1 - pos WHERE list_id = 1;      -- list 1 reversed
UPDATE items SET pos = 8 + pos WHERE list_id = 1;
UPDATE bookings SET during = tstzrange('2000-01-01', '2000-01-02') WHERE id = 1;
UPDATE bookings SET during = tstzrange(timestamptz '2026-01-01 00:00+00' + interval '1 h',
    timestamptz '2026-01-01 00:00+00' + interval '2 h') WHERE id = 2;    -- 1 and 2 swap slots
UPDATE bookings SET during = tstzrange(timestamptz '2026-01-01 00:00+00' + interval '2 h',
    timestamptz '2026-01-01 00:00+00' + interval '3 h') WHERE id = 1;
COMMIT;
"""
TABLES = ("users", "items", "bookings", "orders")


def snapshot(dsn: str, tables: tuple[str, ...] = TABLES) -> dict[str, list[str]]:
    with psycopg.connect(dsn) as c:
        c.execute("SET TimeZone = 'UTC'")
        return {
            t: sorted(r[0] for r in c.execute(f"SELECT x::text FROM {t} x"))  # noqa: S608
            for t in tables
        }


def run(cli: Callable[..., Result], p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), "--json", *args)


def pair(
    tmp_path: Path,
    make_db: Callable[..., str],
    schema: str,
    extra: str = "",
    make_prod: Callable[..., str] | None = None,
) -> Project:
    """dev and prod (protected: before-images kept; on ``make_prod``'s server when given)
    with ``schema`` and the same rows."""
    prod = (make_prod or make_db)("prod")
    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "prod": prod}, extra=extra)
    for dsn in p.dsns.values():
        if schema:
            sql(dsn, schema)
            sql(dsn, ROWS)
    return p


def by_table(r: Result) -> dict[str, dict[str, Any]]:
    return {t["table"]: t for t in r.json["tables"]}


@pytest.mark.parametrize("target", ["18", "15"])
def test_swapped_rotated_and_passed_on_values_are_written_and_reverted(
    tmp_path: Path,
    make_db: Callable[..., str],
    cli: Callable[..., Result],
    request: pytest.FixtureRequest,
    target: str,
) -> None:
    """On the test server, and into PostgreSQL 15 (rows copied as text across versions)."""
    make_prod = None if target == "18" else request.getfixturevalue(f"make_db{target}")
    p = pair(tmp_path, make_db, SCHEMA, make_prod=make_prod)
    before = snapshot(p.dsns["prod"])
    sql(p.dsns["dev"], MOVES)
    r = run(cli, p, "sync", "dev", "prod", "--yes")
    assert r.code == 0, r.out + r.err
    t = by_table(r)
    assert [(n, t[n]["dead_letters"]) for n in t if t[n]["dead_letters"]] == []
    assert (t["public.users"]["inserted"], t["public.users"]["updated"]) == (1, 6)
    assert t["public.items"]["updated"] == 10
    assert t["public.bookings"]["updated"] == 2
    assert snapshot(p.dsns["prod"]) == snapshot(p.dsns["dev"])
    assert run(cli, p, "verify", "dev", "prod").code == 0
    # the rows referencing a replaced row were never touched (NO ACTION saw them back)
    assert snapshot(p.dsns["prod"], ("orders",)) == {"orders": before["orders"]}

    rev = run(cli, p, "sync", "revert", r.json["run_id"], "--env", "prod", "--yes")
    assert rev.code == 0, rev.out + rev.err
    assert snapshot(p.dsns["prod"]) == before


def test_a_row_that_clashes_for_good_is_the_only_dead_letter(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """prod has a unique index dev lacks (drift): the row dev gives a taken name cannot
    be written anywhere; the swap beside it is written."""
    p = pair(tmp_path, make_db, SCHEMA)
    sql(p.dsns["prod"], "CREATE UNIQUE INDEX users_name ON users (name)")
    sql(
        p.dsns["dev"],
        "BEGIN; UPDATE users SET email = 'tmp' WHERE id = 1; UPDATE users SET email = 'u1@x' "
        "WHERE id = 2; UPDATE users SET email = 'u2@x' WHERE id = 1; "
        "UPDATE users SET name = 'n4' WHERE id = 3; COMMIT",
    )
    r = run(cli, p, "sync", "dev", "prod", "--yes")
    assert r.code == 1, r.out + r.err
    users = by_table(r)["public.users"]
    assert [d["key"] for d in users["dead_letters"]] == [{"id": 3}]
    assert "users_name" in users["dead_letters"][0]["error"]
    rows: dict[int, str] = dict(
        psycopg.connect(p.dsns["prod"]).execute("SELECT id, email || name FROM users").fetchall()
    )
    assert (rows[1], rows[2], rows[3]) == ("u2@xn1", "u1@xn2", "u3@xn3")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            "ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey, ADD FOREIGN KEY (user_id) "
            "REFERENCES users ON DELETE CASCADE",
            "orders_user_id_fkey of orders (ON DELETE CASCADE) would act",
        ),
        (
            "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN NEW.name = NEW.name || '!'; RETURN NEW; END$$; "
            "CREATE TRIGGER touch BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION touch()",
            "user trigger touch would fire",
        ),
    ],
    ids=["cascading-fk", "firing-trigger"],
)
def test_no_replace_where_it_would_change_more_than_the_rows(
    tmp_path: Path,
    make_db: Callable[..., str],
    cli: Callable[..., Result],
    change: str,
    why: str,
) -> None:
    """A cascading foreign key would delete the orders of a replaced user, a trigger would
    fire on its insert: the swap stays two dead letters that say why, nothing else moves."""
    p = pair(tmp_path, make_db, SCHEMA)
    sql(p.dsns["prod"], change)
    before = snapshot(p.dsns["prod"])
    sql(
        p.dsns["dev"],
        "BEGIN; UPDATE users SET email = 'tmp' WHERE id = 1; UPDATE users SET email = 'u1@x' "
        "WHERE id = 2; UPDATE users SET email = 'u2@x' WHERE id = 1; COMMIT",
    )
    r = run(cli, p, "sync", "dev", "prod", "--yes", "--tables", "public.users")
    assert r.code == 1, r.out + r.err
    dead = by_table(r)["public.users"]["dead_letters"]
    assert sorted(d["key"]["id"] for d in dead) == [1, 2]
    assert all(why in d["error"] and "users_email_key" in d["error"] for d in dead), dead
    assert snapshot(p.dsns["prod"]) == before


def test_with_triggers_disabled_the_swap_is_written(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = pair(tmp_path, make_db, SCHEMA, '[sync.tables."public.users"]\ntriggers = "disable"\n')
    sql(
        p.dsns["prod"],
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN NEW.name = NEW.name || '!'; RETURN NEW; END$$; "
        "CREATE TRIGGER touch BEFORE INSERT OR UPDATE ON users FOR EACH ROW "
        "EXECUTE FUNCTION touch()",
    )
    sql(p.dsns["dev"], MOVES)
    r = run(cli, p, "sync", "dev", "prod", "--yes")
    assert r.code == 0, r.out + r.err
    assert snapshot(p.dsns["prod"]) == snapshot(p.dsns["dev"])


@settings(
    max_examples=7, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(2, 12),
    data=st.data(),
    batch=st.integers(1, 6),
)
def test_any_permutation_of_unique_values_is_synced_and_reverted(
    tmp_path: Path,
    make_db: Callable[..., str],
    cli: Callable[..., Result],
    n: int,
    data: st.DataObject,
    batch: int,
) -> None:
    """Property: rows whose unique values are permuted at random (some deleted, some new
    rows taking freed values) are synced exactly, in batches of any size, and reverted;
    the rows that reference them (a NO ACTION foreign key) never change."""
    dev, prod = make_db("dev"), make_db("prod")  # fresh: no sync state of an earlier example
    p = write_project(tmp_path / uuid.uuid4().hex, {"dev": dev, "prod": prod})
    perm = data.draw(st.permutations(list(range(n))))
    gone = data.draw(st.sets(st.integers(0, n - 1), max_size=n // 2))
    new = data.draw(st.integers(0, 3))
    for dsn in p.dsns.values():
        sql(dsn, "CREATE TABLE u (id int PRIMARY KEY, v int UNIQUE)")
        sql(dsn, "INSERT INTO u SELECT g, g FROM generate_series(0, %s) g", [n - 1])
        sql(dsn, "CREATE TABLE c (id int PRIMARY KEY, u_id int NOT NULL REFERENCES u)")
        kept = [i for i in range(n) if i not in gone]
        sql(
            dsn,
            "INSERT INTO c SELECT g, (%s::int[])[1 + g %% %s] FROM generate_series(0, 29) g",
            [kept, len(kept)],
        )
    before = snapshot(p.dsns["prod"], ("u", "c"))
    with psycopg.connect(p.dsns["dev"]) as c:
        c.execute("UPDATE u SET v = -1 - v")
        for i, v in enumerate(perm):
            c.execute("UPDATE u SET v = %s WHERE id = %s", [v, i])
        c.execute("DELETE FROM u WHERE id = ANY(%s)", [sorted(gone)])
        freed = sorted(perm[i] for i in gone)
        for j, v in enumerate(freed[:new]):
            c.execute("INSERT INTO u VALUES (%s, %s)", [100 + j, v])
    r = run(cli, p, "sync", "dev", "prod", "--yes", "--batch-size", str(batch))
    assert r.code == 0, r.out + r.err
    assert snapshot(p.dsns["prod"], ("u", "c")) == snapshot(p.dsns["dev"], ("u", "c"))
    assert snapshot(p.dsns["prod"], ("c",))["c"] == before["c"]
    if snapshot(p.dsns["dev"], ("u",))["u"] == before["u"]:
        return  # nothing moved: the run wrote nothing, and has nothing to revert
    rev = run(cli, p, "sync", "revert", r.json["run_id"], "--env", "prod", "--yes")
    assert rev.code == 0, rev.out + rev.err
    assert snapshot(p.dsns["prod"], ("u", "c")) == before


def test_a_role_that_may_not_delete_keeps_the_swap_as_dead_letters(
    tmp_path: Path,
    make_db: Callable[..., str],
    cli: Callable[..., Result],
    pg_admin_dsn: str,
    login_role: str,
) -> None:
    """A role that may insert and update ``users`` but not delete from it (rows are
    never deleted there: ``deletes = false``): no replace is tried, the rest of the
    table is written, and the dead letters say why."""
    p = pair(tmp_path, make_db, SCHEMA, '[sync.tables."public.users"]\ndeletes = false\n')
    assert run(cli, p, "sync", "dev", "prod", "--yes").code == 0  # the owner makes pgferry's
    writer = login_role
    w = q.Identifier(writer)
    sql(
        p.dsns["prod"],
        q.SQL(
            "GRANT USAGE ON SCHEMA pgferry TO {w}; GRANT ALL ON ALL TABLES IN SCHEMA pgferry "
            "TO {w}; GRANT ALL ON ALL SEQUENCES IN SCHEMA pgferry TO {w}; "
            "GRANT SELECT, INSERT, UPDATE ON users TO {w}"
        ).format(w=w),
    )
    db = str(psycopg.conninfo.conninfo_to_dict(p.dsns["prod"])["dbname"])
    as_writer = write_project(
        tmp_path / "w",
        {"dev": p.dsns["dev"], "prod": embedded.role_dsn(pg_admin_dsn, writer, db)},
        extra='[sync.tables."public.users"]\ndeletes = false\n',
    )
    sql(
        p.dsns["dev"],
        "BEGIN; UPDATE users SET email = 'tmp' WHERE id = 1; UPDATE users SET email = 'u1@x' "
        "WHERE id = 2; UPDATE users SET email = 'u2@x' WHERE id = 1; "
        "UPDATE users SET name = 'renamed' WHERE id = 5; COMMIT",
    )
    r = run(cli, as_writer, "sync", "dev", "prod", "--yes", "--tables", "public.users")
    assert r.code == 1, r.out + r.err
    users = by_table(r)["public.users"]
    assert sorted(d["key"]["id"] for d in users["dead_letters"]) == [1, 2]
    assert all("may not delete from the table" in d["error"] for d in users["dead_letters"])
    assert users["updated"] == 1
    names: dict[int, str] = dict(
        psycopg.connect(p.dsns["prod"]).execute("SELECT id, name FROM users").fetchall()
    )
    assert names[5] == "renamed"


def test_a_swap_by_watermark_is_written(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """The watermark strategy reads the rows changed since its mark: both rows of a swap,
    in one batch or two, are written (the rows put aside wait for the table's end)."""
    conf = '[sync]\noverlap = "0s"\n[sync.tables."public.slots"]\nwatermark = "updated_at"\n'
    p = pair(tmp_path, make_db, "", conf)
    for dsn in p.dsns.values():
        sql(
            dsn,
            "CREATE TABLE slots (id int PRIMARY KEY, pos int NOT NULL UNIQUE, "
            "updated_at timestamptz NOT NULL DEFAULT clock_timestamp()); "
            "INSERT INTO slots (id, pos) SELECT g, g FROM generate_series(1, 50) g",
        )
    first = run(cli, p, "sync", "dev", "prod", "--yes", "--tables", "public.slots")
    assert first.code == 0, first.out + first.err
    sql(
        p.dsns["dev"],
        "BEGIN; UPDATE slots SET pos = -pos, updated_at = clock_timestamp() WHERE id <= 10; "
        "UPDATE slots SET pos = 11 + pos WHERE id <= 10; COMMIT",  # 1..10 reversed
    )
    r = run(cli, p, "sync", "dev", "prod", "--yes", "--tables", "public.slots", "--batch-size", "3")
    assert r.code == 0, r.out + r.err
    slots = by_table(r)["public.slots"]
    assert (slots["strategy"], slots["updated"], slots["dead_lettered"]) == ("watermark", 10, 0)
    assert snapshot(p.dsns["prod"], ("slots",)) == snapshot(p.dsns["dev"], ("slots",))

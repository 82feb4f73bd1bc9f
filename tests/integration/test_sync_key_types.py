"""Keys of types psycopg has no loader for (citext, an enum, pg_lsn) or cannot hold
('infinity' dates and timestamps), and keys whose equality is looser than identity,
through every step of a sync that reads keys back, conflict tracking included.

psycopg reads a value of a type it does not know, in binary, as the raw bytes of its
binary form; sent back as a parameter those bytes are a bytea. So a key list built from
such keys matched nothing: a citext-keyed table's changes found by key were neither
written nor deleted while the sync said ok, and an enum or pg_lsn key failed every sync
of its table ("cannot cast type bytea[] to mood[]"); an 'infinity' date key failed
every verify and sync of its table ("date too small").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgferry.config import load_config
from pgferry.pg.connect import Target
from pgferry.sync import engine
from tests.helpers.sync import ddl_pair

DDL = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE people (email citext PRIMARY KEY, name text);
CREATE TABLE moods (k mood PRIMARY KEY, v int);
CREATE TABLE lsns (k pg_lsn PRIMARY KEY, v int);
CREATE TABLE pairs (m mood, c citext, v int, PRIMARY KEY (m, c));
CREATE TABLE periods (k interval PRIMARY KEY, v int);
CREATE TABLE days (d date, at timestamptz, v int, PRIMARY KEY (d, at));
"""

ROWS = """
INSERT INTO people SELECT 'user' || g || '@x.org', 'n' FROM generate_series(1, 600) g;
INSERT INTO moods VALUES ('sad', 1), ('ok', 1), ('happy', 1);
INSERT INTO lsns SELECT (g || '/0')::pg_lsn, 1 FROM generate_series(1, 300) g;
INSERT INTO pairs SELECT (ARRAY['sad', 'ok', 'happy']::mood[])[1 + g % 3], 'K' || g, 1
FROM generate_series(1, 600) g;
INSERT INTO periods SELECT make_interval(days => g), 1 FROM generate_series(1, 100) g;
INSERT INTO days SELECT '2026-01-01'::date + g, '2026-01-01 12:00+00', 1
FROM generate_series(1, 200) g;
INSERT INTO days VALUES ('infinity', 'infinity', 1), ('-infinity', '-infinity', 1);
"""

#: on the source: changes, deletes and inserts scattered over the key space; on the
#: target: a change the sync overwrites, and keys spelled otherwise (equal, not identical)
SOURCE = """
UPDATE people SET name = 'changed' WHERE email IN ('user5@x.org', 'user300@x.org');
DELETE FROM people WHERE email IN ('user7@x.org', 'user512@x.org');
INSERT INTO people VALUES ('new@x.org', 'n');
UPDATE moods SET v = 2 WHERE k = 'ok';
UPDATE lsns SET v = 2 WHERE k = '3/0'; DELETE FROM lsns WHERE k = '250/0';
UPDATE pairs SET v = 2 WHERE c = 'K7'; DELETE FROM pairs WHERE c IN ('K8', 'K400');
UPDATE periods SET k = '1 mon' WHERE k = '30 days';
UPDATE days SET v = 2 WHERE d IN ('infinity', '-infinity', '2026-03-01');
"""
TARGET = """
UPDATE people SET name = 'prod' WHERE email = 'user9@x.org';
UPDATE people SET email = 'USER11@x.org' WHERE email = 'user11@x.org';
UPDATE pairs SET c = 'k20' WHERE c = 'K20';
"""

TABLES = ("people", "moods", "lsns", "pairs", "periods", "days")


def _text(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as c:
        c.execute("SET IntervalStyle = 'postgres'")
        return {
            t: c.execute(f"SELECT x::text FROM {t} x ORDER BY x::text").fetchall()  # noqa: S608
            for t in TABLES
        }


@pytest.mark.parametrize("target", ["18", "15", "13"])
def test_keys_psycopg_cannot_read_are_matched_written_and_deleted(
    tmp_path: Path,
    make_db: Callable[..., str],
    request: pytest.FixtureRequest,
    target: str,
) -> None:
    make_prod = make_db if target == "18" else request.getfixturevalue(f"make_db{target}")
    config, dev, prod = ddl_pair(tmp_path, make_db, DDL, make_target=make_prod)
    for dsn, extra in ((dev, SOURCE), (prod, TARGET)):
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(ROWS)
            c.execute(extra)
    cfg = load_config(config)
    source, tgt = Target("dev", dev), Target("prod", prod)
    # small chunks: the key ranges are cut at keys read back from the server (bisection)
    opts = {"chunk_rows": 40, "key_limit": 4}
    found = engine.run(cfg, source, tgt, engine.Options(mode="verify", **opts))  # type: ignore[arg-type]
    assert found.exit_code == 1, found.to_dict()
    res = engine.run(cfg, source, tgt, engine.Options(mode="incremental", **opts))  # type: ignore[arg-type]
    assert res.exit_code == 0, res.to_dict()
    people = res.table("public.people")
    # user5, user300, user9 rewritten; new@x.org in; user7, user512 out; USER11 written
    # back as user11 (in place or as a delete and an insert)
    assert people.updated + people.inserted >= 4 and people.deleted >= 2, people
    assert _text(prod) == _text(dev)
    after = engine.run(cfg, source, tgt, engine.Options(mode="verify", **opts))  # type: ignore[arg-type]
    assert after.exit_code == 0, after.to_dict()
    # a second sync reads the conflicts base: a row both sides changed is a conflict
    # (the source wins on an unprotected target), one only the source changed is not
    with psycopg.connect(dev, autocommit=True) as c:
        c.execute("UPDATE people SET name = 'dev' WHERE email IN ('user20@x.org', 'user21@x.org')")
        c.execute("UPDATE days SET v = 3 WHERE d = 'infinity'")
    with psycopg.connect(prod, autocommit=True) as c:
        c.execute("UPDATE people SET name = 'ops' WHERE email = 'user20@x.org'")
        c.execute("UPDATE days SET v = 4 WHERE d = 'infinity'")
    res = engine.run(cfg, source, tgt, engine.Options(mode="incremental", **opts))  # type: ignore[arg-type]
    assert res.exit_code == 0, [(x.table, x.error) for x in res.tables]
    assert (res.table("public.people").conflicts, res.table("public.days").conflicts) == (1, 1)
    assert _text(prod) == _text(dev)


def test_a_respelled_citext_key_is_rewritten_in_place_keeping_what_references_it(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    # 'Ann@x' on the source, 'ann@x' on the target: one key to the server, two to the
    # comparison. Deleting 'ann@x' and inserting 'Ann@x' would take the target's own
    # orders of it (ON DELETE CASCADE; deletes = false keeps them otherwise) with it
    ddl = (
        "CREATE EXTENSION IF NOT EXISTS citext;"
        "CREATE TABLE people (email citext PRIMARY KEY, name text);"
        "CREATE TABLE orders (id int PRIMARY KEY,"
        " email citext REFERENCES people ON DELETE CASCADE ON UPDATE CASCADE);"
        "INSERT INTO people SELECT 'u' || g || '@x', 'n' FROM generate_series(1, 50) g;"
    )
    config, dev, prod = ddl_pair(tmp_path, make_db, ddl)
    with open(config, "a", encoding="utf-8") as f:
        f.write('\n[sync.tables."public.orders"]\ndeletes = false\n')
    with psycopg.connect(dev, autocommit=True) as c:
        c.execute("UPDATE people SET email = 'U7@x', name = 'seven' WHERE email = 'u7@x'")
    with psycopg.connect(prod, autocommit=True) as c:
        c.execute("INSERT INTO orders VALUES (1, 'u7@x'), (2, 'u8@x')")  # the target's own
    cfg = load_config(config)
    source, tgt = Target("dev", dev), Target("prod", prod)
    res = engine.run(cfg, source, tgt, engine.Options(mode="incremental"))
    assert res.exit_code == 0, [(t.table, t.error) for t in res.tables]
    people = res.table("public.people")
    assert (people.updated, people.inserted, people.deleted) == (1, 0, 0), people
    with psycopg.connect(prod) as c:
        assert c.execute("SELECT name FROM people WHERE email::text = 'U7@x'").fetchall() == [
            ("seven",)
        ]
        assert c.execute("SELECT id, email::text FROM orders ORDER BY id").fetchall() == [
            (1, "U7@x"),  # ON UPDATE CASCADE carried the new spelling
            (2, "u8@x"),
        ]

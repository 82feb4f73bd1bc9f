"""Before-images and ``pgferry sync revert`` on a real server (issue 9, item 11)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.helpers import Project, Result, sql, write_project

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, born date,
                        tags text[], doc jsonb, score float8,
                        id2 bigint GENERATED ALWAYS AS IDENTITY);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                     amount numeric(12, 2), at timestamptz,
                     total numeric GENERATED ALWAYS AS (amount * 2) STORED);
"""
DEV = """
INSERT INTO customers (id, name, born, tags, doc, score, id2) OVERRIDING SYSTEM VALUE
SELECT g, 'c' || g, date '1990-01-01' + g, ARRAY['a', 'b' || g], jsonb_build_object('g', g),
       g / 3.0, g FROM generate_series(1, 60) g;
INSERT INTO orders (id, customer_id, amount, at)
SELECT g, 1 + g % 60, g * 1.5, timestamptz '2026-01-01 00:00+00' + g * interval '1 h'
FROM generate_series(1, 300) g;
"""
PROD = """
INSERT INTO customers (id, name, born, tags, doc, score, id2) OVERRIDING SYSTEM VALUE
SELECT g, CASE WHEN g % 10 = 0 THEN 'old' || g ELSE 'c' || g END, date '1990-01-01' + g,
       ARRAY['a', 'b' || g], jsonb_build_object('g', g), g / 3.0, g
FROM generate_series(20, 80) g;
INSERT INTO orders (id, customer_id, amount, at)
SELECT g, 20 + g % 60, g * 1.5, timestamptz '2026-01-01 00:00+00' + g * interval '1 h'
FROM generate_series(250, 400) g;
"""


def snapshot(dsn: str) -> dict[str, list[str]]:
    with psycopg.connect(dsn) as c:
        c.execute("SET TimeZone = 'UTC'; SET extra_float_digits = 3")
        return {
            t: sorted(r[0] for r in c.execute(f"SELECT x::text FROM {t} x"))  # noqa: S608
            for t in ("customers", "orders")
        }


def run(cli: Callable[..., Result], p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), "--json", *args)


@pytest.fixture
def proj(tmp_path: Path, make_db: Callable[..., str]) -> Project:
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "prod": make_db("prod"), "qa": make_db("qa")},
        protected=("prod",),
    )
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    sql(p.dsns["dev"], DEV)
    sql(p.dsns["prod"], PROD)
    return p


def test_revert_puts_every_row_back(proj: Project, cli: Callable[..., Result]) -> None:
    before = snapshot(proj.dsns["prod"])
    r = run(cli, proj, "sync", "dev", "prod", "--yes")
    assert r.code == 0, r.out + r.err
    run_id = r.json["run_id"]
    by = {t["table"]: t for t in r.json["tables"]}
    assert by["public.customers"]["before_images"] is True
    assert (
        by["public.customers"]["inserted"],
        by["public.customers"]["updated"],
        by["public.customers"]["deleted"],
    ) == (19, 5, 20)
    assert snapshot(proj.dsns["prod"]) == snapshot(proj.dsns["dev"])
    # protected: --yes needed; a dry run changes nothing
    assert run(cli, proj, "sync", "revert", run_id).code == 4
    r = run(cli, proj, "sync", "revert", run_id, "--dry-run")
    # customers: 19 inserted, 20 deleted, 5 updated; orders: 249, 100 and 51
    assert r.code == 0 and r.json["totals"] == {
        "removed": 19 + 249,
        "reinserted": 20 + 100,
        "restored": 5 + 51,
    }
    assert snapshot(proj.dsns["prod"]) == snapshot(proj.dsns["dev"])
    r = run(cli, proj, "sync", "revert", run_id, "--yes")  # the env is found by the run id
    assert r.code == 0, r.out + r.err
    assert snapshot(proj.dsns["prod"]) == before
    with psycopg.connect(proj.dsns["prod"]) as c:
        assert c.execute(
            "SELECT count(*) FROM pgferry.before_images WHERE run_id = %s", [run_id]
        ).fetchone() == (0,)
        assert c.execute(
            "SELECT command, outcome FROM pgferry.journal ORDER BY id DESC LIMIT 1"
        ).fetchone() == ("sync revert", "ok")
    # reverted once: a second time says what happened
    r = run(cli, proj, "sync", "revert", run_id, "--env", "prod", "--yes")
    assert r.code == 2 and "reverted already" in r.err


def test_revert_refuses_when_a_row_changed_since(proj: Project, cli: Callable[..., Result]) -> None:
    r = run(cli, proj, "sync", "dev", "prod", "--yes")
    run_id = r.json["run_id"]
    sql(proj.dsns["prod"], "UPDATE customers SET name = 'fixed by hand' WHERE id = 30")
    after = snapshot(proj.dsns["prod"])
    r = run(cli, proj, "sync", "revert", run_id, "--env", "prod", "--yes")
    assert r.code == 4, r.out + r.err
    assert "public.customers: 1 row(s) changed since sync run" in r.err
    assert '"id": 30' in r.err and "nothing was reverted" in r.err
    assert snapshot(proj.dsns["prod"]) == after
    # a row the run deleted, inserted again by someone: also a change
    sql(
        proj.dsns["prod"],
        "UPDATE customers SET name = 'c30' WHERE id = 30;"
        "INSERT INTO customers (id, name) VALUES (80, 'back')",
    )
    r = run(cli, proj, "sync", "revert", run_id, "--env", "prod", "--yes")
    assert r.code == 4 and '"id": 80' in r.err


def test_images_only_where_asked_and_they_expire(proj: Project, cli: Callable[..., Result]) -> None:
    r = run(cli, proj, "sync", "dev", "qa")  # unprotected: none by default
    assert r.code == 0
    with psycopg.connect(proj.dsns["qa"]) as c:
        assert c.execute("SELECT count(*) FROM pgferry.before_images").fetchone() == (0,)
    proj.config.write_text(
        proj.config.read_text(encoding="utf-8") + "\n[sync]\nkeep_before_images = true\n",
        encoding="utf-8",
    )
    sql(proj.dsns["dev"], "UPDATE customers SET name = name || '!' WHERE id <= 3")
    r = run(cli, proj, "sync", "dev", "qa")
    assert r.json["tables"][0]["updated"] == 3
    with psycopg.connect(proj.dsns["qa"], autocommit=True) as c:
        assert c.execute("SELECT count(*), min(action) FROM pgferry.before_images").fetchone() == (
            3,
            "update",
        )
        c.execute("UPDATE pgferry.before_images SET at = now() - interval '15 days'")
    sql(proj.dsns["dev"], "UPDATE customers SET name = name || '?' WHERE id = 4")
    run(cli, proj, "sync", "dev", "qa")  # expires the 15-day-old ones (default 14d)
    with psycopg.connect(proj.dsns["qa"]) as c:
        assert c.execute("SELECT count(*) FROM pgferry.before_images").fetchone() == (1,)


def test_revert_of_a_load_into_empty_tables(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")})
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    sql(p.dsns["dev"], DEV)
    r = run(cli, p, "sync", "dev", "prod", "--yes")  # the COPY fast path
    assert r.code == 0 and r.json["tables"][0]["inserted"] == 60
    assert run(cli, p, "sync", "revert", r.json["run_id"], "--yes").code == 0
    assert snapshot(p.dsns["prod"]) == {"customers": [], "orders": []}


def test_unknown_run(proj: Project, cli: Callable[..., Result]) -> None:
    r = run(cli, proj, "sync", "revert", "nosuchrun", "--yes")
    assert r.code == 2 and "no environment holds before-images of sync run 'nosuchrun'" in r.err


KEYED = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE people (email citext PRIMARY KEY, name text);
CREATE TABLE days (d date, m mood, v int, PRIMARY KEY (d, m));
INSERT INTO people SELECT 'user' || g || '@x.org', 'n' FROM generate_series(1, 40) g;
INSERT INTO days SELECT '2026-01-01'::date + g, 'ok', 1 FROM generate_series(1, 40) g;
INSERT INTO days VALUES ('infinity', 'sad', 1), ('-infinity', 'happy', 1);
"""


@pytest.mark.parametrize("mode", ["incremental", "full"])
def test_revert_puts_back_rows_keyed_by_citext_enums_and_infinity(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result], mode: str
) -> None:
    # a key only spelled otherwise ('USER3@x.org' for 'user3@x.org') is written by the sync
    # (in place, or as a delete and an insert) and must come back as it was spelled
    p = write_project(tmp_path / "p", {"dev": make_db("kdev"), "prod": make_db("kprod")})
    for dsn in p.dsns.values():
        sql(dsn, KEYED)
    sql(
        p.dsns["prod"],
        "UPDATE people SET email = 'USER3@x.org' WHERE email = 'user3@x.org';"
        "UPDATE people SET name = 'prod' WHERE email = 'user4@x.org';"
        "DELETE FROM people WHERE email = 'user5@x.org';"
        "UPDATE days SET v = 9 WHERE d = 'infinity'; DELETE FROM days WHERE d = '-infinity'",
    )
    sql(p.dsns["dev"], "INSERT INTO people VALUES ('new@x.org', 'n')")

    def text(dsn: str) -> list[list[str]]:
        with psycopg.connect(dsn) as c:
            return [
                sorted(r[0] for r in c.execute(f"SELECT x::text FROM {t} x"))  # noqa: S608
                for t in ("people", "days")
            ]

    before = text(p.dsns["prod"])
    r = run(cli, p, "sync", "dev", "prod", "--yes", "--mode", mode)
    assert r.code == 0, r.out + r.err
    assert text(p.dsns["prod"]) == text(p.dsns["dev"])
    r = run(cli, p, "sync", "revert", r.json["run_id"], "--yes")
    assert r.code == 0, r.out + r.err
    assert text(p.dsns["prod"]) == before

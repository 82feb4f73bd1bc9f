"""Sync and verify between two server versions: PostgreSQL 18 (embedded) and 15 (Debian's)
or 13 (the npm registry's build; Debian bookworm has none), both directions.

Every hash the comparison uses must exist on both servers and give the same value
for the same data there; PostgreSQL 13 has no ``bit_xor``, so its side combines row
hashes another way to the same XOR. Skips, naming what to install, where the older
server cannot be had (``.ci/run`` installs 15 and fetches 13).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.helpers import Result, write_project

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE wide (
    id bigint PRIMARY KEY, i int, s smallint, b boolean, n numeric, f float8, r real,
    t text, v varchar(20), c char(4), by bytea, d date, ts timestamp, tz timestamptz,
    tm time, ttz timetz, iv interval, u uuid, j jsonb, js json, a int[], ta text[],
    m mood, ip inet, mn money, big bigint, i8a bigint[], na numeric[], tza timestamptz[]
);
CREATE TABLE pair_key (a text, b date, x int, PRIMARY KEY (a, b));
CREATE TABLE bkey (k bytea PRIMARY KEY, v int);
"""

DATA = """
INSERT INTO wide SELECT g, g * 7, (g % 300)::smallint, g % 2 = 0, g * 1.000001 - 500,
    g / 3.0::float8, g / 7.0::real, 'text ' || g, 'v' || g, 'c' || (g % 10),
    int8send(g::bigint), date '2000-01-01' + g, timestamp '2020-01-01' + g * interval '1 min',
    timestamptz '2020-01-01 00:00+00' + g * interval '1 second 1 microsecond',
    time '00:00' + g * interval '1 second', timetz '12:00+02', g * interval '1 day 1 hour',
    md5(g::text)::uuid, jsonb_build_object('g', g, 'k', 'v'), ('{"g": ' || g || '}')::json,
    ARRAY[g, g + 1], ARRAY['x' || g], (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood,
    ('10.0.' || (g % 250) || '.1')::inet, (g * 1.25)::money, g * 4294967296 + 5,
    ARRAY[g * 4294967296 + 5, g], ARRAY[g - 1500.5],
    ARRAY[timestamptz '2020-01-01' + g * interval '1 s']
FROM generate_series(1, 3000) g;
INSERT INTO wide (id, n, f, tz, by, big) VALUES
    (-1, 'NaN', 'NaN', 'infinity', '\\x', -9223372036854775808),
    (-2, '-0.5', '-0', '-infinity', NULL, 9223372036854775807),
    (-3, '0.5', 'Infinity', '9999-12-31 23:59:59.999999+00', '\\x00', 0);
INSERT INTO pair_key SELECT 'k' || (g % 50), date '2020-01-01' + g, g
FROM generate_series(1, 2000) g;
INSERT INTO bkey SELECT int4send(g), g FROM generate_series(1, 500) g;
"""

CHANGES = """
UPDATE wide SET big = big + 1 WHERE id = 10;          -- a 64-bit value by one
UPDATE wide SET tz = tz + interval '1 microsecond' WHERE id = 20;
UPDATE wide SET by = '\\x01' WHERE id = -3;
UPDATE wide SET n = 'Infinity' WHERE id = -1;         -- NaN -> Infinity
UPDATE wide SET tz = '9999-12-31 23:59:59.999990+00' WHERE id = -3;
UPDATE wide SET m = 'happy' WHERE id = 30;           -- an enum label ('sad' before)
DELETE FROM wide WHERE id = 40;
INSERT INTO wide (id, t) VALUES (5000, 'new');
UPDATE pair_key SET x = -x WHERE a = 'k7';
UPDATE wide SET i8a = ARRAY[i8a[1] + 1, i8a[2]] WHERE id = 50;   -- 64-bit array elements
UPDATE wide SET na = ARRAY[-na[1]] WHERE id = 60;                -- a numeric array's sign
UPDATE wide SET tza = ARRAY[tza[1] + interval '1 microsecond'] WHERE id = 70;
UPDATE bkey SET v = -v WHERE k = int4send(7);                     -- bytea keys
DELETE FROM bkey WHERE k = int4send(8);
"""


def _sql(dsn: str, text: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(text)


def _rows(dsn: str, table: str) -> list[str]:
    """Every row as the server's text (the same settings on both), sorted."""
    with psycopg.connect(dsn) as c:
        c.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 3")
        return sorted(r[0] for r in c.execute(f"SELECT x::text FROM {table} x"))  # noqa: S608


@pytest.mark.parametrize(
    ("old", "direction"), [(15, "18->old"), (15, "old->18"), (13, "18->old"), (13, "old->18")]
)
def test_verify_and_sync_between_versions(
    old: int,
    direction: str,
    tmp_path: Path,
    make_db: Callable[..., str],
    request: pytest.FixtureRequest,
    cli: Callable[..., Result],
) -> None:
    v18, vold = make_db("v18"), request.getfixturevalue(f"make_db{old}")(f"v{old}")
    src, tgt = (v18, vold) if direction == "18->old" else (vold, v18)
    with psycopg.connect(vold) as co, psycopg.connect(v18) as c18:
        assert co.info.server_version // 10000 == old and c18.info.server_version // 10000 == 18
    p = write_project(tmp_path / "p", {"a": src, "b": tgt}, protected=())
    for dsn in (src, tgt):
        _sql(dsn, SCHEMA)
    _sql(src, DATA)

    def run(*args: str) -> Result:
        return cli("--config", str(p.config), "--json", *args)

    r = run("sync", "a", "b", "--mode", "full")
    assert r.code == 0, r.err + r.out
    for t in ("wide", "pair_key", "bkey"):
        assert _rows(src, t) == _rows(tgt, t)
    r = run("verify", "a", "b")
    assert r.code == 0, r.out  # identical data hashes alike on both versions
    assert r.json["totals"]["matched"] == 3003 + 2000 + 500

    changes = CHANGES
    if src == vold and old < 14:  # 13 has no numeric infinity: NaN -> a tiny number there
        changes = CHANGES.replace("SET n = 'Infinity'", "SET n = '1e-20'")
    _sql(src, changes)
    r = run("verify", "a", "b")
    assert r.code == 1
    by = {t["table"]: t for t in r.json["tables"]}
    keys = sorted(k["key"]["id"] for k in by["public.wide"]["first_differing_keys"])
    assert keys == [-3, -1, 10, 20, 30, 40, 50, 60, 70, 5000], by["public.wide"]
    assert by["public.pair_key"]["differing"] == 40
    assert (
        by["public.bkey"]["differing"],
        by["public.bkey"]["only_in_source"],
        by["public.bkey"]["only_in_target"],
    ) == (1, 0, 1)

    r = run("sync", "a", "b")  # incremental: the checksum strategy across versions
    by = {t["table"]: t for t in r.json["tables"]}
    if tgt == vold and old < 14:
        # numeric 'Infinity' (new in 14) cannot be held by 13: that row is a dead letter
        # (exit 1), every other change is written, and verify still finds the one row
        assert r.code == 1, r.err + r.out
        w = by["public.wide"]
        assert [d["key"] for d in w["dead_letters"]] == [{"id": -1}], w
        assert w["dead_letters"][0]["sqlstate"] == "22P02"
        assert (w["updated"], w["inserted"], w["deleted"]) == (7, 1, 1), w
        assert (by["public.bkey"]["updated"], by["public.bkey"]["deleted"]) == (1, 1)
        for t in ("pair_key", "bkey"):
            assert _rows(src, t) == _rows(tgt, t)
        differ = set(_rows(src, "wide")) ^ set(_rows(tgt, "wide"))
        assert len(differ) == 2 and all(x.startswith("(-1,") for x in differ), differ
        r = run("verify", "a", "b")
        assert r.code == 1 and r.json["totals"]["differing"] == 1, r.out
        return
    assert r.code == 0, r.err + r.out
    assert (
        by["public.wide"]["updated"],
        by["public.wide"]["inserted"],
        by["public.wide"]["deleted"],
    ) == (8, 1, 1)
    assert (by["public.bkey"]["updated"], by["public.bkey"]["deleted"]) == (1, 1)
    for t in ("wide", "pair_key", "bkey"):
        assert _rows(src, t) == _rows(tgt, t)
    assert run("verify", "a", "b").code == 0


@pytest.mark.parametrize("direction", ["18->13", "13->18"])
def test_conflicts_revert_and_watermark_with_postgresql_13(
    direction: str,
    tmp_path: Path,
    make_db: Callable[..., str],
    make_db13: Callable[..., str],
    cli: Callable[..., Result],
) -> None:
    """A protected target on either side of 13: the conflict base, the stop, the source
    winning with before-images, `sync revert`, and the watermark strategy's fence."""
    v18, v13 = make_db("v18"), make_db13("v13")
    dev, prod = (v18, v13) if direction == "18->13" else (v13, v18)
    p = write_project(
        tmp_path / "p",
        {"dev": dev, "prod": prod},
        extra=(
            '[sync.tables."public.ev"]\nstrategy = "watermark"\nwatermark = "at"\n'
            '[sync]\noverlap = "0s"\n'
        ),
    )
    for dsn in (dev, prod):
        _sql(
            dsn,
            "CREATE TABLE c (id int PRIMARY KEY, v text);"
            "CREATE TABLE ev (id int PRIMARY KEY, v text,"
            " at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
    _sql(
        dev,
        "INSERT INTO c SELECT g, 'v' || g FROM generate_series(1, 500) g;"
        "INSERT INTO ev (id, v) SELECT g, 'e' || g FROM generate_series(1, 300) g",
    )

    def run(*args: str) -> Result:
        return cli("--config", str(p.config), "--json", *args)

    r = run("sync", "dev", "prod", "--yes")
    assert r.code == 0, r.err + r.out
    _sql(prod, "UPDATE c SET v = 'fixed in prod' WHERE id = 7")
    _sql(
        dev,
        "UPDATE c SET v = 'changed in dev' WHERE id = 7;"
        "UPDATE c SET v = 'dev only' WHERE id = 8;"
        "INSERT INTO ev (id, v) VALUES (301, 'late')",
    )
    r = run("sync", "dev", "prod", "--yes")
    by = {t["table"]: t for t in r.json["tables"]}
    assert r.code == 1 and by["public.c"]["status"] == "conflicts", r.out
    assert by["public.c"]["conflicts"] == 1 and by["public.ev"]["inserted"] == 1
    assert _rows(prod, "c") != _rows(dev, "c")  # stopped: c left as it was
    r = run("sync", "dev", "prod", "--yes", "--on-conflict", "source")
    assert r.code == 0, r.out
    assert _rows(prod, "c") == _rows(dev, "c") and _rows(prod, "ev") == _rows(dev, "ev")
    r = run("sync", "revert", r.json["run_id"], "--env", "prod", "--yes")
    assert r.code == 0, r.err + r.out
    with psycopg.connect(prod) as c:
        assert c.execute("SELECT v FROM c WHERE id IN (7, 8) ORDER BY id").fetchall() == [
            ("fixed in prod",),
            ("v8",),
        ]


@pytest.mark.parametrize(
    ("old", "columns", "version"),
    [
        (15, "a bigint[], n numeric", 2),
        (13, "a bigint[], n numeric", 3),
        # every column hashed by its own function: version 3 on any servers
        (15, "a int, n numeric", 3),
        # ... but not date and bool, whose hash functions SQL cannot call on 15
        (15, "a date, n bool", 2),
    ],
)
def test_both_sides_hash_with_the_version_the_older_server_has(
    old: int,
    columns: str,
    version: int,
    make_db: Callable[..., str],
    request: pytest.FixtureRequest,
) -> None:
    """hash_record_extended is new in 14: with a 13 side both sides use version 3 (and so
    does a table whose columns version 3 hashes each by its own function)."""
    from pgferry.sync import sides

    v18, vold = make_db("h18"), request.getfixturevalue(f"make_db{old}")(f"h{old}")
    for dsn in (v18, vold):
        _sql(dsn, f"CREATE TABLE t (id bigint PRIMARY KEY, {columns})")
    with psycopg.connect(v18) as a, psycopg.connect(vold) as b:
        for x, y in ((a, b), (b, a)):
            s1, s2 = sides.agree(
                sides.side(x, "public", "t", ["id"], ["id", "a", "n"]),
                sides.side(y, "public", "t", ["id"], ["id", "a", "n"]),
            )
            assert s1.hash_version == s2.hash_version == version
            assert s1.record_hash == s2.record_hash == (old >= 14)
            for s, conn in ((s1, x), (s2, y)):
                text = s.row_hash().as_string(conn)
                assert ("hash_record_extended" in text) == (version == 2)
                # every hash the comparison uses runs on its own server
                conn.execute(sql_of(s, conn)).fetchall()


def sql_of(s: object, conn: psycopg.Connection[object]) -> str:
    from psycopg import sql as S

    from pgferry.sync.sides import Side

    assert isinstance(s, Side)
    lateral, x = s.hashed()
    return (
        S.SQL("SELECT count(*), {x}, bit_or({k}) FROM {t} {lat}")
        .format(x=x, k=s.key_hash(), t=s.table, lat=lateral)
        .as_string(conn)
    )

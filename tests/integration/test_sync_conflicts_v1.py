"""A conflicts base written in another row hash version still finds conflicts.

The row hash changed twice (issue 16): version 1 of earlier releases became one
``hash_record_extended`` call per row (version 2), and a table whose every column is
hashed by its own function (this one: int, text, numeric) is now hashed in version 3.
A base made with an older hash is read with that hash, so the first sync after an
upgrade never overwrites a target change silently; then it is rebuilt with the
comparison's (or kept in the old one while it holds kept rows).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as S

from pgferry.sync import conflict_base, sides
from pgferry.sync.plan import TablePlan
from tests.helpers import Project, Result, sql, write_project

SCHEMA = "CREATE TABLE ref (id int PRIMARY KEY, label text NOT NULL, rate numeric(6, 2));"
DATA = "INSERT INTO ref SELECT g, 'label ' || g, g / 10.0 FROM generate_series(1, 50) g;"


def rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT * FROM ref ORDER BY id").fetchall()


def label(dsn: str, key: int) -> Any:
    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT label FROM ref WHERE id = %s", [key]).fetchone()
        return row[0] if row else None


@pytest.fixture
def proj(tmp_path: Path, make_db: Callable[..., str]) -> Project:
    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "qa": make_db("qa")}, protected=())
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    sql(p.dsns["dev"], DATA)
    return p


def run(cli: Callable[..., Result], p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), "--json", *args)


def ref(r: Result) -> dict[str, Any]:
    tables: dict[str, dict[str, Any]] = {t["table"]: t for t in r.json["tables"]}
    return tables["public.ref"]


def _plan(qualname: str = "public.ref") -> TablePlan:
    return TablePlan(
        schema="public",
        name="ref",
        qualname=qualname,
        key=("id",),
        columns=["id", "label", "rate"],
        mode="incremental",
        strategy="checksum",
    )


def _spec(dsn: str) -> Any:
    with psycopg.connect(dsn) as c:
        row = c.execute(
            "SELECT checkpoint FROM pgferry.sync_state WHERE table_name = "
            "'public.ref' AND strategy = 'base'"
        ).fetchone()
        return row[0]["spec"] if row else None


def make_old(dsn: str, version: int) -> None:
    """Turn the base of public.ref into what an earlier release wrote (``version``'s hashes
    and spec)."""
    t = _plan()
    with psycopg.connect(dsn) as c:
        s, _ = sides.agree(*(sides.side(c, "public", "ref", ["id"], t.columns),) * 2)
        base = conflict_base.base_ident("dev", t)
        # the hash in a subquery of its own: its column names are the table's, unqualified
        c.execute(
            S.SQL(
                "UPDATE {} b SET pgferry_h = r.pgferry_old FROM (SELECT id AS "
                "pgferry_id, {} AS pgferry_old FROM ref) r WHERE r.pgferry_id = b.id"
            ).format(base, s.row_hash(version))
        )
        spec = conflict_base.spec_of(c, t, s, version)
        c.execute(
            "UPDATE pgferry.sync_state SET checkpoint = checkpoint || %s::jsonb WHERE "
            "table_name = 'public.ref' AND strategy = 'base'",
            [json.dumps({"spec": spec})],
        )
        c.commit()
        assert s.hash_version == 3  # (int, text, numeric: each by its own function)
        assert conflict_base.version_of(c, "dev", t, s) == version


@pytest.mark.parametrize("old", [1, 2])
def test_a_base_of_an_older_hash_still_stops_at_a_conflict_then_is_made_anew(
    proj: Project, cli: Callable[..., Result], old: int
) -> None:
    assert run(cli, proj, "sync", "dev", "qa").code == 0
    now = _spec(proj.dsns["qa"])
    make_old(proj.dsns["qa"], old)
    assert _spec(proj.dsns["qa"]) != now
    # the same row changed on both sides since the last sync: a conflict
    sql(proj.dsns["qa"], "UPDATE ref SET label = 'fixed in qa' WHERE id = 3")
    sql(
        proj.dsns["dev"],
        "UPDATE ref SET label = 'changed in dev' WHERE id = 3;"
        "UPDATE ref SET rate = 99 WHERE id = 4",
    )
    before = rows(proj.dsns["qa"])
    r = run(cli, proj, "sync", "dev", "qa", "--on-conflict", "stop")
    assert r.code == 1, r.err + r.out
    assert ref(r)["conflicts_known"] is True and ref(r)["conflicts"] == 1
    assert [c["key"] for c in ref(r)["conflict_rows"]] == [{"id": 3}]
    assert rows(proj.dsns["qa"]) == before  # the table is exactly as it was
    assert _spec(proj.dsns["qa"]) != now  # still the old base
    # keep the target's row: the base stays in the old hash while it holds the kept conflict
    r = run(cli, proj, "sync", "dev", "qa", "--on-conflict", "target")
    assert r.code == 0, r.err + r.out
    assert ref(r)["kept"] == 1 and label(proj.dsns["qa"], 3) == "fixed in qa"
    assert _spec(proj.dsns["qa"]) != now
    # ... and a later sync still sees it as a conflict
    r = run(cli, proj, "sync", "dev", "qa", "--on-conflict", "stop", "--dry-run")
    assert ref(r)["conflicts"] == 1
    # the source wins: nothing is kept any more, the base is made again with the new hash
    r = run(cli, proj, "sync", "dev", "qa", "--on-conflict", "source")
    assert r.code == 0, r.err + r.out
    assert label(proj.dsns["qa"], 3) == "changed in dev"
    assert _spec(proj.dsns["qa"]) == now
    sql(proj.dsns["qa"], "UPDATE ref SET label = 'again' WHERE id = 5")
    sql(proj.dsns["dev"], "UPDATE ref SET label = 'also' WHERE id = 5")
    r = run(cli, proj, "sync", "dev", "qa", "--on-conflict", "stop")
    assert r.code == 1 and ref(r)["conflicts"] == 1

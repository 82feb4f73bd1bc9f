"""Sync conflicts on a real server (issue 18): a row changed on the target since the last
sync is never overwritten silently."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Project, Result, one, sql, statements_seen, write_project

SCHEMA = """
CREATE TABLE ref (id int PRIMARY KEY, label text NOT NULL, rate numeric(6, 2));
CREATE TABLE item (id int PRIMARY KEY, ref_id int REFERENCES ref, note text);
"""
DATA = """
INSERT INTO ref SELECT g, 'label ' || g, g / 10.0 FROM generate_series(1, 50) g;
INSERT INTO item SELECT g, 1 + g % 50, 'n' || g FROM generate_series(1, 200) g;
"""


def rows(dsn: str, table: str = "ref") -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()  # noqa: S608


def label(dsn: str, key: int) -> Any:
    with psycopg.connect(dsn) as c:
        row = c.execute("SELECT label FROM ref WHERE id = %s", [key]).fetchone()
        return row[0] if row else None


@pytest.fixture
def proj(tmp_path: Path, make_db: Callable[..., str]) -> Project:
    """dev, qa (unprotected) and prod (protected); one sync from dev into each."""
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "qa": make_db("qa"), "prod": make_db("prod")},
        protected=("prod",),
    )
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    sql(p.dsns["dev"], DATA)
    return p


def run(cli: Callable[..., Result], p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), "--json", *args)


def ref(r: Result) -> dict[str, Any]:
    tables: dict[str, dict[str, Any]] = {t["table"]: t for t in r.json["tables"]}
    return tables["public.ref"]


def test_the_first_sync_cannot_know_the_next_one_can(
    proj: Project, cli: Callable[..., Result]
) -> None:
    r = run(cli, proj, "sync", "dev", "qa", "--dry-run")
    assert ref(r)["conflicts_known"] is False
    text = cli("--config", str(proj.config), "sync", "dev", "qa", "--dry-run").out
    assert "conflicts cannot be known yet (no earlier sync from dev) for: public.ref" in text
    assert run(cli, proj, "sync", "dev", "qa").code == 0
    r = run(cli, proj, "sync", "dev", "qa")
    assert ref(r)["conflicts_known"] is True and ref(r)["conflicts"] == 0


def test_target_only_changes_are_written_back_or_kept_and_listed(
    proj: Project, cli: Callable[..., Result]
) -> None:
    assert run(cli, proj, "sync", "dev", "qa").code == 0
    sql(
        proj.dsns["qa"],
        "UPDATE ref SET label = 'hand' WHERE id = 1;"
        "INSERT INTO ref VALUES (500, 'qa only', 1);"
        "DELETE FROM item WHERE ref_id = 2; DELETE FROM ref WHERE id = 2;",
    )
    r = run(cli, proj, "sync", "dev", "qa", "--dry-run")
    assert (ref(r)["conflicts"], ref(r)["target_only"]) == (0, 3)
    proj.config.write_text(
        proj.config.read_text(encoding="utf-8") + "\n[sync]\nkeep_target_changes = true\n",
        encoding="utf-8",
    )
    r = run(cli, proj, "sync", "dev", "qa", "--verify-after")
    assert r.code == 1, r.out  # done; the check after finds the kept rows differ, as they do
    t = ref(r)
    assert t["status"] == "differs" and t["differing"] == 1
    assert (t["conflicts"], t["target_only"], t["kept"]) == (0, 3, 3)
    assert "kept 3 target row(s)" in t["note"]
    assert label(proj.dsns["qa"], 1) == "hand" and label(proj.dsns["qa"], 500) == "qa only"
    assert label(proj.dsns["qa"], 2) is None
    proj.config.write_text(
        proj.config.read_text(encoding="utf-8").replace(
            "keep_target_changes = true", "keep_target_changes = false"
        ),
        encoding="utf-8",
    )
    r = run(cli, proj, "sync", "dev", "qa")  # the default: written back to the source's rows
    assert r.code == 0, r.out
    assert (ref(r)["conflicts"], ref(r)["target_only"]) == (0, 3)
    assert rows(proj.dsns["qa"]) == rows(proj.dsns["dev"])


EDITS = {  # the same keys changed on both sides since the last sync
    "dev": "UPDATE ref SET label = 'dev' WHERE id IN (3, 4, 6);"
    "DELETE FROM item WHERE ref_id = 5; DELETE FROM ref WHERE id = 5;",
    "target": "UPDATE ref SET label = 'prod fix' WHERE id IN (3, 5);"  # 3: both; 5: src gone
    "DELETE FROM item WHERE ref_id = 4; DELETE FROM ref WHERE id = 4;"  # 4: src changed
    "UPDATE ref SET rate = 99 WHERE id = 7;",  # 7: target only
}


@pytest.mark.parametrize("env", ["prod", "qa"])
def test_conflicts_stop_on_protected_targets_and_the_source_wins_elsewhere(
    proj: Project, cli: Callable[..., Result], env: str
) -> None:
    yes = ("--yes",) if env == "prod" else ()
    assert run(cli, proj, "sync", "dev", env, *yes).code == 0
    sql(proj.dsns["dev"], EDITS["dev"])
    sql(proj.dsns[env], EDITS["target"])
    before = rows(proj.dsns[env])
    r = run(cli, proj, "sync", "dev", env, "--dry-run")  # the plan shows them first
    assert ref(r)["conflicts"] == 3 and ref(r)["target_only"] == 1
    kinds = {c["key"]["id"]: c["kind"] for c in ref(r)["conflict_rows"]}
    assert kinds == {3: "update", 4: "insert", 5: "delete"}
    r = run(cli, proj, "sync", "dev", env, *yes)
    t = ref(r)
    if env == "prod":  # protected: stop, the table as it was, exit 1, the conflicts listed
        assert r.code == 1 and t["status"] == "conflicts"
        assert rows(proj.dsns[env]) == before
        c3 = next(c for c in t["conflict_rows"] if c["key"]["id"] == 3)
        assert c3["target_row"]["label"] == "prod fix" and c3["source_row"]["label"] == "dev"
        details = one(
            proj.dsns[env],
            "SELECT details FROM pgferry.journal WHERE command = 'sync' ORDER BY id DESC LIMIT 1",
        )
        assert {x["table"]: x for x in details["tables"]}["public.ref"]["conflicts"] == 3
    else:  # elsewhere the source wins, and the overwritten rows are kept for sync revert
        assert r.code == 0, r.out
        assert t["conflicts"] == 3 and t["before_images"] is True
        assert rows(proj.dsns[env]) == rows(proj.dsns["dev"])
        assert run(cli, proj, "sync", "revert", r.json["run_id"], "--env", env).code == 0
        assert label(proj.dsns[env], 3) == "prod fix" and label(proj.dsns[env], 4) is None


def test_on_conflict_target_keeps_the_target_rows(
    proj: Project, cli: Callable[..., Result]
) -> None:
    assert run(cli, proj, "sync", "dev", "prod", "--yes").code == 0
    sql(proj.dsns["dev"], EDITS["dev"])
    sql(proj.dsns["prod"], EDITS["target"])
    r = run(cli, proj, "sync", "dev", "prod", "--yes", "--on-conflict", "target")
    t = ref(r)
    assert (t["conflicts"], t["kept"]) == (3, 3)
    assert label(proj.dsns["prod"], 3) == "prod fix"  # kept
    assert label(proj.dsns["prod"], 5) == "prod fix"  # the source deleted it; kept
    assert label(proj.dsns["prod"], 4) is None  # deleted on the target; kept deleted
    assert label(proj.dsns["prod"], 6) == "dev"  # no conflict: synced
    with psycopg.connect(proj.dsns["prod"]) as c:  # 7 changed on prod only: written back
        assert c.execute("SELECT rate::text FROM ref WHERE id = 7").fetchone() == ("0.70",)
    # dev's items of ref 4 cannot come back while prod keeps ref 4 deleted: dead letters
    item = {t["table"]: t for t in r.json["tables"]}["public.item"]
    assert r.code == 1 and item["dead_lettered"] == 4
    assert [x for x in rows(proj.dsns["prod"], "item") if x[1] != 4] == [
        x for x in rows(proj.dsns["dev"], "item") if x[1] != 4
    ]
    # a kept conflict stays one: kept again by the next run, not written back as a change
    # made on the target only
    r = run(cli, proj, "sync", "dev", "prod", "--yes", "--on-conflict", "target")
    assert (ref(r)["conflicts"], ref(r)["target_only"]) == (3, 0)
    assert label(proj.dsns["prod"], 3) == "prod fix"
    # until the source wins it
    r = run(cli, proj, "sync", "dev", "prod", "--yes", "--on-conflict", "source")
    assert ref(r)["conflicts"] == 3 and label(proj.dsns["prod"], 3) == "dev"
    assert rows(proj.dsns["prod"]) == rows(proj.dsns["dev"])


def test_freeze_and_many_transactions_change_nothing(
    proj: Project, cli: Callable[..., Result]
) -> None:
    assert run(cli, proj, "sync", "dev", "qa").code == 0
    sql(proj.dsns["dev"], "UPDATE ref SET label = 'dev' WHERE id IN (8, 9)")
    sql(proj.dsns["qa"], "UPDATE ref SET label = 'qa' WHERE id = 9")
    with psycopg.connect(proj.dsns["qa"], autocommit=True) as c:
        for _ in range(3000):  # transaction ids move on; nothing compares them
            c.execute("SELECT pg_current_xact_id()")
        c.execute("VACUUM FREEZE ref")
    r = run(cli, proj, "sync", "dev", "qa", "--dry-run")
    assert (ref(r)["conflicts"], ref(r)["target_only"], ref(r)["would_update"]) == (1, 0, 2)


def test_a_killed_run_invents_no_conflict(proj: Project, cli: Callable[..., Result]) -> None:
    assert run(cli, proj, "sync", "dev", "qa").code == 0
    sql(proj.dsns["dev"], "UPDATE ref SET label = label || '!' WHERE id <= 20")
    sql(
        proj.dsns["qa"],
        """
        CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$;
        CREATE TRIGGER slow BEFORE UPDATE ON ref FOR EACH ROW EXECUTE FUNCTION slow();""",
    )
    proc = proj.popen("sync", "dev", "qa", "--batch-size", "2")
    # a second batch has started: the first one's writes are done (uncommitted)
    statements_seen(proj.dsns["qa"], "pgferry sync writer", "INSERT INTO .*ref", 2, alive=proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    sql(proj.dsns["qa"], "DROP TRIGGER slow ON ref")
    r = run(cli, proj, "sync", "dev", "qa")
    assert r.code == 0, r.out
    assert (ref(r)["conflicts"], ref(r)["target_only"], ref(r)["updated"]) == (0, 0, 20)


def test_the_report_has_a_conflicts_section(
    proj: Project, cli: Callable[..., Result], tmp_path: Path
) -> None:
    assert run(cli, proj, "sync", "dev", "prod", "--yes").code == 0
    sql(proj.dsns["dev"], EDITS["dev"])
    sql(proj.dsns["prod"], EDITS["target"])
    report = tmp_path / "r.md"
    r = run(cli, proj, "sync", "dev", "prod", "--yes", "--report", str(report))
    assert r.code == 1
    md = report.read_text(encoding="utf-8")
    assert "## Conflicts" in md and "| public.ref | 3 | 1 | 0 | yes |" in md
    assert "prod fix" in md
    assert json.dumps(r.json)  # one JSON object


def test_a_kept_conflict_is_settled_when_both_sides_agree(
    proj: Project, cli: Callable[..., Result]
) -> None:
    assert run(cli, proj, "sync", "dev", "prod", "--yes").code == 0
    sql(proj.dsns["dev"], "UPDATE ref SET label = 'dev' WHERE id = 3")
    sql(proj.dsns["prod"], "UPDATE ref SET label = 'prod fix' WHERE id = 3")
    r = run(cli, proj, "sync", "dev", "prod", "--yes", "--on-conflict", "target")
    assert ref(r)["conflicts"] == 1
    sql(proj.dsns["dev"], "UPDATE ref SET label = 'prod fix' WHERE id = 3")  # dev adopts it
    r = run(cli, proj, "sync", "dev", "prod", "--yes")
    assert r.code == 0 and ref(r)["conflicts"] == 0
    sql(proj.dsns["dev"], "UPDATE ref SET label = 'dev again' WHERE id = 3")
    r = run(cli, proj, "sync", "dev", "prod", "--yes")  # a change of the source only now
    assert r.code == 0 and ref(r)["conflicts"] == 0 and label(proj.dsns["prod"], 3) == "dev again"


def test_rebase_after_the_same_fix_on_both_sides(proj: Project, cli: Callable[..., Result]) -> None:
    assert run(cli, proj, "sync", "dev", "prod", "--yes").code == 0
    fix = "UPDATE ref SET rate = rate + 1 WHERE id <= 10"  # a data fix run in both places
    sql(proj.dsns["dev"], fix)
    sql(proj.dsns["prod"], fix)
    sql(proj.dsns["dev"], "UPDATE ref SET label = 'dev' WHERE id = 2")
    r = run(cli, proj, "sync", "dev", "prod", "--yes", "--dry-run")
    assert ref(r)["conflicts"] == 1  # the base still holds the rows before the fix
    assert run(cli, proj, "sync", "dev", "prod", "--yes", "--tables", "public.item").code == 0
    assert (
        run(cli, proj, "sync", "dev", "prod", "--yes", "--on-conflict", "source", "--rebase").code
        == 0
    )
    sql(proj.dsns["dev"], "UPDATE ref SET label = 'dev 2' WHERE id IN (2, 5)")
    r = run(cli, proj, "sync", "dev", "prod", "--yes")
    assert r.code == 0 and ref(r)["conflicts"] == 0 and ref(r)["updated"] == 2


def test_a_sync_that_finds_nothing_keeps_every_base(
    proj: Project, cli: Callable[..., Result]
) -> None:
    """Nothing differs and no conflict is held: nothing is classified (no temp table, no
    base update), every base row stays as it was, and the next change on both sides is
    still a conflict."""

    def bases() -> list[Any]:
        with psycopg.connect(proj.dsns["qa"]) as c:
            names = [
                r[0]
                for r in c.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'pgferry'"
                    " AND tablename LIKE 'base%' ORDER BY 1"
                )
            ]
            return [
                (n, c.execute(f'SELECT xmin::text, * FROM pgferry."{n}" ORDER BY 2').fetchall())  # noqa: S608
                for n in names
            ]

    assert run(cli, proj, "sync", "dev", "qa").code == 0
    before = bases()
    assert len(before) == 2 and all(rows for _, rows in before)
    r = run(cli, proj, "sync", "dev", "qa")
    assert r.code == 0
    assert all(t["conflicts_known"] and t["conflicts"] == 0 for t in r.json["tables"]), r.out
    assert bases() == before
    sql(proj.dsns["dev"], "UPDATE ref SET label = 'dev' WHERE id IN (8, 9)")
    sql(proj.dsns["qa"], "UPDATE ref SET label = 'qa' WHERE id = 9")
    r = run(cli, proj, "sync", "dev", "qa")
    assert (ref(r)["conflicts"], ref(r)["updated"]) == (1, 2)
    assert rows(proj.dsns["qa"]) == rows(proj.dsns["dev"])


def test_a_dead_lettered_row_keeps_its_base(proj: Project, cli: Callable[..., Result]) -> None:
    # a row the target refuses (a CHECK the source's value breaks) is not written: its
    # base stays what the last sync that wrote it left, so a later change to it on the
    # target is a conflict, not a target-only change
    dev, qa = proj.dsns["dev"], proj.dsns["qa"]
    assert run(cli, proj, "sync", "dev", "qa").code == 0
    sql(qa, "ALTER TABLE ref ADD CONSTRAINT short CHECK (length(label) < 20)")
    sql(
        dev,
        "UPDATE ref SET label = 'a label far too long for qa' WHERE id = 5;"
        "UPDATE ref SET label = 'ok' WHERE id = 6",
    )
    r = run(cli, proj, "sync", "dev", "qa")
    assert r.code == 1 and ref(r)["dead_lettered"] == 1, r.out
    assert (label(qa, 5), label(qa, 6)) == ("label 5", "ok")
    sql(qa, "ALTER TABLE ref DROP CONSTRAINT short")
    sql(
        qa,
        "UPDATE ref SET label = 'fixed in qa' WHERE id = 5;"
        "UPDATE ref SET label = 'qa' WHERE id = 6",
    )
    r = run(cli, proj, "sync", "dev", "qa", "--on-conflict", "stop", "--dry-run")
    # row 5: changed on both sides since the last sync that wrote it; row 6: only on qa
    assert (ref(r)["conflicts"], ref(r)["target_only"]) == (1, 1), ref(r)
    assert [c["key"] for c in ref(r)["conflict_rows"]] == [{"id": 5}]

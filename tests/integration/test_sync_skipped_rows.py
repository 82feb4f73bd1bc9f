"""Rows a trigger on the target skips without an error are dead letters, not "unchanged".

A ``BEFORE UPDATE`` (or ``BEFORE INSERT``) trigger that returns NULL skips the row: no
error, no row written, nothing returned. An application guards records that way (a
locked document, a closed period). Found and fixed here: the sync counted such rows as
unchanged and reported the table ``ok`` (with the note that triggers fired: "the target
may differ"), exit 0, while 5 of 10 changed rows were never written. Now each such row is
a dead letter that names the triggers, the run exits 1, and every other row is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Result, q, run_json, sql, write_project

SCHEMA = "CREATE TABLE doc (id int PRIMARY KEY, body text, locked bool NOT NULL DEFAULT false);"
GUARDS = """
CREATE FUNCTION keep_locked() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN IF (TG_OP = 'UPDATE' AND OLD.locked) OR (TG_OP = 'INSERT' AND NEW.locked)
     THEN RETURN NULL; END IF; RETURN NEW; END $$;
CREATE TRIGGER keep_locked BEFORE INSERT OR UPDATE ON doc
  FOR EACH ROW EXECUTE FUNCTION keep_locked();
"""


@pytest.mark.parametrize("protected", [False, True])
def test_rows_a_trigger_skips_are_dead_letters(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result], protected: bool
) -> None:
    p = write_project(
        tmp_path,
        {"dev": make_db("src"), "prod": make_db("prod")},
        protected=("prod",) if protected else (),
    )
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
        sql(dsn, "INSERT INTO doc SELECT g, 'v1', g % 2 = 0 FROM generate_series(1, 10) g")
    sql(p.dsns["prod"], GUARDS)
    sql(p.dsns["dev"], "UPDATE doc SET body = 'v2'")
    sql(p.dsns["dev"], "INSERT INTO doc VALUES (11, 'new', false), (12, 'new', true)")
    yes = ["--yes"] if protected else []

    r = run_json(cli, p, "sync", "dev", "prod", *yes)
    assert r.code == 1, r.out + r.err
    (t,) = r.json["tables"]
    assert (t["inserted"], t["updated"], t["unchanged"], t["dead_lettered"]) == (1, 5, 0, 6)
    assert sorted(d["key"]["id"] for d in t["dead_letters"]) == [2, 4, 6, 8, 10, 12]
    assert "a trigger on the target (keep_locked) skipped this row" in t["dead_letters"][0]["error"]
    assert q(p.dsns["prod"], "SELECT id, body FROM doc ORDER BY id") == [
        (i, "v1" if i % 2 == 0 else "v2") for i in range(1, 11)
    ] + [(11, "new")]
    stored = q(p.dsns["prod"], "SELECT count(*) FROM pgferry.dead_letters")
    assert stored == [(6,)]
    if protected:  # the rows written, and only those, are reverted
        r = run_json(cli, p, "sync", "revert", r.json["run_id"], "--env", "prod", "--yes")
        assert r.code == 0, r.out + r.err
        assert q(p.dsns["prod"], "SELECT count(*) FROM doc WHERE body = 'v1'") == [(10,)]
    else:  # with the triggers disabled for the table, the rest is written
        extra = '[sync.tables."public.doc"]\ntriggers = "disable"\n'
        p = write_project(tmp_path, p.dsns, protected=(), extra=extra)
        r = run_json(cli, p, "sync", "dev", "prod")
        assert r.code == 0, r.out + r.err
        assert q(p.dsns["prod"], "SELECT count(*) FROM doc WHERE body = 'v1'") == [(0,)]


def test_a_full_load_names_the_rows_a_trigger_skips(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """The COPY fast path skipped them too, and reported the table ok."""
    p = write_project(tmp_path, {"dev": make_db("src"), "stage": make_db("stage")})
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    sql(p.dsns["stage"], GUARDS)
    sql(p.dsns["dev"], "INSERT INTO doc SELECT g, 'v1', g % 3 = 0 FROM generate_series(1, 30) g")
    r = run_json(cli, p, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 1, r.out + r.err
    (t,) = r.json["tables"]
    assert (t["inserted"], t["dead_lettered"]) == (20, 10)
    assert q(p.dsns["stage"], "SELECT count(*) FROM doc WHERE NOT locked") == [(20,)]
    # where the trigger skips nothing, the load stays on the fast path (the count that
    # tells was not kept on every read, and such loads went through the upserts with a
    # warning that rows had been skipped)
    sql(p.dsns["dev"], "UPDATE doc SET locked = false; DELETE FROM doc WHERE id > 20")
    sql(p.dsns["stage"], "DELETE FROM doc")
    r = run_json(cli, p, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 0, r.out + r.err
    (t,) = r.json["tables"]
    assert (t["inserted"], t["dead_lettered"]) == (20, 0), t
    assert not any("fast COPY path" in w for w in t["warnings"]), t


KEYLESS = "CREATE TABLE log (at int, body text, locked bool NOT NULL DEFAULT false);"


@pytest.mark.parametrize("where", [False, True])
def test_rows_a_trigger_skips_in_a_table_without_a_key_fail_it(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result], where: bool
) -> None:
    """No key names the rows, so they cannot be dead letters: a full sync of such a table
    reported the rows written, ok, exit 0, where 10 of 30 never reached the target."""
    extra = '[sync.tables."public.log"]\nwhere = "at > 0"\n' if where else ""
    p = write_project(
        tmp_path, {"dev": make_db("src"), "stage": make_db("stage")}, protected=(), extra=extra
    )
    for dsn in p.dsns.values():
        sql(dsn, KEYLESS)
    sql(p.dsns["stage"], GUARDS.replace("doc", "log"))
    sql(p.dsns["stage"], "INSERT INTO log VALUES (0, 'kept')")
    sql(p.dsns["dev"], "INSERT INTO log SELECT g, 'v', g % 3 = 0 FROM generate_series(1, 30) g")
    r = run_json(cli, p, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 3, r.out + r.err
    (t,) = r.json["tables"]
    assert "the target wrote 20 of the 30 rows the source sent" in t["error"], t
    assert "this table has no key to name them by" in t["error"], t
    assert q(p.dsns["stage"], "SELECT at, body FROM log") == [(0, "kept")]  # as it was


def test_only_triggers_that_may_return_null_are_watched(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """Checking each write for skipped rows costs (40,000 changed rows of a 200,000-row
    table on the scratch server: 1.9 to 2.2 s unwatched, 3.0 to 3.6 s watched), and the
    commonest BEFORE trigger, one that stamps ``updated_at`` and returns NEW, cannot skip a
    row: its table is not watched (the plan lists no skipping trigger for it), and is
    synced. A function that may return NULL is watched."""
    p = write_project(tmp_path, {"dev": make_db("src"), "prod": make_db("prod")}, protected=())
    stamped = (
        "CREATE TABLE stamped (id int PRIMARY KEY, body text, updated_at timestamptz);"
        "CREATE TABLE search (id int PRIMARY KEY, body text, tsv tsvector);"
    )
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA + stamped)
        sql(dsn, "INSERT INTO stamped SELECT g, 'v1' FROM generate_series(1, 10) g")
    sql(
        p.dsns["prod"],
        GUARDS + "CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " NEW.updated_at := now(); -- RETURN NULL; would skip the row\n RETURN NEW; END $$;"
        "CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON stamped FOR EACH ROW "
        "EXECUTE FUNCTION stamp(); CREATE TRIGGER tsv BEFORE INSERT OR UPDATE ON search "
        "FOR EACH ROW EXECUTE FUNCTION tsvector_update_trigger(tsv, 'pg_catalog.english', body)",
    )
    sql(p.dsns["dev"], "UPDATE stamped SET body = 'v2' WHERE id <= 4")
    r = run_json(cli, p, "sync", "dev", "prod", "--dry-run")
    plan = {t["table"]: t for t in r.json["options"]["plan"]["tables"]}
    assert plan["public.doc"]["skipping_triggers"] == ["keep_locked"]
    assert plan["public.stamped"]["user_triggers"] == ["stamp"]
    assert plan["public.stamped"]["skipping_triggers"] == []
    assert (plan["public.search"]["user_triggers"], plan["public.search"]["skipping_triggers"]) == (
        ["tsv"],
        [],
    )
    r = run_json(cli, p, "sync", "dev", "prod")
    assert r.code == 0, r.out + r.err
    t = {t["table"]: t for t in r.json["tables"]}["public.stamped"]
    assert (t["updated"], t["dead_lettered"]) == (4, 0)
    assert q(p.dsns["prod"], "SELECT count(*) FROM stamped WHERE body = 'v2'") == [(4,)]


PARTS = """
CREATE TABLE pe (id int, region text, body text, locked bool NOT NULL DEFAULT false,
                 PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE pe_eu PARTITION OF pe FOR VALUES IN ('eu');
CREATE TABLE pe_us PARTITION OF pe FOR VALUES IN ('us');
"""


@pytest.mark.parametrize("version", [18, 15])
def test_a_trigger_a_partition_has_of_its_own_is_watched_and_disabled(
    tmp_path: Path,
    make_db: Callable[..., str],
    make_db15: Callable[..., str],
    cli: Callable[..., Result],
    version: int,
) -> None:
    """A guard on one partition only (archived rows locked): the catalog read the
    partitioned table's own triggers, so the sync said updated 15, unchanged 5, ok, exit 0
    where 5 rows were never written. Now the partition's trigger is named, watched, and
    disabled on the partition with triggers = "disable"."""
    make = make_db if version == 18 else make_db15
    p = write_project(tmp_path, {"dev": make("src"), "prod": make("prod")}, protected=())
    for dsn in p.dsns.values():
        sql(dsn, PARTS)
        sql(
            dsn,
            "INSERT INTO pe SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'v1',"
            " g % 4 = 0 FROM generate_series(1, 20) g",
        )
    sql(p.dsns["prod"], GUARDS.replace("ON doc", "ON pe_eu"))
    sql(p.dsns["dev"], "UPDATE pe SET body = 'v2'")
    r = run_json(cli, p, "sync", "dev", "prod")
    assert r.code == 1, r.out + r.err
    (t,) = r.json["tables"]
    assert (t["updated"], t["dead_lettered"]) == (15, 5), t
    assert "(keep_locked (public.pe_eu)) skipped this row" in t["dead_letters"][0]["error"]
    assert q(p.dsns["prod"], "SELECT count(*) FROM pe WHERE body = 'v1'") == [(5,)]
    extra = '[sync.tables."public.pe"]\ntriggers = "disable"\n'
    p = write_project(tmp_path, p.dsns, protected=(), extra=extra)
    r = run_json(cli, p, "sync", "dev", "prod")
    assert r.code == 0, r.out + r.err
    assert q(p.dsns["prod"], "SELECT count(*) FROM pe WHERE body = 'v1'") == [(0,)]
    enabled = "SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'keep_locked'"
    assert q(p.dsns["prod"], enabled) == [("O",)]  # enabled again, as it was

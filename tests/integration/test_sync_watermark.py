"""The watermark strategy: late commits are fenced by the snapshot, state only after commit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.helpers import Project, Result, one, q, sql, wait_for, write_project
from tests.helpers.sync import WATERMARK_CONF as CONF
from tests.helpers.sync import WATERMARK_DDL as DDL
from tests.helpers.sync import rows


def _events(tmp_path: Path, make_db: Callable[..., str], rows: str) -> Project:
    """dev and prod with the events table (watermark config); ``rows`` run on dev only."""
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=(), extra=CONF
    )
    sql(p.dsns["dev"], DDL + rows)
    sql(p.dsns["prod"], DDL)
    return p


def test_late_commit_is_not_missed_and_unchanged_rows_cost_nothing(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = _events(
        tmp_path, make_db, "INSERT INTO events SELECT g, 'v' FROM generate_series(1, 100) g"
    )
    late = psycopg.connect(p.dsns["dev"])
    # a transaction that started early (its now() is old) and commits after the sync
    late.execute("INSERT INTO events (id, v) VALUES (1000, 'late')")
    wait_for(
        p.dsns["dev"],
        "SELECT clock_timestamp() > xact_start FROM pg_stat_activity WHERE pid = %s",
        [late.info.backend_pid],
        what="the late transaction's start to be in the past",
    )
    sql(p.dsns["dev"], "INSERT INTO events (id, v) VALUES (101, 'later but committed')")
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--json")
    assert r.code == 0, r.err + r.out
    assert len(rows(p.dsns["prod"], "events")) == 101
    late.commit()
    late.close()
    sql(
        p.dsns["dev"],
        "UPDATE events SET v = 'w', updated_at = now() WHERE id = 7;"
        " DELETE FROM events WHERE id IN (3, 4)",
    )
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--json")
    assert r.code == 0, r.err + r.out
    ev = {t["table"]: t for t in r.json["tables"]}["public.events"]
    assert ev["strategy"] == "watermark"
    assert ev["inserted"] == 1 and ev["updated"] == 1, ev
    assert ev["deleted"] == 2  # found by comparing keys (deletes = true, the default)
    assert rows(p.dsns["dev"], "events") == rows(p.dsns["prod"], "events")
    # nothing changed: a third run writes nothing (the overlap re-reads are free) and the
    # watermark does not move backwards
    before = one(p.dsns["prod"], "SELECT watermark FROM pgferry.sync_state")
    sql(
        p.dsns["prod"],
        "UPDATE pgferry.sync_state SET watermark = (watermark::timestamptz + interval '1 s')::text",
    )  # as if the last row seen were newer than any read now
    wait_for(  # (and not later than the source's clock, past which a mark is not kept)
        p.dsns["dev"],
        "SELECT now() > %s::timestamptz + interval '1 s'",
        [before],
        what="the source's clock to pass the moved mark",
    )
    p.config.write_text(p.config.read_text().replace('overlap = "0s"', 'overlap = "1h"'))
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--json")
    with psycopg.connect(p.dsns["prod"]) as c:
        after = c.execute(
            "SELECT watermark::timestamptz - %s::timestamptz FROM pgferry.sync_state", [before]
        ).fetchone()
    assert after == (__import__("datetime").timedelta(seconds=1),)
    ev = {t["table"]: t for t in r.json["tables"]}["public.events"]
    assert (ev["inserted"], ev["updated"]) == (0, 0)
    [(wm, xids)] = q(
        p.dsns["prod"],
        "SELECT watermark, inflight_xids FROM pgferry.sync_state"
        " WHERE table_name = 'public.events'",
    )
    assert wm is not None and isinstance(xids, list)  # other databases may hold xids


def test_first_run_into_a_filled_table_compares_instead_of_copying(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=(), extra=CONF
    )
    data = (
        "INSERT INTO events SELECT g, 'v', timestamptz '2024-01-01' + g * interval '1 s'"
        " FROM generate_series(1, 100) g;"
    )
    sql(p.dsns["dev"], DDL + data)
    sql(
        p.dsns["prod"],
        DDL + data + "UPDATE events SET v = 'old' WHERE id = 5;"  # noqa: S608
        "INSERT INTO events VALUES (500, 'gone', now());",
    )
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--json")
    assert r.code == 0, r.err + r.out
    ev = r.json["tables"][0]
    assert (ev["inserted"], ev["updated"], ev["deleted"], ev["unchanged"]) == (0, 1, 1, 99)
    assert rows(p.dsns["dev"], "events") == rows(p.dsns["prod"], "events")
    with psycopg.connect(p.dsns["prod"]) as c:
        wm = c.execute("SELECT watermark FROM pgferry.sync_state").fetchone()
    assert wm is not None and wm[0].startswith("2024-01-01 00:01:40")


def test_atomic_with_a_watermark_table(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=(), extra=CONF
    )
    sql(
        p.dsns["dev"],
        DDL + "CREATE TABLE other (id int PRIMARY KEY);"  # noqa: S608
        "INSERT INTO events VALUES (1, 'a', now()); INSERT INTO other VALUES (1)",
    )
    sql(
        p.dsns["prod"],
        DDL + "CREATE TABLE other (id int PRIMARY KEY);"  # noqa: S608
        "INSERT INTO events VALUES (9, 'z', now()); INSERT INTO other VALUES (2)",
    )
    for i in range(2):  # the first run compares (filled table), the second reads the watermark
        if i:
            sql(p.dsns["dev"], "INSERT INTO events VALUES (2, 'b', now() + interval '1 h')")
        r = cli("--config", str(p.config), "sync", "dev", "prod", "--atomic", "--json")
        assert r.code == 0, r.err + r.out
        assert rows(p.dsns["dev"], "events") == rows(p.dsns["prod"], "events")
    with psycopg.connect(p.dsns["prod"]) as c:
        assert c.execute("SELECT count(*) FROM events").fetchone() == (2,)
        assert c.execute("SELECT id FROM other").fetchall() == [(1,)]


TEXT = "SELECT e::text FROM events e ORDER BY id"


def test_a_row_stamped_in_the_future_does_not_hide_later_changes(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    # a client clock years ahead, or 'infinity': the mark was the newest stamp, so every
    # real change after it lay below the mark and was never read while the sync said ok;
    # an 'infinity' stamp failed every run ("timestamp too large")
    p = _events(
        tmp_path,
        make_db,
        "INSERT INTO events SELECT g, 'v', now() - interval '1 day' FROM generate_series(1, 50) g;"
        "INSERT INTO events VALUES (98, 'ahead', now() + interval '3 years')",
    )

    def sync() -> dict[str, object]:
        r = cli("--config", str(p.config), "sync", "dev", "prod", "--json")
        assert r.code == 0, r.err + r.out
        (t,) = r.json["tables"]
        return dict(t)

    assert sync()["inserted"] == 51
    sql(p.dsns["dev"], "UPDATE events SET v = 'w', updated_at = now() WHERE id = 5")
    assert sync()["updated"] == 1
    sql(p.dsns["dev"], "INSERT INTO events VALUES (99, 'forever', 'infinity')")
    assert sync()["inserted"] == 1
    sql(p.dsns["dev"], "UPDATE events SET v = 'x', updated_at = now() WHERE id = 6")
    assert sync()["updated"] == 1
    assert q(p.dsns["dev"], TEXT) == q(p.dsns["prod"], TEXT)
    # a mark stored in the future by an earlier release: the table is compared once
    sql(
        p.dsns["prod"],
        "UPDATE pgferry.sync_state SET watermark = (now() + interval '2 years')::text",
    )
    sql(p.dsns["dev"], "UPDATE events SET v = 'y', updated_at = now() WHERE id = 7")
    t = sync()
    assert t["updated"] == 1, t
    assert any("later than the source's clock" in w for w in t["warnings"]), t  # type: ignore[attr-defined]
    assert q(p.dsns["dev"], TEXT) == q(p.dsns["prod"], TEXT)


def test_changes_over_many_batches_with_tied_watermarks(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """Batch after batch (the source finds and reads the next while the target writes one),
    ties in the watermark broken by the key: every changed row is written once, the rows
    the runs did not touch stay as they were, and the stored watermark is the newest read."""
    p = _events(
        tmp_path, make_db, "INSERT INTO events SELECT g, 'v' FROM generate_series(1, 500) g"
    )
    sync = ("--config", str(p.config), "sync", "dev", "prod", "--batch-size", "37", "--json")
    assert cli(*sync).code == 0
    # 300 rows changed, in runs of equal timestamps that batches of 37 cut through
    sql(
        p.dsns["dev"],
        "UPDATE events SET v = 'w' || id, updated_at = now() + (id / 50) * interval '1 ms'"
        " WHERE id % 2 = 0 OR id > 400",
    )
    r = cli(*sync)
    assert r.code == 0, r.err + r.out
    ev = {t["table"]: t for t in r.json["tables"]}["public.events"]
    assert (ev["strategy"], ev["inserted"], ev["updated"]) == ("watermark", 0, 300), ev
    assert rows(p.dsns["dev"], "events") == rows(p.dsns["prod"], "events")
    newest = one(p.dsns["dev"], "SELECT max(updated_at)::text FROM events")
    stored = one(p.dsns["prod"], "SELECT watermark FROM pgferry.sync_state")
    assert one(p.dsns["prod"], "SELECT %s::timestamptz = %s::timestamptz", [stored, newest])
    r = cli(*sync)  # nothing changed since: nothing written
    ev = {t["table"]: t for t in r.json["tables"]}["public.events"]
    assert (r.code, ev["inserted"], ev["updated"]) == (0, 0, 0), ev


def test_rows_without_a_watermark_are_read_on_every_run(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """A nullable watermark column (``updated_at`` set by an UPDATE trigger only, NULL on
    insert): a row without one is in no window. Such rows were never read after the first
    run (inserted later, or their watermark set back to NULL), and the sync said ok; a
    first run with a ``where`` lost whole batches, whose bound compared a NULL. Now they
    are read on every run, with a warning that says why."""
    conf = CONF + 'where = "id > 0"\n'
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=(), extra=conf
    )
    ddl = "CREATE TABLE events (id int PRIMARY KEY, v text, updated_at timestamptz);"
    sql(p.dsns["prod"], ddl)
    sql(
        p.dsns["dev"],
        ddl + "INSERT INTO events SELECT g, 'v', CASE WHEN g % 3 > 0 THEN now() END "
        "FROM generate_series(1, 100) g",
    )
    sync = ("--config", str(p.config), "sync", "dev", "prod", "--batch-size", "7", "--json")
    r = cli(*sync)
    assert r.code == 0, r.err + r.out
    assert rows(p.dsns["dev"], "events") == rows(p.dsns["prod"], "events")
    ev = {t["table"]: t for t in r.json["tables"]}["public.events"]
    assert ev["strategy"] == "watermark" and ev["inserted"] == 100, ev
    assert any("updated_at allows NULL" in w for w in ev["warnings"]), ev
    sql(
        p.dsns["dev"],
        "INSERT INTO events VALUES (101, 'new, no mark', NULL);"
        "UPDATE events SET v = 'w', updated_at = NULL WHERE id IN (1, 2);"
        "UPDATE events SET v = 'w' WHERE id = 3",  # NULL before, NULL after
    )
    r = cli(*sync)
    assert r.code == 0, r.err + r.out
    ev = {t["table"]: t for t in r.json["tables"]}["public.events"]
    assert (ev["inserted"], ev["updated"]) == (1, 3), ev
    assert rows(p.dsns["dev"], "events") == rows(p.dsns["prod"], "events")


def test_a_local_time_watermark_warns_of_the_repeated_hour(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """A ``timestamp without time zone`` watermark on a source whose sessions start in a
    zone with daylight saving time: ``now()`` stamps local time there, and the hour that
    repeats when clocks go back stamps changes earlier than ones a run already read. The
    sync says so, unless the zone keeps one offset or ``overlap`` covers the hour."""
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=(), extra=CONF
    )
    ddl = "CREATE TABLE events (id int PRIMARY KEY, updated_at timestamp NOT NULL DEFAULT now());"
    sql(p.dsns["prod"], ddl)
    sql(p.dsns["dev"], ddl)
    sql(p.dsns["dev"], "INSERT INTO events SELECT g FROM generate_series(1, 10) g")
    db = one(p.dsns["dev"], "SELECT current_database()")

    def warned(zone: str, *args: str) -> bool:
        sql(p.dsns["dev"], f"ALTER DATABASE \"{db}\" SET TimeZone = '{zone}'")
        r = cli("--config", str(p.config), "sync", "dev", "prod", "--json", *args)
        assert r.code == 0, r.err + r.out
        ev = {t["table"]: t for t in r.json["tables"]}["public.events"]
        return any("repeats when clocks go back" in w for w in ev["warnings"])

    assert warned("Europe/Berlin")
    assert warned("America/New_York")
    assert not warned("UTC")
    assert not warned("Asia/Tokyo")  # no daylight saving time
    p.config.write_text(p.config.read_text().replace('overlap = "0s"', 'overlap = "1h"'))
    assert not warned("Europe/Berlin")

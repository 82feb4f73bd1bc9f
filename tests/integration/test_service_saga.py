"""A release whose sync raises after it committed a unit, on real databases and a real
``pgferry serve``: the compensation reverts what that sync committed (its run id is chosen
by the saga before the sync starts), and where it cannot, the run says so and stops. A
release cancelled there is undone the same way, and ends ``cancelled``.

How the sync is made to raise, deterministically: the release syncs two tables that no
foreign key ties, on two workers, so each is a unit of its own. The test holds a SHARE lock
on prod's ``notes``: ``items`` commits, ``notes`` waits for its lock. Then the test ends
the sync's source sessions (its snapshot's coordinator and workers, found by their
``application_name``): the ``notes`` unit's next attempt cannot read the snapshot again,
so the sync ends failed part way (``notes``: "the run's snapshot of the source is gone",
exit 3). It used to raise a driver error there; the saga compensates both alike, by the
run id it chose before the sync started.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgferry.config import load_config
from pgferry.jobs import lifecycle, runs, service
from pgferry.jobs.control import Control
from pgferry.jobs.recorder import Recorder
from tests.helpers.service import SECRET, Server, make_project, run_events, tokens, wait_run
from tests.helpers.sync import end_source_sessions

pytestmark = pytest.mark.slow


def _project(tmp_path: Path, make_db: Any, sync: str = "") -> Any:
    from pgferry.commands import migrate_run
    from pgferry.config import load_config

    p = make_project(tmp_path / "proj", make_db, "\n[sync]\njobs = 2\n" + sync)
    p.write("V2__notes.sql", "CREATE TABLE notes (id bigint PRIMARY KEY, v text NOT NULL);\n")
    p.write("U2__notes.sql", "DROP TABLE notes;\n")
    cfg = load_config(p.config)
    for env in ("dev", "prod"):
        migrate_run.up(cfg, migrate_run.RunOptions(env=env, yes=True))
    with psycopg.connect(p.dsns["dev"], autocommit=True) as c:
        c.execute("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 300) g")
        c.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 50) g")
    # prod before the release: rows the sync updates, a row only prod has, fewer rows
    with psycopg.connect(p.dsns["prod"], autocommit=True) as c:
        c.execute("INSERT INTO items SELECT g, 'old ' || g FROM generate_series(1, 100) g")
        c.execute("INSERT INTO items VALUES (1000, 'only in prod')")
        c.execute("INSERT INTO notes SELECT g, 'old note ' || g FROM generate_series(1, 10) g")
    # the release's own migration, undone by the compensation
    p.write(
        "V3__short.sql",
        "ALTER TABLE items ADD CONSTRAINT v_short CHECK (length(v) < 100) NOT VALID;\n",
    )
    p.write("U3__short.sql", "ALTER TABLE items DROP CONSTRAINT v_short;\n")
    return p


#: V3's constraint is there (1) or not (0); V3 was undone (1) or not (0)
_V_SHORT = "SELECT count(*) FROM pg_constraint WHERE conname = 'v_short'"
_UNDONE = "SELECT count(*) FROM flyway_schema_history WHERE version = '3' AND type = 'DELETE'"


def _contents(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return {
            "items": c.execute("SELECT id, v FROM items ORDER BY id").fetchall(),
            "notes": c.execute("SELECT id, v FROM notes ORDER BY id").fetchall(),
        }


def _rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute(query).fetchall()


def _one(dsn: str, query: str, args: list[Any] | None = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(query, args).fetchone()
    return row[0] if row else None


def _approved_release(srv: Server, tok: dict[str, str], tables: list[str]) -> tuple[Any, Any, str]:
    """olga asks for a release of ``tables`` into prod, bob approves it: their clients and
    the run's id."""
    olga, bob = srv.client(tok["olga"]), srv.client(tok["bob"])
    r = olga.post("/api/releases", json={"source": "dev", "tables": tables})
    assert r.status_code == 202 and r.json()["state"] == "awaiting_approval", r.text
    rid = r.json()["id"]
    assert bob.post(f"/api/runs/{rid}/approve").status_code == 200
    return olga, bob, rid


def _release_whose_sync_raises(
    p: Any, change_after_commit: str | None = None, *, stop: str = "raise", sent_back: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a release into protected prod whose sync raises once ``items`` committed (and
    ``notes`` waits on the test's lock); ``change_after_commit`` runs in prod then, before
    the sync raises. ``stop``: how the sync stops instead of raising: ``"cancel"`` (the run
    is cancelled, then ``notes`` has its lock: its unit stops at its next event) or
    ``"kill"`` (the server is killed; the run is cancelled while no worker carries it, then
    a new server takes it on; ``sent_back``: the run waits for an approval again then, as
    a resumed release whose plan changed does). The run as it ended, and its events."""
    tok = tokens(p, olga="operator", bob="approver")
    hold = psycopg.connect(p.dsns["prod"])  # its transaction holds the lock until closed
    hold.execute("LOCK TABLE notes IN SHARE MODE")  # readers (pg_dump) pass, writers wait
    srv = Server(p).start()
    try:
        olga, bob, rid = _approved_release(srv, tok, ["public.items", "public.notes"])
        deadline = time.monotonic() + 120
        # the items unit committed; the notes unit waits for the test's lock
        while not (
            _one(p.dsns["prod"], "SELECT count(*) FROM items WHERE v LIKE 'row %'") == 300
            and _one(
                p.dsns["prod"],
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'notes'::regclass",
            )
        ):
            run = bob.get(f"/api/runs/{rid}").json()["run"]
            assert run["state"] in ("queued", "running"), (run, run_events(p, rid))
            assert time.monotonic() < deadline, run_events(p, rid)
            time.sleep(0.05)
        if change_after_commit is not None:
            with psycopg.connect(p.dsns["prod"], autocommit=True) as c:
                c.execute(change_after_commit)
        if stop == "cancel":
            r = olga.post(f"/api/runs/{rid}/cancel")
            assert r.status_code == 200 and r.json()["run"]["cancel_requested"], r.text
            hold.close()
        elif stop == "kill":
            srv.kill()
            hold.close()
            # the killed server's sessions, as an operator would end them
            for env in ("prod", "dev"):
                with psycopg.connect(p.dsns[env], autocommit=True) as c:
                    c.execute(
                        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE"
                        " datname = current_database() AND pid <> pg_backend_pid()"
                    )
            # no worker carries the run: the cancel is asked through the service's own
            # function (what the API calls), before a new server takes the run on
            ctl = Control(load_config(p.config))
            try:
                if sent_back:
                    runs.update(ctl, rid, state="awaiting_approval", approved_by=None)
                asked = lifecycle.cancel(ctl, rid, service.Caller("olga", "operator"))
            finally:
                ctl.close()
            # sent back for approval: queued (to be undone, no approval needed for that)
            state = "queued" if sent_back else "running"
            assert (asked.state, asked.cancel_requested) == (state, True), asked
            srv = Server(p, port=srv.port).start()
            bob = srv.client(tok["bob"])
        else:
            ended = end_source_sessions(p.dsns["dev"])
            assert ended >= 2, ended  # the coordinator and a worker
        run = wait_run(bob, rid, timeout=120)
    finally:
        hold.close()
        srv.stop()
    events = run_events(p, rid)
    assert SECRET not in json.dumps([run, events]) and SECRET not in srv.log()
    return run, events


def test_a_sync_that_raised_after_a_unit_committed_is_reverted_by_the_compensation(
    tmp_path: Path, make_db: Any
) -> None:
    p = _project(tmp_path, make_db)
    before = _contents(p.dsns["prod"])
    run, events = _release_whose_sync_raises(p)
    assert run["state"] == "failed" and run["exit_code"] == 3, run
    # the run names the failure: the sync raised
    assert run["error"].startswith("sync: "), run
    result = run["result"]
    assert result is not None and result["ok"] is False and result["failed_step"] == "sync"
    assert result["compensated"] is True
    steps = {s["step"]: s for s in result["steps"]}
    sync = steps["sync"]
    assert sync["state"] == "failed" and sync["result"]["error"] == run["error"], sync
    # the sync failed part way (had it raised, no counts would have come back): the run
    # id the saga gave it before it started is there, with its revert
    assert sync["result"].get("outcome", "failed") == "failed", sync
    assert "snapshot of the source is gone" in sync["result"]["error"], sync
    run_ids = sync["result"]["run_ids"]
    assert len(run_ids) == 1, sync
    comp = sync["compensation"]
    assert comp["action"] == "sync revert" and comp["run_ids"] == run_ids, comp
    # 200 rows inserted, 100 updated, prod's own row 1000 deleted: all put back
    assert comp["reverted"][0]["totals"] == {"removed": 200, "reinserted": 1, "restored": 100}
    assert steps["migrate"]["state"] == "compensated", steps["migrate"]
    assert steps["migrate"]["compensation"]["action"] == "migrate undo"
    assert steps["backup"]["compensation"] == {"action": "none", "why": "changes nothing"}
    assert (steps["verify"]["state"], steps["health"]["state"]) == ("pending", "pending")
    # prod is as it was before the release: every row of both tables, no V3
    assert _contents(p.dsns["prod"]) == before
    assert _one(p.dsns["prod"], _V_SHORT) == 0
    assert _one(p.dsns["prod"], _UNDONE) == 1
    journal = _rows(
        p.dsns["prod"],
        "SELECT command, outcome, arguments ->> 'run_id' FROM pgferry.journal"
        " WHERE command IN ('sync', 'sync revert') ORDER BY id",
    )
    assert journal == [("sync", "failed", run_ids[0]), ("sync revert", "ok", run_ids[0])]
    # nothing claims success
    said = [e.get("message", "") for e in events]
    assert "sync: compensation sync revert" in said and "migrate: compensation migrate undo" in said
    assert not [
        e for e in events if e.get("state") in ("succeeded", "done") and e.get("step") == "sync"
    ]
    assert events[-1]["type"] == "error" and events[-1]["state"] == "failed", events[-1]


def test_a_raised_sync_that_cannot_be_reverted_stops_the_saga_and_says_so(
    tmp_path: Path, make_db: Any
) -> None:
    # a row the sync wrote is changed in prod before the sync raises: the revert refuses
    # (it would overwrite that change), so the saga stops there and points at the backup
    p = _project(tmp_path, make_db)
    run, events = _release_whose_sync_raises(
        p, change_after_commit="UPDATE items SET v = 'changed by hand' WHERE id = 5"
    )
    assert run["state"] == "failed" and run["exit_code"] == 3, run
    result = run["result"]
    assert result["ok"] is False and result["failed_step"] == "sync"
    assert result["compensated"] is False
    steps = {s["step"]: s for s in result["steps"]}
    comp = steps["sync"]["compensation"]
    assert comp["action"] == "failed", comp
    assert "changed since sync run" in comp["error"], comp
    backup = steps["backup"]["result"]["backup"]
    assert comp["restore"] == f"pgferry backup restore {backup} --env prod --yes"
    # stopped: the migration is not undone under rows the saga could not put back
    assert steps["migrate"]["state"] == "done" and steps["migrate"]["compensation"] is None
    # one sentence that says the compensation could not finish, and the way back
    assert "could not" in run["error"] and f"pgferry backup restore {backup}" in run["error"], run
    assert run["error"].count(". ") == 0, run
    # nothing was reverted: what the sync committed is there, with the hand-made change
    assert _one(p.dsns["prod"], "SELECT v FROM items WHERE id = 5") == "changed by hand"
    assert _one(p.dsns["prod"], "SELECT count(*) FROM items WHERE v LIKE 'row %'") == 299
    assert (_one(p.dsns["prod"], _V_SHORT), _one(p.dsns["prod"], _UNDONE)) == (1, 0)
    said = [e.get("message", "") for e in events]
    assert any(m.startswith("stopped: ") for m in said), said
    assert events[-1]["type"] == "error" and events[-1]["state"] == "failed", events[-1]


def test_a_raised_sync_that_kept_no_before_images_stops_the_saga_and_says_so(
    tmp_path: Path, make_db: Any
) -> None:
    # prod keeps no before-images (the config says so): what the sync committed before it
    # raised cannot be put back, and nothing says how much that was
    p = _project(tmp_path, make_db, "keep_before_images = false\n")
    run, _ = _release_whose_sync_raises(p)
    assert run["state"] == "failed" and run["exit_code"] == 3, run
    result = run["result"]
    assert result["compensated"] is False and result["failed_step"] == "sync"
    steps = {s["step"]: s for s in result["steps"]}
    comp = steps["sync"]["compensation"]
    assert comp["action"] == "manual" and comp["why"] == "the sync kept no before-images"
    assert steps["migrate"]["compensation"] is None
    assert "could not undo sync (the sync kept no before-images)" in run["error"], run
    assert _one(p.dsns["prod"], "SELECT count(*) FROM items WHERE v LIKE 'row %'") == 300


def test_a_release_cancelled_during_its_sync_is_undone_and_ends_cancelled(
    tmp_path: Path, make_db: Any
) -> None:
    # the cancel comes while the sync waits for notes' lock, after items committed: the
    # notes unit stops at its next event (its transaction rolls back), and the saga undoes
    # what the release did before it ends: items reverted, V3 undone; prod as it was
    p = _project(tmp_path, make_db)
    before = _contents(p.dsns["prod"])
    run, events = _release_whose_sync_raises(p, stop="cancel")
    said = _undone_after_cancel(p, before, run, events, "sync: cancelled")
    assert "sync: cancelled" in said and "sync: compensation sync revert" in said, said
    assert "migrate: compensation migrate undo" in said, said


def _undone_after_cancel(
    p: Any, before: Any, run: dict[str, Any], events: list[dict[str, Any]], error: str
) -> list[str]:
    """The checks of a release cancelled during its sync (items committed): it ended
    cancelled, the sync reverted, V3 undone, prod as ``before``. The events' messages."""
    assert run["state"] == "cancelled" and run["exit_code"] == 3, run
    assert run["error"] == error, run
    result = run["result"]
    assert result["ok"] is False and result["failed_step"] == "sync", result
    assert result["cancelled"] is True and result["compensated"] is True, result
    steps = {s["step"]: s for s in result["steps"]}
    sync = steps["sync"]
    assert sync["state"] == "failed" and sync["result"]["cancelled"] is True, sync
    assert len(sync["result"]["run_ids"]) == 1, sync
    comp = sync["compensation"]
    assert comp["action"] == "sync revert" and comp["run_ids"] == sync["result"]["run_ids"]
    assert comp["reverted"][0]["totals"] == {"removed": 200, "reinserted": 1, "restored": 100}
    assert steps["migrate"]["state"] == "compensated", steps["migrate"]
    assert steps["migrate"]["compensation"]["action"] == "migrate undo"
    assert (steps["verify"]["state"], steps["health"]["state"]) == ("pending", "pending")
    assert _contents(p.dsns["prod"]) == before
    assert (_one(p.dsns["prod"], _V_SHORT), _one(p.dsns["prod"], _UNDONE)) == (0, 1)
    assert events[-1]["type"] == "error" and events[-1]["state"] == "cancelled", events[-1]
    return [e.get("message", "") for e in events]


@pytest.mark.parametrize("sent_back", [False, True], ids=["running", "sent-back"])
def test_a_release_cancelled_while_its_worker_was_dead_is_undone_when_taken_on(
    tmp_path: Path, make_db: Any, sent_back: bool
) -> None:
    # the server dies while the sync waits for notes' lock (items committed); the cancel
    # reaches the run while no worker carries it (still running, or sent back for an
    # approval): the worker that takes it on does not repeat the sync but undoes it, from
    # the run id the saga recorded, then the migration
    p = _project(tmp_path, make_db)
    before = _contents(p.dsns["prod"])
    run, events = _release_whose_sync_raises(p, stop="kill", sent_back=sent_back)
    said = _undone_after_cancel(p, before, run, events, "sync: cancelled before it finished")
    second = said[said.index("release started (attempt 2)") :]
    # no step again: the sync is not started a second time
    assert not [m for m in second if m.endswith(": started")], second


@pytest.mark.parametrize("undo_file", [True, False], ids=["with-U3", "without-U3"])
def test_a_migration_step_that_failed_part_way_is_undone_to_where_it_started(
    tmp_path: Path, make_db: Any, undo_file: bool
) -> None:
    # V3 applies (its own transaction), V4 fails: the failed step itself is undone back to
    # version 2, the version it started at; before, "compensated" was true with V3 left.
    # Without U3 it cannot be: the saga stops there and says how to get back
    p = _project(tmp_path, make_db)
    p.write("V4__bad.sql", "ALTER TABLE no_such_table ADD COLUMN x int;\n")
    if not undo_file:
        (p.migrations / "U3__short.sql").unlink()
    before = _contents(p.dsns["prod"])
    tok = tokens(p, olga="operator", bob="approver")
    srv = Server(p).start()
    try:
        olga, bob, rid = _approved_release(srv, tok, ["public.items"])
        run = wait_run(bob, rid, timeout=120)
    finally:
        srv.stop()
    assert run["state"] == "failed" and run["error"].startswith("migrate: "), run
    result = run["result"]
    assert result["failed_step"] == "migrate" and result["cancelled"] is False, result
    steps = {s["step"]: s for s in result["steps"]}
    migrate = steps["migrate"]
    assert migrate["state"] == "failed" and migrate["result"]["version_before"] == "2", migrate
    if not undo_file:
        assert result["compensated"] is False, result
        comp = migrate["compensation"]
        assert comp["action"] == "manual" and comp["why"] == "no U file for V3__short.sql", comp
        backup = steps["backup"]["result"]["backup"]
        assert f"pgferry backup restore {backup} --env prod --yes" in run["error"], run
        assert steps["backup"]["compensation"] is None, steps["backup"]
        assert (_one(p.dsns["prod"], _V_SHORT), _one(p.dsns["prod"], _UNDONE)) == (1, 0)
        return
    assert result["compensated"] is True, result
    assert migrate["compensation"]["action"] == "migrate undo", migrate
    assert migrate["compensation"]["to"] == "2", migrate
    assert steps["sync"]["state"] == "pending", steps["sync"]
    assert (_one(p.dsns["prod"], _V_SHORT), _one(p.dsns["prod"], _UNDONE)) == (0, 1)
    assert _contents(p.dsns["prod"]) == before


#: an advisory lock V4 waits for in the test below
_GATE = 716_300


def test_a_release_cancelled_during_its_migration_is_undone_to_where_it_started(
    tmp_path: Path, make_db: Any
) -> None:
    # V3 applied, V4 waits at the test's advisory lock; the cancel comes then. The step ends
    # without saying what it applied (it was stopped, not failed): its undo goes by the
    # version it recorded as it started and the history, back to version 2
    p = _project(tmp_path, make_db)
    p.write(
        "V4__extra.sql",
        f"SELECT pg_advisory_xact_lock({_GATE});\nALTER TABLE notes ADD COLUMN extra int;\n",
    )
    p.write("U4__extra.sql", "ALTER TABLE notes DROP COLUMN extra;\n")
    p.write("V5__more.sql", "ALTER TABLE notes ADD COLUMN more int;\n")
    p.write("U5__more.sql", "ALTER TABLE notes DROP COLUMN more;\n")
    before = _contents(p.dsns["prod"])
    tok = tokens(p, olga="operator", bob="approver")
    gate = psycopg.connect(p.dsns["prod"], autocommit=True)
    gate.execute("SELECT pg_advisory_lock(%s)", [_GATE])
    srv = Server(p).start()
    try:
        olga, bob, rid = _approved_release(srv, tok, ["public.items"])
        deadline = time.monotonic() + 120
        while not _one(
            p.dsns["prod"],
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND objid = %s",
            [_GATE],
        ):
            run = bob.get(f"/api/runs/{rid}").json()["run"]
            assert run["state"] in ("queued", "running"), (run, run_events(p, rid))
            assert time.monotonic() < deadline, run_events(p, rid)
            time.sleep(0.05)
        assert _one(p.dsns["prod"], _V_SHORT) == 1  # V3 is in
        assert olga.post(f"/api/runs/{rid}/cancel").status_code == 200
        # an event asks the control database at most every CANCEL_POLL_S: past that, the
        # next one (V4 finished) sees the cancel
        time.sleep(3 * Recorder.CANCEL_POLL_S)
        gate.close()
        run = wait_run(bob, rid, timeout=120)
    finally:
        gate.close()
        srv.stop()
    assert run["state"] == "cancelled" and run["error"] == "migrate: cancelled", run
    result = run["result"]
    assert result["cancelled"] is True and result["compensated"] is True, result
    steps = {s["step"]: s for s in result["steps"]}
    migrate = steps["migrate"]
    assert "applied" not in migrate["result"], migrate  # stopped: it did not say
    assert migrate["result"]["version_before"] == "2", migrate
    comp = migrate["compensation"]
    assert (comp["action"], comp["to"], comp["current_version"]) == ("migrate undo", "2", "2")
    assert steps["sync"]["state"] == "pending", steps["sync"]
    assert _one(p.dsns["prod"], _V_SHORT) == 0
    added = "SELECT count(*) FROM information_schema.columns WHERE column_name IN ('extra', 'more')"
    assert _one(p.dsns["prod"], added) == 0
    history = _rows(
        p.dsns["prod"],
        "SELECT version, type FROM flyway_schema_history WHERE version::int > 2"
        " ORDER BY installed_rank",
    )
    # the cancel stops V4 as it waits (a lock-wait notice: it rolls back) or after it
    # committed (the next file's start); V5 never runs; whatever was applied is undone
    assert history in (
        [("3", "SQL"), ("3", "DELETE")],
        [("3", "SQL"), ("4", "SQL"), ("4", "DELETE"), ("3", "DELETE")],
    ), history
    assert _contents(p.dsns["prod"]) == before

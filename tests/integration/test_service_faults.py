"""The admin service under faults, with real processes: the server killed (SIGKILL) in the
middle of a sync and started again (the run resumes to its end, nothing lost or doubled);
in the middle of an approved release's saga (it resumes without a new approval and
repeats no finished step); in the middle of a release's compensation (the compensation
cut short carries on, no finished step or compensation runs again); and a flood of wrong
tokens from one address (429)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import wait_for
from tests.helpers.service import Server, make_project, run_events, seed, tokens, wait_run

pytestmark = pytest.mark.slow


def _project(tmp_path: Path, make_db: Any, extra: str = "") -> Any:
    from pgferry.commands import migrate_run
    from pgferry.config import load_config

    p = make_project(tmp_path / "proj", make_db, extra)
    cfg = load_config(p.config)
    for env in ("dev", "prod"):
        migrate_run.up(cfg, migrate_run.RunOptions(env=env, yes=True))
    return p


def _copying(p: Any) -> bool:
    """Rows are going into prod's items (an empty table is loaded by one COPY, whose
    batches are counted when it ends)."""
    with psycopg.connect(p.dsns["prod"], autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_stat_progress_copy"
            " WHERE relid = 'items'::regclass AND tuples_processed > 0"
        ).fetchone()
    return bool(row and row[0])


def test_server_killed_mid_sync_resumes_the_run_nothing_lost_or_doubled(
    tmp_path: Path, make_db: Any
) -> None:
    # prod unprotected here: the run starts without an approval (four eyes: test_service_api)
    p = _project(tmp_path, make_db, "\n[sync]\nbatch_size = 100\njobs = 1\n")
    text = p.config.read_text().replace("protected = true\n", "")
    p.config.write_text(text)
    n = 150_000
    seed(p.dsns["dev"], n)
    # prod's rows go in slowly while slow_load holds a row: the kill always meets the load
    # (a fast machine once finished the whole table first); the restarted run goes at speed
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE slow_load (on_ bool); INSERT INTO slow_load VALUES (true);"
            " CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF EXISTS (SELECT FROM slow_load) THEN PERFORM pg_sleep(0.001); END IF;"
            " RETURN NEW; END $$;"
            " CREATE TRIGGER slow BEFORE INSERT ON items FOR EACH ROW"
            " EXECUTE FUNCTION slow()"
        )
    tok = tokens(p, olga="operator")
    srv = Server(p).start()
    try:
        c = srv.client(tok["olga"])
        r = c.post(
            "/api/admin/environment-sync",
            json={"mode": "full", "source": "dev", "target": "prod", "tables": ["public.items"]},
        )
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once rows are being written
            if any(e["type"] == "batch_written" for e in run_events(p, rid)) or _copying(p):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the sync never wrote a batch")
        srv.kill()
        with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
            # the killed load's backend would go on for many seconds with the rows its
            # socket still holds (1 ms a row) before it read their end; on a network, TCP
            # keepalive ends such a backend: end it here
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with psycopg.connect(p.dsns["control"], autocommit=True) as conn:
            state = conn.execute(
                "SELECT state FROM pgferry_control.runs WHERE id = %s", [rid]
            ).fetchone()
        assert state == ("running",)
    finally:
        srv.stop()
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        # the killed load is rolled back: nothing half-written
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        conn.execute("DELETE FROM slow_load")
    again = Server(p, port=srv.port).start()
    try:
        c = again.client(tok["olga"])
        run = wait_run(c, rid, timeout=120)
        assert run["state"] == "succeeded", run
        assert run["attempts"] == 2
        assert any(e.get("step") == "resume" for e in run_events(p, rid))
    finally:
        again.stop()
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        count, distinct, total = conn.execute(
            "SELECT count(*), count(DISTINCT id), sum(id) FROM items"
        ).fetchone() or (0, 0, 0)
        journal = conn.execute(
            "SELECT outcome FROM pgferry.journal WHERE command = 'sync' ORDER BY id"
        ).fetchall()
    assert count == distinct == n and total == n * (n + 1) // 2
    # the killed attempt is in prod's journal as a run that died, then the one that ended
    assert [o for (o,) in journal][-1] == "ok"
    assert len(journal) == 2


def test_failed_token_checks_are_rate_limited_per_address(tmp_path: Path, make_db: Any) -> None:
    p = _project(tmp_path, make_db)
    tok = tokens(p, viewer="viewer")
    srv = Server(p, args=("--no-worker",)).start()
    try:
        c = srv.client("pgf_wrong")
        codes = [c.get("/api/runs").status_code for _ in range(7)]
        assert codes[:5] == [401] * 5 and codes[-1] == 429, codes
        r = srv.client(tok["viewer"]).get("/api/runs")  # the address waits, token or not
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
        assert srv.client().get("/api/health").json()["worker"] == "off"
    finally:
        srv.stop()


def test_cancel_a_running_sync_stops_it_at_its_next_event(tmp_path: Path, make_db: Any) -> None:
    p = _project(tmp_path, make_db)
    p.config.write_text(p.config.read_text().replace("protected = true\n", ""))
    seed(p.dsns["dev"], 1000)
    tok = tokens(p, olga="operator")
    # another sync "holds" items (its advisory lock): this one starts, then waits on it
    hold = psycopg.connect(p.dsns["prod"], autocommit=True)
    hold.execute("SELECT pg_advisory_lock(x'70677379'::int, hashtext('public.items'))")
    srv = Server(p).start()
    try:
        c = srv.client(tok["olga"])
        r = c.post(
            "/api/admin/environment-sync",
            json={
                "mode": "incremental",
                "source": "dev",
                "target": "prod",
                "tables": ["public.items"],
            },
        )
        rid = r.json()["id"]
        wait_for(
            p.dsns["prod"],
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE"
            " datname = current_database() AND wait_event = 'advisory'",
            what="the sync waiting on the other one",
        )
        r = c.post(f"/api/runs/{rid}/cancel")
        assert r.status_code == 200 and r.json()["run"]["cancel_requested"] is True, r.text
        assert r.json()["run"]["state"] == "running"
        hold.close()  # the sync goes on: its next event stops it
        run = wait_run(c, rid, timeout=60)
    finally:
        srv.stop()
        hold.close()
    assert run["state"] == "cancelled" and run["error"] == "cancelled", run
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        rows = conn.execute("SELECT outcome FROM pgferry.journal WHERE command = 'sync'").fetchall()
    assert ("ok",) not in rows


def test_server_killed_mid_release_resumes_the_saga_without_repeating_a_step(
    tmp_path: Path, make_db: Any
) -> None:
    # prod protected: approved once, the resumed run is not asked again although V2, which
    # its plan showed, is applied by then (its own progress is no change of plan)
    p = _project(tmp_path, make_db)
    seed(p.dsns["dev"], 200)
    p.write("V2__tags.sql", "CREATE TABLE tags (id bigint PRIMARY KEY);\n")
    tok = tokens(p, olga="operator", bob="approver")
    # another sync "holds" items (its advisory lock): the release's sync step waits on it
    hold = psycopg.connect(p.dsns["prod"], autocommit=True)
    hold.execute("SELECT pg_advisory_lock(x'70677379'::int, hashtext('public.items'))")
    srv = Server(p).start()
    try:
        c = srv.client(tok["olga"])
        r = c.post(
            "/api/releases", json={"env": "prod", "source": "dev", "tables": ["public.items"]}
        )
        assert r.status_code == 202 and r.json()["state"] == "awaiting_approval", r.text
        rid = r.json()["id"]
        assert srv.client(tok["bob"]).post(f"/api/runs/{rid}/approve").status_code == 200
        deadline = time.monotonic() + 60
        while not any(
            e.get("step") == "sync" and e.get("state") == "running" for e in run_events(p, rid)
        ):
            assert time.monotonic() < deadline, [
                (e["type"], e.get("message")) for e in run_events(p, rid)
            ]
            time.sleep(0.1)
        srv.kill()
    finally:
        srv.stop()
        hold.close()
    again = Server(p, port=srv.port).start()
    try:
        run = wait_run(again.client(tok["olga"]), rid, timeout=120)
    finally:
        again.stop()
    assert run["state"] == "succeeded", run
    assert [s["state"] for s in run["result"]["steps"]] == ["done"] * 5
    said = [e.get("message", "") for e in run_events(p, rid)]
    assert "backup: done before, not repeated" in said
    assert "migrate: done before, not repeated" in said
    assert len(list((p.root / "backups" / "prod").iterdir())) == 1  # one pre-release backup
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (200,)
        assert conn.execute(
            "SELECT count(*) FROM flyway_schema_history WHERE version = '2' AND success"
        ).fetchone() == (1,)


#: the undo of V2 waits on this advisory lock while the test holds it
UNDO_GATE = 4242


def _control(p: Any, query: str, args: list[Any]) -> list[tuple[Any, ...]]:
    with psycopg.connect(p.dsns["control"], autocommit=True) as c:
        return c.execute(query, args).fetchall()


def _waiting_on(p: Any, lock: int) -> bool:
    """A session of prod waits on the advisory lock ``lock``."""
    with psycopg.connect(p.dsns["prod"], autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND objid = %s",
            [lock],
        ).fetchone()
    return bool(row and row[0])


def test_server_killed_mid_compensation_resumes_it_without_repeating_one(
    tmp_path: Path, make_db: Any
) -> None:
    # a release into protected prod whose verify fails after its sync wrote (a trigger in
    # prod adds a row of its own to every load): the compensation reverts the sync, then
    # undoes V2, whose U file waits on an advisory lock the test holds; the server is killed
    # there and started again
    p = _project(tmp_path, make_db, '\n[migrate]\nlock_timeout = "60s"\n')
    seed(p.dsns["dev"], 200)
    p.write(
        "V2__short.sql",
        "ALTER TABLE items ADD CONSTRAINT v_short CHECK (length(v) < 100) NOT VALID;\n",
    )
    p.write(
        "U2__short.sql",
        f"SELECT pg_advisory_xact_lock({UNDO_GATE});\nALTER TABLE items DROP CONSTRAINT v_short;\n",
    )
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION one_more() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF pg_trigger_depth() < 2 THEN"
            " INSERT INTO items VALUES (-1, 'not from dev') ON CONFLICT DO NOTHING; END IF;"
            " RETURN NULL; END $$;"
            " CREATE TRIGGER one_more AFTER INSERT ON items FOR EACH STATEMENT"
            " EXECUTE FUNCTION one_more()"
        )
    tok = tokens(p, olga="operator", bob="approver")
    gate = psycopg.connect(p.dsns["prod"], autocommit=True)
    gate.execute("SELECT pg_advisory_lock(%s)", [UNDO_GATE])
    srv = Server(p).start()
    try:
        olga, bob = srv.client(tok["olga"]), srv.client(tok["bob"])
        r = olga.post("/api/releases", json={"source": "dev", "tables": ["public.items"]})
        assert r.status_code == 202 and r.json()["state"] == "awaiting_approval", r.text
        rid = r.json()["id"]
        assert bob.post(f"/api/runs/{rid}/approve").status_code == 200
        deadline = time.monotonic() + 120
        while not _waiting_on(p, UNDO_GATE):  # the compensation's undo of V2, at the gate
            run = bob.get(f"/api/runs/{rid}").json()["run"]
            assert run["state"] in ("queued", "running"), (run, run_events(p, rid))
            assert time.monotonic() < deadline, run_events(p, rid)
            time.sleep(0.1)
        srv.kill()
    finally:
        srv.stop()
    steps = dict(
        _control(
            p,
            "SELECT name, state || coalesce(' ' || (compensation ->> 'action'), '')"
            " FROM pgferry_control.saga_steps WHERE run_id = %s",
            [rid],
        )
    )
    assert steps == {
        "backup": "done",
        "migrate": "done",
        "sync": "compensated sync revert",
        "verify": "failed",
        "health": "pending",
    }, steps
    # the killed server's session still waits on the gate: end it, as an operator would,
    # then open the gate
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> %s",
            [gate.info.backend_pid],
        )
    gate.close()
    again = Server(p, port=srv.port).start()
    try:
        run = wait_run(again.client(tok["olga"]), rid, timeout=120)
    finally:
        again.stop()
    assert run["state"] == "failed" and run["attempts"] == 2, run
    assert run["error"].startswith("verify"), run
    got = {
        s["step"]: (s["state"], (s["compensation"] or {}).get("action"))
        for s in run["result"]["steps"]
    }
    assert got == {
        "backup": ("compensated", "none"),
        "migrate": ("compensated", "migrate undo"),
        "sync": ("compensated", "sync revert"),
        "verify": ("failed", None),
        "health": ("pending", None),
    }, got
    said = [e.get("message", "") for e in run_events(p, rid)]
    assert any(e.get("step") == "resume" for e in run_events(p, rid))
    # the second attempt: no step again, no compensation again but the one cut short
    second = said[said.index("release started (attempt 2)") :]
    assert [m for m in second if m.endswith(("started", "compensating", "done"))] == [
        "migrate: compensating"
    ], second
    assert "migrate: compensation migrate undo" in second
    assert "backup: compensation none" in second
    assert not [m for m in second if m.startswith("sync:")], second
    assert len(list((p.root / "backups" / "prod").iterdir())) == 1
    with psycopg.connect(p.dsns["prod"], autocommit=True) as conn:
        journal = conn.execute(
            "SELECT command, outcome FROM pgferry.journal ORDER BY id"
        ).fetchall()
        # as before the release: the revert took out what the sync's transaction wrote
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE conname = 'v_short'"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM flyway_schema_history WHERE version = '2' AND type = 'DELETE'"
        ).fetchone() == (1,)
    journal = journal[journal.index(("backup create", "ok")) :]  # the release's rows
    done = [c for c, o in journal if o == "ok"]
    for command in ("backup create", "migrate up", "sync", "sync revert", "migrate undo"):
        assert done.count(command) == 1, (command, journal)
    assert [o for c, o in journal if c == "verify"] == ["problem"], journal


def test_serve_stops_at_once_when_the_control_database_is_gone(
    tmp_path: Path, make_db: Any, pg_admin_dsn: str
) -> None:
    # nothing can record its end any more: SIGTERM stops serve within seconds (it waited
    # out the worker's and each pool's timeouts, ten seconds and more), with one line
    from psycopg import sql

    p = _project(tmp_path, make_db)
    srv = Server(p).start()
    name = psycopg.conninfo.conninfo_to_dict(p.dsns["control"])["dbname"]
    assert isinstance(name, str) and srv.proc is not None
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    assert srv.client().get("/api/health").status_code == 503
    before = len(srv.log())
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        srv.proc.wait(30)
    finally:
        srv.stop()
    took = time.monotonic() - t0
    said = [
        line
        for line in srv.log()[before:].splitlines()
        # the pool's own reconnect attempts, until it is closed
        if line.strip() and not line.startswith("error connecting in 'pool-")
    ]
    assert took < 5, (took, said)
    assert len(said) == 1, said
    assert said[0].startswith("pgferry serve: stopping without the control database (")
    assert f'database "{name}" does not exist' in said[0]


def test_a_resumed_approved_migration_is_not_sent_back_for_the_files_it_applied(
    tmp_path: Path, make_db: Any
) -> None:
    # an approved migrate_up of V2 and V3 on protected prod whose worker died after V2:
    # run again, what is left (V3) is the end of the approved plan, so it goes on without
    # a second approval; a file added since is a change of plan (awaiting_approval again)
    from pgferry.config import load_config
    from pgferry.jobs import runner, runs
    from pgferry.jobs.control import Control
    from pgferry.jobs.operations import KINDS

    p = _project(tmp_path, make_db)
    p.write("V2__tags.sql", "CREATE TABLE tags (id bigint PRIMARY KEY);\n")
    p.write("V3__notes.sql", "CREATE TABLE notes (id bigint PRIMARY KEY);\n")
    assert p.run("migrate", "up", "-e", "prod", "--yes", "--target", "1").code == 0
    cfg = load_config(p.config)
    ctl = Control(cfg).ensure()
    try:
        op, args = KINDS["migrate_up"], {"env": "prod"}

        def approved_run() -> str:
            plan = op.plan(cfg, op.args.model_validate(args))  # type: ignore[misc]
            run, _ = runs.create(
                ctl,
                kind="migrate_up",
                env="prod",
                arguments=args,
                requested_by="olga",
                state="queued",
                plan=plan,
                plan_hash=runs.digest(plan["hashed"]),
            )
            # approved by bob; its first attempt applied V2, then the worker died
            runs.update(ctl, run.id, approved_by="bob", approved_at="now()", attempts=1)
            return run.id

        rid = approved_run()
        assert p.run("migrate", "up", "-e", "prod", "--yes", "--target", "2").code == 0
        done = runner.execute(cfg, ctl, rid)
        assert done is not None and done.state == "succeeded", done
        with psycopg.connect(p.dsns["prod"]) as c:
            assert c.execute("SELECT to_regclass('public.notes') IS NOT NULL").fetchone() == (True,)
        # the same, but a V5 appeared after the approval: the plan changed
        p.write("V4__a.sql", "CREATE TABLE a4 (id int);\n")
        rid = approved_run()
        p.write("V5__b.sql", "CREATE TABLE b5 (id int);\n")
        again = runner.execute(cfg, ctl, rid)
        assert again is not None and again.state == "awaiting_approval", again
    finally:
        ctl.close()

"""The run's source snapshot ends part way (its sessions are closed on the source).

A sync imports one snapshot of the source into every worker. When the source closes the
sessions that hold it (a failover, an admin's ``pg_terminate_backend``, an idle timeout),
a unit that has not read its rows cannot read them in that snapshot any more. What one
would expect of such a run: the units that committed stay committed and are reported so;
the others fail with one sentence that says the source snapshot is gone and to run the
sync again; the run exits 3. It used to end with a raw driver error from closing the
snapshot (hiding what had committed), or from re-importing it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.helpers import Project, one, sql, write_project
from tests.helpers.sync import end_source_sessions

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL);
CREATE TABLE notes (id bigint PRIMARY KEY, v text NOT NULL);
"""
DATA = """
INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 300) g;
INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 200) g;
"""


def test_a_lost_source_snapshot_fails_the_rest_in_one_sentence(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    p: Project = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "prod": make_db("prod")},
        protected=(),
        extra="[sync]\njobs = 2\n",
    )
    sql(p.dsns["dev"], SCHEMA + DATA)
    sql(p.dsns["prod"], SCHEMA)
    sql(p.dsns["prod"], "INSERT INTO notes VALUES (1, 'note 1')")  # not empty: no fast path
    hold = psycopg.connect(p.dsns["prod"])
    hold.execute("LOCK TABLE notes IN SHARE MODE")  # the notes unit waits to write
    proc = p.popen("--json", "sync", "dev", "prod")
    try:
        deadline = time.monotonic() + 60
        while not (
            one(p.dsns["prod"], "SELECT count(*) FROM items") == 300
            and one(
                p.dsns["prod"],
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'notes'::regclass",
            )
        ):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "items never committed"
            time.sleep(0.05)
        assert end_source_sessions(p.dsns["dev"]) >= 2  # the coordinator and a worker
    finally:
        hold.close()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, (out, err)
    assert "Traceback" not in err, err
    assert out.strip(), err
    res = json.loads(out)
    by = {t["table"]: t for t in res["tables"]}
    assert by["public.items"]["status"] == "ok" and by["public.items"]["inserted"] == 300
    notes = by["public.notes"]
    assert notes["status"] == "failed", notes
    assert "source" in notes["error"] and "snapshot" in notes["error"], notes["error"]
    assert "again" in notes["error"], notes["error"]
    # notes was left as it was; a second run completes it
    assert one(p.dsns["prod"], "SELECT count(*) FROM notes") == 1
    again = p.run("--json", "sync", "dev", "prod")
    assert again.code == 0, again.out + again.err
    assert one(p.dsns["prod"], "SELECT count(*) FROM notes") == 200

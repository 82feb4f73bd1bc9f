"""pgferry's own schema has one owner and a version (pgferry.pg.ownschema): an earlier
pgferry's schema is upgraded in place with its data; steps apply in order, once; two
processes upgrading at once; a role that is not the schema's owner."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as psql

from pgferry import __version__
from pgferry.errors import BadInput
from pgferry.pg import ownschema
from pgferry.pg.ownschema import STEPS, Upgrade
from pgferry.pg.ownschema.v1 import CHAIN_LOCK
from tests.helpers import Cli, q, run, write_project

# What pgferry left in a target before the schema had a version: the journal's first
# layout (a table of finished runs), and sync state and dead letters from a sync (before
# before-images, migration progress and schema fingerprints existed).
EARLIER = """
CREATE SCHEMA pgferry;
CREATE TABLE pgferry.journal (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(), os_user text NOT NULL,
    db_role text NOT NULL DEFAULT current_user, env text NOT NULL, command text NOT NULL,
    arguments jsonb NOT NULL DEFAULT '{}', outcome text NOT NULL,
    exit_code integer NOT NULL DEFAULT 0, duration_ms integer,
    details jsonb NOT NULL DEFAULT '{}');
CREATE TABLE pgferry.sync_state (
    source text NOT NULL, table_name text NOT NULL, strategy text NOT NULL, watermark text,
    inflight_xids bigint[] NOT NULL DEFAULT '{}', checkpoint jsonb,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source, table_name, strategy));
CREATE TABLE pgferry.dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(), run_id text NOT NULL,
    source text NOT NULL, table_name text NOT NULL, key jsonb NOT NULL,
    row_data jsonb NOT NULL, error text NOT NULL, sqlstate text NOT NULL DEFAULT '');
INSERT INTO pgferry.journal (at, os_user, env, command, outcome, details) VALUES
    ('2026-01-01', 'ann', 'dev', 'migrate up', 'ok', '{}'),
    ('2026-01-02', 'bob', 'dev', 'sync', 'failed', '{"error": "boom"}');
INSERT INTO pgferry.sync_state (source, table_name, strategy, watermark)
    VALUES ('qa', 'public.t', 'watermark', '2026-01-02');
INSERT INTO pgferry.dead_letters (run_id, source, table_name, key, row_data, error)
    VALUES ('r1', 'qa', 'public.t', '{"id": 1}', '{"id": 1}', 'bad value');
"""
V1_TABLES = [
    "dead_letters",
    "before_images",
    "journal_log",
    "migration_progress",
    "schema_fingerprint",
    "schema_version",
    "sync_state",
]
#: every table of the newest version (2 adds the backfills' checkpoints and before-images,
#: 3 the index definitions a sync set aside)
TABLES = [*V1_TABLES, "backfill_images", "backfill_state", "set_aside"]
NEWEST = [(s.version, s.description) for s in STEPS]


def _tables(dsn: str) -> list[str]:
    return [
        r[0]
        for r in q(
            dsn,
            "SELECT relname::text FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = 'pgferry'"
            " AND c.relkind = 'r' ORDER BY 1",
        )
    ]


def test_an_earlier_schema_is_upgraded_in_place_and_keeps_its_data(
    db: str, tmp_path: Path, cli: Cli
) -> None:
    q(db, EARLIER)
    p = write_project(tmp_path / "p", {"dev": db})
    p.write("V1__t.sql", "CREATE TABLE t (id bigint PRIMARY KEY);\n")
    r = run(cli, p, "migrate", "up", "-e", "dev")
    assert r.code == 0, r.err
    assert sorted(_tables(db)) == sorted(TABLES)
    assert q(
        db, "SELECT version, pgferry, installed_by FROM pgferry.schema_version ORDER BY 1"
    ) == [
        (1, __version__, "pgferry_test"),
        (2, __version__, "pgferry_test"),
        (3, __version__, "pgferry_test"),
    ]
    # the earlier journal's runs come first, in order, then the new one
    assert q(db, "SELECT command, outcome, error FROM pgferry.journal ORDER BY id") == [
        ("migrate up", "ok", None),
        ("sync", "failed", "boom"),
        ("migrate up", "ok", None),
    ]
    assert q(db, "SELECT source, watermark FROM pgferry.sync_state") == [("qa", "2026-01-02")]
    assert q(db, "SELECT error FROM pgferry.dead_letters") == [("bad value",)]
    assert run(cli, p, "journal", "verify", "-e", "dev").code == 0


def _step_t2(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS pgferry.t2 (step int)")
    conn.execute("INSERT INTO pgferry.t2 VALUES (2)")


def _step_t3(conn: psycopg.Connection[Any]) -> None:
    conn.execute("INSERT INTO pgferry.t2 VALUES (3)")  # needs version 2's table


N = len(STEPS)
LATER = (*STEPS, Upgrade(N + 1, "a table", _step_t2), Upgrade(N + 2, "a row in it", _step_t3))


def test_steps_apply_in_order_once_and_never_backwards(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as c:
        assert ownschema.ensure(c, LATER[:1]) == []  # an older pgferry: version 1 only
        assert ownschema.state(c).recorded == 1
        assert q(db, "SELECT to_regclass('pgferry.backfill_state')") == [(None,)]
        assert ownschema.ensure(c, LATER[: N + 1]) == []
        assert ownschema.state(c).recorded == N + 1
        assert ownschema.ensure(c, LATER) == []
        assert ownschema.ensure(c, LATER) == []  # current: nothing runs again
        assert c.execute("SELECT step FROM pgferry.t2 ORDER BY 1").fetchall() == [(2,), (3,)]
        assert c.execute(
            "SELECT version, description FROM pgferry.schema_version ORDER BY 1"
        ).fetchall() == [(s.version, s.description) for s in LATER]
        # an older pgferry meeting the newer schema leaves it as it is
        assert ownschema.ensure(c, STEPS) == []
        assert ownschema.state(c).recorded == N + 2


def test_a_dropped_journal_trigger_is_re_created_and_named(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as c:
        ownschema.ensure(c)
        c.execute("ALTER TABLE pgferry.journal_log DISABLE TRIGGER journal_append_only")
        c.execute("DROP TRIGGER journal_no_truncate ON pgferry.journal_log")
        assert ownschema.ensure(c) == ["journal_append_only", "journal_no_truncate"]
        assert ownschema.state(c).triggers_whole()


RACER = """
import sys
from pgferry import journal
from pgferry.pg.connect import Target
journal.append(Target("dev", sys.argv[1]), "race", outcome="ok")
"""


def _waiters(dsn: str) -> int:
    """Sessions waiting for pgferry's schema lock (as the server shows them)."""
    return int(
        q(
            dsn,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND NOT granted AND objid = %s",
            [CHAIN_LOCK],
        )[0][0]
    )


@pytest.mark.parametrize("earlier", [False, True])
def test_two_processes_upgrading_at_once(db: str, earlier: bool) -> None:
    if earlier:
        q(db, EARLIER)
    with psycopg.connect(db, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [CHAIN_LOCK])
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACER, db],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 60
        while _waiters(db) < 2:  # both are past their fast path, queued on the lock
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
                p.communicate() for p in procs
            ]
            time.sleep(0.02)
        holder.execute("SELECT pg_advisory_unlock(%s)", [CHAIN_LOCK])
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and "warning" not in err, err
    assert q(db, "SELECT version, description FROM pgferry.schema_version ORDER BY 1") == NEWEST
    assert sorted(_tables(db)) == sorted(TABLES)
    commands = [r[0] for r in q(db, "SELECT command FROM pgferry.journal ORDER BY id")]
    assert commands == (["migrate up", "sync"] if earlier else []) + ["race", "race"]


@pytest.fixture
def writer(pg_admin_dsn: str, db: str) -> str:
    """A role that may write pgferry's rows but owns nothing (granted by the owner)."""
    from pgferry.pg import embedded

    with psycopg.connect(pg_admin_dsn, autocommit=True) as a:
        embedded.ensure_role(a, "pgferry_writer")
    with psycopg.connect(db, autocommit=True) as c:
        ownschema.ensure(c)
        dbname = c.info.dbname
        c.execute(
            psql.SQL("GRANT CONNECT ON DATABASE {} TO pgferry_writer").format(
                psql.Identifier(dbname)
            )
        )
        c.execute(
            "GRANT USAGE ON SCHEMA pgferry TO pgferry_writer;"
            " GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA pgferry TO pgferry_writer;"
            " GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgferry TO pgferry_writer"
        )
    return embedded.role_dsn(pg_admin_dsn, "pgferry_writer", dbname)


def test_a_role_that_does_not_own_the_schema(
    db: str, writer: str, make_db: Callable[..., str]
) -> None:
    from pgferry import journal
    from pgferry.pg.connect import Target

    journal.append(Target("dev", writer), "as writer", outcome="ok")
    assert q(db, "SELECT command, db_role FROM pgferry.journal") == [
        ("as writer", "pgferry_writer")
    ]
    # an unversioned schema that holds all of the newest version counts as that version
    q(db, "DROP TABLE pgferry.schema_version")
    journal.append(Target("dev", writer), "again", outcome="ok")
    assert len(q(db, "SELECT 1 FROM pgferry.journal")) == 2
    # an upgrade it may not make: one sentence saying who can
    with psycopg.connect(writer, autocommit=True) as c, pytest.raises(BadInput) as e:
        ownschema.ensure(c, LATER)
    assert f"at version {N} " in e.value.message and f"needs version {N + 2}" in e.value.message
    assert "'pgferry_writer' may not change it" in e.value.message


def test_a_database_that_takes_no_writes_is_named_as_such(
    tmp_path: Path, make_db: Callable[..., str], cli: Cli
) -> None:
    """A read-only database (a provider's read-only mode on a full disk) was reported as a
    privilege the role lacks ("may not change it ... run it as the owner"), exit 2."""
    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")})
    db = psycopg.conninfo.conninfo_to_dict(p.dsns["prod"])["dbname"]
    q(p.dsns["prod"], f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
    r = run(cli, p, "sync", "dev", "prod", "--yes")
    assert r.code == 3, r.out + r.err
    assert "this database takes no writes: it is a standby, or sessions start read-only" in r.err
    assert "may not change it" not in r.err

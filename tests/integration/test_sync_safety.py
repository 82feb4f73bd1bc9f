"""What a sync may and may not do to a target, on a real server (issue 9).

Masking direction (1), the prompt with counts (3), row-level security (4), two runs at
once (7), readers during a load (9), schema drift (12), the check after --atomic (14),
triggers (15), verify read-only (18) and session timeouts (22).
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Project, Result, sql, wait_for, write_project

KEY = "safety-test-mask-key-0123456789"

SCHEMA = """
CREATE TABLE people (id int PRIMARY KEY, email text, full_name text, note text,
                     updated_at timestamptz NOT NULL DEFAULT now());
"""
DATA = """
INSERT INTO people (id, email, full_name, note)
SELECT g, 'p' || g || '@real.example', 'Person ' || g, 'n' || g FROM generate_series(1, 40) g;
"""
MASK = '[sync.mask]\n"public.people.email" = "email"\n"public.people.full_name" = "name"\n'


def one(dsn: str, q: str) -> Any:
    with psycopg.connect(dsn) as c:
        row = c.execute(q).fetchone()
        return row[0] if row else None


def run(cli: Callable[..., Result], p: Project, *args: str) -> Result:
    return cli("--config", str(p.config), "--json", *args)


@pytest.fixture
def envs(tmp_path: Path, make_db: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> Project:
    """dev, staging, qa (unprotected) and prod (protected), the same table everywhere."""
    p = write_project(
        tmp_path / "p",
        {n: make_db(n) for n in ("dev", "staging", "qa", "prod")},
        protected=("prod",),
        extra=MASK,
    )
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    monkeypatch.setenv("PGFERRY_MASK_KEY", KEY)
    return p


# -- 1: masking only where personal data leaves a protected environment ------------------


def test_masks_apply_leaving_prod_never_into_it(envs: Project, cli: Callable[..., Result]) -> None:
    sql(envs.dsns["dev"], DATA)
    r = run(cli, envs, "sync", "dev", "prod", "--yes")  # into a protected env: never masked
    assert r.code == 0, r.out + r.err
    assert r.json["tables"][0]["masked"] == {}
    assert one(envs.dsns["prod"], "SELECT email FROM people WHERE id = 1") == "p1@real.example"
    assert run(cli, envs, "verify", "dev", "prod").code == 0  # real values on both sides
    r = run(cli, envs, "sync", "prod", "staging")  # leaving prod: masked
    assert r.code == 0, r.out + r.err
    assert r.json["tables"][0]["masked"] == {"email": "email", "full_name": "name"}
    assert one(envs.dsns["staging"], "SELECT email FROM people WHERE id = 1").endswith(
        "@example.invalid"
    )
    assert run(cli, envs, "verify", "prod", "staging").code == 0  # masked source = staging
    # dev -> qa: both unprotected, no rule names qa: copied as it is
    assert run(cli, envs, "sync", "dev", "qa").code == 0
    assert one(envs.dsns["qa"], "SELECT email FROM people WHERE id = 1") == "p1@real.example"


def test_no_mask_really_copies_unmasked_and_the_plan_lists_masks(
    envs: Project, cli: Callable[..., Result]
) -> None:
    sql(envs.dsns["prod"], DATA)
    r = run(cli, envs, "sync", "prod", "staging", "--dry-run")
    plan = r.json["options"]["plan"]["tables"][0]
    assert plan["masked"] == {"email": "email", "full_name": "name"}
    r = run(cli, envs, "sync", "prod", "staging", "--no-mask", "--reason", "support case 12")
    assert r.code == 0, r.out + r.err
    assert one(envs.dsns["staging"], "SELECT email FROM people WHERE id = 2") == "p2@real.example"
    assert "support case 12" in " ".join(r.json["warnings"])


def test_a_rule_naming_a_target(envs: Project, cli: Callable[..., Result]) -> None:
    base = envs.config.read_text(encoding="utf-8").replace(MASK, "")
    sql(envs.dsns["dev"], DATA)
    envs.config.write_text(
        base + '[sync.mask]\n"public.people.email" = { rule = "email", targets = ["qa"] }\n',
        encoding="utf-8",
    )
    assert run(cli, envs, "sync", "dev", "qa").code == 0  # named: masked, even from dev
    assert one(envs.dsns["qa"], "SELECT email FROM people WHERE id = 3").startswith("u_")
    assert run(cli, envs, "sync", "dev", "staging").code == 0  # not named: as it is
    assert one(envs.dsns["staging"], "SELECT email FROM people WHERE id = 3") == ("p3@real.example")
    envs.config.write_text(
        base + '[sync.mask]\n"public.people.email" = { rule = "email", targets = ["prod"] }\n',
        encoding="utf-8",
    )
    r = run(cli, envs, "sync", "dev", "prod", "--yes")
    assert r.code == 2 and "protected environment 'prod'" in r.err
    assert one(envs.dsns["prod"], "SELECT count(*) FROM people") == 0


# -- 3: a look first ------------------------------------------------------------------------


def _interactive(p: Project, answer: str, *args: str) -> tuple[int, str]:
    """Run pgferry on a pseudo-terminal, answer its question, return (exit code, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgferry", "--config", str(p.config), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=p.root,
        env={**os.environ, "COLUMNS": "200"},
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if not answered and b"[y/N]" in out:
            os.write(master, answer.encode() + b"\n")
            answered = True
        if proc.poll() is not None and not ready:
            break
    proc.wait(timeout=30)
    os.close(master)
    return proc.returncode, out.decode(errors="replace")


def test_the_prompt_shows_what_would_change_before_asking(envs: Project) -> None:
    sql(envs.dsns["dev"], DATA)
    sql(envs.dsns["prod"], "INSERT INTO people (id, email) VALUES (1, 'changed'), (99, 'x')")
    code, out = _interactive(envs, "n", "sync", "dev", "prod")
    assert code == 4, out
    assert "public.people" in out and "[y/N]" in out
    # insert 39, update 1, delete 1, shown before the question
    row = next(line for line in out.splitlines() if "public.people" in line and "│" in line)
    assert [c.strip() for c in row.split("│")][5:8] == ["39", "1", "1"], row
    assert one(envs.dsns["prod"], "SELECT count(*) FROM people") == 2  # nothing written
    code, out = _interactive(envs, "y", "sync", "dev", "prod")
    assert code == 0, out
    assert one(envs.dsns["prod"], "SELECT count(*) FROM people") == 40


# -- 4: row-level security ------------------------------------------------------------------


def test_row_level_security_stops_the_table_with_what_to_grant(
    envs: Project, cli: Callable[..., Result]
) -> None:
    sql(
        envs.dsns["dev"],
        DATA
        + """
        ALTER TABLE people ENABLE ROW LEVEL SECURITY;
        ALTER TABLE people FORCE ROW LEVEL SECURITY;  -- the owner is filtered too
        CREATE POLICY only_some ON people USING (id <= 10);""",
    )
    sql(envs.dsns["qa"], "INSERT INTO people (id) SELECT g FROM generate_series(1, 40) g")
    for cmd in (("sync", "dev", "qa"), ("verify", "dev", "qa")):
        r = run(cli, envs, *cmd)
        assert r.code == 3, r.out
        err = r.json["tables"][0]["error"]
        assert "row-level security on the source" in err and "BYPASSRLS" in err
        assert "pgferry_test" in err
    assert one(envs.dsns["qa"], "SELECT count(*) FROM people") == 40  # nothing deleted


# -- 7: two syncs into the same target at once ------------------------------------------------


def test_a_second_sync_waits_then_names_the_first(
    envs: Project, cli: Callable[..., Result]
) -> None:
    sql(envs.dsns["dev"], DATA)
    # the first sync's inserts wait until the test opens a gate: a sequence outside the
    # synced schemas, read without a snapshot, so the writer sees it open at once
    sql(
        envs.dsns["qa"],
        """
        CREATE SCHEMA gate;
        CREATE SEQUENCE gate.gate;
        CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN
             WHILE (SELECT last_value FROM gate.gate) < 2 LOOP PERFORM pg_sleep(0.02); END LOOP;
             RETURN NEW;
           END $$;
        CREATE TRIGGER slow BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION slow();""",
    )
    envs.config.write_text(
        envs.config.read_text(encoding="utf-8").replace(
            "[sync.mask]", '[sync]\nlock_wait = "1s"\n\n[sync.mask]'
        ),
        encoding="utf-8",
    )
    first = envs.popen("sync", "dev", "qa", "--json")
    try:
        wait_for(
            envs.dsns["qa"],
            "SELECT count(*) FROM pg_stat_activity WHERE application_name"
            " = 'pgferry sync writer' AND state = 'active' AND query ~ 'people'",
            alive=first,
            what="the first sync writing people",
        )
        second = envs.popen("sync", "dev", "qa")
        # it waits for the first run's table lock (lock_wait), as the server shows ...
        wait_for(
            envs.dsns["qa"],
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a"
            " USING (pid) WHERE l.locktype = 'advisory' AND NOT l.granted"
            " AND a.application_name LIKE %s",
            [f"pgferry sync % pid {second.pid}"],
            alive=second,
            what="the second sync waiting for the table lock",
        )
        # ... then gives up, naming the first (still held at the gate)
        _, err = second.communicate(timeout=60)
    finally:
        sql(envs.dsns["qa"], "SELECT setval('gate.gate', 2)")
    assert second.returncode == 3, err
    r = Result(3, "", err)
    assert "another sync is writing public.people in qa: pgferry sync " in r.err
    assert f"pid {first.pid}" in r.err and "session started" in r.err
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert run(cli, envs, "verify", "dev", "qa").code == 0


# -- 9: readers during the load of an empty table ---------------------------------------------


@pytest.mark.parametrize("target,blocks", [("prod", False), ("qa", True)])
def test_readers_wait_only_where_block_readers_allows(
    envs: Project, cli: Callable[..., Result], target: str, blocks: bool
) -> None:
    sql(envs.dsns["dev"], DATA)
    plan = run(cli, envs, "sync", "dev", target, "--dry-run").json["options"]["plan"]
    assert bool(plan["tables"][0]["locks"]) is blocks
    sql(
        envs.dsns[target],
        """
        CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$;
        CREATE TRIGGER slow BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION slow();""",
    )
    proc = envs.popen("sync", "dev", target, "--yes")
    deadline = time.monotonic() + 30
    while not one(
        envs.dsns[target],
        "SELECT count(*) FROM pg_stat_activity WHERE query ~ '^COPY .*people' AND state = 'active'",
    ):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    with psycopg.connect(envs.dsns[target], autocommit=True) as reader:
        reader.execute("SET lock_timeout = '300ms'")
        if blocks:
            with pytest.raises(psycopg.errors.LockNotAvailable):
                reader.execute("SELECT count(*) FROM people")
        else:
            assert reader.execute("SELECT count(*) FROM people").fetchone() == (0,)
    proc.communicate(timeout=60)
    assert proc.returncode == 0


# -- 12: schema drift is never silent ------------------------------------------------------------


def test_a_table_missing_on_the_target_is_a_finding(
    envs: Project, cli: Callable[..., Result]
) -> None:
    sql(envs.dsns["dev"], DATA + "CREATE TABLE extra (id int PRIMARY KEY);")
    for cmd in (("verify", "dev", "qa"), ("sync", "dev", "qa")):
        r = run(cli, envs, *cmd)
        assert r.code == 1, r.out
        assert r.json["findings"] == [
            "public.extra exists on the source but not on the target: apply the migrations first"
        ]
        by = {t["table"]: t for t in r.json["tables"]}
        assert by["public.extra"]["status"] == "missing"
    text = cli("--config", str(envs.config), "verify", "dev", "qa")
    assert "drift: public.extra: exists on the source but not on the target" in text.out


# -- 14 and 15: the check after --atomic; triggers that change what was written -----------------


def test_atomic_runs_the_check_after_and_triggers_are_named(
    envs: Project, cli: Callable[..., Result], tmp_path: Path
) -> None:
    sql(envs.dsns["dev"], DATA)
    sql(
        envs.dsns["qa"],
        """
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN NEW.updated_at := now() + interval '1 day'; RETURN NEW; END $$;
        CREATE TRIGGER touch BEFORE INSERT OR UPDATE ON people FOR EACH ROW
        EXECUTE FUNCTION touch();""",
    )
    report = tmp_path / "r.md"
    r = run(cli, envs, "sync", "dev", "qa", "--atomic", "--report", str(report))
    assert r.code == 1, r.out  # the check after found what the trigger did
    t = r.json["tables"][0]
    assert t["checked_after"] is True and t["checksums_match"] is False
    assert t["status"] == "differs" and "user triggers fired (touch)" in t["note"]
    assert "the triggers explain" in t["note"]
    md = report.read_text(encoding="utf-8")
    assert "≠ source" in md and "user triggers fired" in md
    # disabled for the load, the check after passes
    envs.config.write_text(
        envs.config.read_text(encoding="utf-8") + "\n[sync.tables."
        '"public.people"]\ntriggers = "disable"\n',
        encoding="utf-8",
    )
    r = run(cli, envs, "sync", "dev", "qa", "--atomic", "--verify-after")
    assert r.code == 0, r.out
    assert r.json["tables"][0]["checksums_match"] is True
    # without the check, the report does not claim a match
    run(cli, envs, "sync", "dev", "qa", "--atomic")
    from pgferry.sync import report as rep
    from pgferry.sync.result import SyncResult, TableResult

    res = SyncResult("dev", "qa", tables=[TableResult("public.people", status="ok")])
    assert "not compared again after the sync" in rep.markdown(res)


# -- 16: text in square brackets is printed, not taken for markup ---------------------------------


def test_messages_keep_their_square_brackets(envs: Project, cli: Callable[..., Result]) -> None:
    envs.config.write_text(
        envs.config.read_text(encoding="utf-8") + '\n[sync.tables."public.gone"]\nkey = ["id"]\n',
        encoding="utf-8",
    )
    sql(envs.dsns["dev"], "CREATE TABLE nokey (a int)")
    sql(envs.dsns["qa"], "CREATE TABLE nokey (a int)")
    r = cli("--config", str(envs.config), "sync", "dev", "qa")
    assert 'warning: [sync.tables."public.gone"] names a table that exists on neither side' in r.out
    assert "no primary key and no [sync.tables] key" in r.out
    r = cli("--config", str(envs.config), "sync", "dev", "qa", "--dry-run")
    assert "no primary key and no [sync.tables] key" in r.out


# -- 18: verify writes nothing --------------------------------------------------------------------


def test_verify_is_read_only_on_a_protected_target(
    envs: Project, cli: Callable[..., Result]
) -> None:
    sql(envs.dsns["dev"], DATA)
    assert run(cli, envs, "verify", "dev", "prod").code == 1
    assert one(envs.dsns["prod"], "SELECT to_regnamespace('pgferry')") is None
    # where a journal exists, verify adds its row to it
    assert run(cli, envs, "sync", "dev", "prod", "--yes").code == 0
    assert run(cli, envs, "verify", "dev", "prod").code == 0
    assert (
        one(envs.dsns["prod"], "SELECT command FROM pgferry.journal ORDER BY id DESC LIMIT 1")
        == "verify"
    )


# -- 22: the session's own timeouts ---------------------------------------------------------------


def test_short_database_timeouts_do_not_break_a_run(
    envs: Project, cli: Callable[..., Result]
) -> None:
    sql(envs.dsns["dev"], DATA)
    for env in ("dev", "qa"):
        db = envs.dsns[env].split("dbname=")[1].split()[0]
        sql(
            envs.dsns[env],
            f"ALTER DATABASE {db} SET idle_in_transaction_session_timeout = "
            "'200ms'; "
            f"ALTER DATABASE {db} SET statement_timeout = '300ms'",
        )
    sql(
        envs.dsns["qa"],
        """
        CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$;
        CREATE TRIGGER slow BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION slow();""",
    )
    r = run(cli, envs, "sync", "dev", "qa", "--jobs", "1")  # ~0.8 s of inserts, idle sources
    assert r.code == 0, r.out + r.err
    assert run(cli, envs, "verify", "dev", "qa").code == 0

"""The journal on a real server (issue 10 items 11 and 12): a start row and a completion,
`died` for a killed run, errors carried, who as the server says, a hash chain that
`pgferry journal verify` recomputes, refusals journaled."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgferry import journal
from pgferry.errors import BadInput
from pgferry.pg.connect import Target
from tests.helpers import Project, Result, q, write_project

Cli = Callable[..., Result]


def runs(dsn: str) -> list[tuple[Any, ...]]:
    return q(dsn, "SELECT command, outcome, exit_code, error FROM pgferry.journal ORDER BY id")


def verify(cli: Cli, p: Project, env: str = "dev") -> Result:
    return cli("--config", str(p.config), "journal", "verify", "--env", env, "--json")


def test_start_and_end_rows_who_and_errors(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGFERRY_USER", "mallory")
    monkeypatch.setenv("USER", "mallory")
    t = Target("dev", db)
    with journal.operation(t, "cmd", {"x": 1}) as op:
        # while it runs: a start row, and the run reads as running
        assert q(db, "SELECT phase, outcome FROM pgferry.journal_log") == [("start", "running")]
        assert runs(db) == [("cmd", "running", None, None)]
        op.details["n"] = 1
    with pytest.raises(BadInput), journal.operation(t, "bad", {}):
        raise BadInput("no such thing")
    with pytest.raises(KeyboardInterrupt), journal.operation(t, "stopped", {}):
        raise KeyboardInterrupt
    with journal.operation(t, "summary", {}) as op:  # a caller's outcome and its summary agree
        op.outcome, op.exit_code, op.details["ok"] = "failed", 3, True
    assert runs(db) == [
        ("cmd", "ok", 0, None),
        ("bad", "bad_input", 2, "no such thing"),
        ("stopped", "failed", 3, "interrupted (Ctrl-C or SIGTERM)"),
        ("summary", "failed", 3, "failed (exit 3)"),
    ]
    assert q(db, "SELECT details->>'ok' FROM pgferry.journal WHERE command = 'summary'") == [
        ("false",)
    ]
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    assert q(db, "SELECT DISTINCT os_user, db_role FROM pgferry.journal_log") == [
        (me, "pgferry_test")
    ]
    assert q(db, "SELECT count(*) FROM pgferry.journal_log WHERE phase = 'end'") == [(4,)]


def slow_up(project: Project) -> subprocess.Popen[str]:
    """A real `migrate up` process, returned once its file is running."""
    project.write("V1__slow.sql", "SELECT pg_sleep(30);")
    p = project.popen("migrate", "up")
    deadline = time.monotonic() + 20
    while not q(
        project.dsns["dev"], "SELECT 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return p


def test_a_killed_run_shows_as_died(project: Project, cli: Cli) -> None:
    dev = project.dsns["dev"]
    p = slow_up(project)
    assert runs(dev) == [("migrate up", "running", None, None)]
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    deadline = time.monotonic() + 15
    while runs(dev)[0][1] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    ((cmd, outcome, _, error),) = runs(dev)
    assert (cmd, outcome) == ("migrate up", "died")
    assert error.startswith("the run ended without finishing")
    r = cli("--config", str(project.config), "journal")
    assert "migrate up  died" in r.out


def test_sigterm_carries_its_error(project: Project) -> None:
    dev = project.dsns["dev"]
    p = slow_up(project)
    p.send_signal(signal.SIGTERM)
    assert p.wait(20) == 3
    assert runs(dev) == [("migrate up", "failed", 3, "interrupted (Ctrl-C or SIGTERM)")]


def test_chain_verify_finds_changed_removed_and_backdated_rows(project: Project, cli: Cli) -> None:
    dev = project.dsns["dev"]
    for i in range(1, 5):
        project.write(f"V{i}__m{i}.sql", f"CREATE TABLE m{i} ();")
        assert cli("--config", str(project.config), "migrate", "up").code == 0
    r = verify(cli, project)
    assert r.code == 0 and r.json["ok"] and r.json["rows"] == 8, r.out
    head = r.json["head"]
    r = cli("--config", str(project.config), "journal", "verify")
    assert (
        f"dev: the journal is intact (8 rows, chain unbroken, append-only triggers in place);"
        f" head {head}" in r.out
    )
    ids = [i for (i,) in q(dev, "SELECT id FROM pgferry.journal_log ORDER BY id")]
    with psycopg.connect(dev, autocommit=True) as c:  # the owner edits a row behind the trigger
        c.execute("ALTER TABLE pgferry.journal_log DISABLE TRIGGER journal_append_only")
        c.execute("UPDATE pgferry.journal_log SET exit_code = 9 WHERE id = %s", [ids[3]])
    r = verify(cli, project)
    assert r.code == 1
    assert r.json["problems"] == [
        "trigger journal_append_only of pgferry.journal_log was dropped or disabled, so rows "
        "could be changed or removed unseen; the next pgferry command that writes here "
        "re-creates it",
        f"row {ids[3]} was changed after it was written: its hash does not match its content",
    ]
    with psycopg.connect(dev, autocommit=True) as c:  # ... and removes another
        c.execute("DELETE FROM pgferry.journal_log WHERE id IN (%s, %s)", [ids[3], ids[5]])
    r = verify(cli, project)
    assert r.json["problems"][1] == (
        f"a row was removed between row {ids[2]} and row {ids[4]}: row {ids[4]} chains to a "
        "row that is gone"
    )
    # the next command that writes re-creates the trigger and says so in the journal
    assert cli("--config", str(project.config), "migrate", "up").code == 0
    assert q(
        dev, "SELECT command, outcome, error FROM pgferry.journal WHERE command = 'journal'"
    ) == [
        (
            "journal",
            "problem",
            "trigger journal_append_only of "
            "pgferry.journal_log was dropped or disabled; pgferry "
            "re-created it",
        )
    ]
    r = verify(cli, project)
    assert len(r.json["problems"]) == 1 and "was removed" in r.json["problems"][0]


def test_a_head_kept_elsewhere_finds_rows_removed_from_the_end(project: Project, cli: Cli) -> None:
    # the chain of what is left after the last rows are deleted (the triggers disabled, then
    # enabled again) is whole, so verify said "intact"; a head kept from before is not in it
    dev = project.dsns["dev"]
    for i in range(1, 4):
        project.write(f"V{i}__m{i}.sql", f"CREATE TABLE m{i} ();")
        assert cli("--config", str(project.config), "migrate", "up").code == 0
        if i == 2:
            kept = verify(cli, project).json["head"]
    ids = [i for (i,) in q(dev, "SELECT id FROM pgferry.journal_log ORDER BY id")]
    r = cli("--config", str(project.config), "journal", "verify", "--head", kept[:12])
    assert r.code == 0, r.out + r.err
    assert f"the head kept is row {ids[3]}; 2 row(s) were written since" in r.out
    r = cli(*("--config", str(project.config), "--json", "journal", "verify", "--head", kept))
    assert r.json["kept_row"] == ids[3] and r.json["rows_since"] == 2
    with psycopg.connect(dev, autocommit=True) as c:
        c.execute("ALTER TABLE pgferry.journal_log DISABLE TRIGGER journal_append_only")
        c.execute("DELETE FROM pgferry.journal_log WHERE id >= %s", [ids[2]])
        c.execute("ALTER TABLE pgferry.journal_log ENABLE TRIGGER journal_append_only")
    assert verify(cli, project).code == 0  # what the chain alone can tell: nothing
    r = cli(*("--config", str(project.config), "--json", "journal", "verify", "--head", kept))
    assert r.code == 1, r.out
    assert r.json["problems"] == [
        f"the head kept ({kept}) is not a row of this journal: rows were removed from its end "
        "since it was kept, or the whole chain was rewritten"
    ]
    for bad in ("zz", kept[:8], kept + "0"):
        r = cli("--config", str(project.config), "journal", "verify", "--head", bad)
        assert r.code == 2 and "is not a head hash" in r.err, (bad, r.err)


def test_backdated_insert_is_out_of_order(project: Project, cli: Cli) -> None:
    dev = project.dsns["dev"]
    project.write("V1__a.sql", "CREATE TABLE a ();")
    assert cli("--config", str(project.config), "migrate", "up").code == 0
    q(
        dev,
        "INSERT INTO pgferry.journal_log (at, phase, os_user, env, command, outcome)"
        " VALUES ('2020-01-01', 'once', 'root', 'dev', 'migrate up', 'ok')",
    )
    r = verify(cli, project)
    assert r.code == 1
    assert (
        "was inserted out of order: it is dated 2020-01-01T00:00:00+00:00" in r.json["problems"][0]
    )


def test_verify_never_creates_the_journal(project: Project, cli: Cli) -> None:
    r = verify(cli, project, "prod")
    assert r.code == 0 and r.json["exists"] is False
    assert q(project.dsns["prod"], "SELECT to_regclass('pgferry.journal')") == [(None,)]


def test_the_earlier_layout_is_upgraded(db: str, tmp_path: Path, cli: Cli) -> None:
    q(
        db,
        """CREATE SCHEMA pgferry;
        CREATE TABLE pgferry.journal (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT clock_timestamp(), os_user text NOT NULL,
            db_role text NOT NULL DEFAULT current_user, env text NOT NULL, command text NOT NULL,
            arguments jsonb NOT NULL DEFAULT '{}', outcome text NOT NULL,
            exit_code integer NOT NULL DEFAULT 0, duration_ms integer,
            details jsonb NOT NULL DEFAULT '{}');
        INSERT INTO pgferry.journal (at, os_user, env, command, outcome, details) VALUES
            ('2026-01-01', 'ann', 'dev', 'migrate up', 'ok', '{}'),
            ('2026-01-02', 'bob', 'dev', 'sync', 'failed', '{"error": "boom"}');""",
    )
    p = write_project(tmp_path / "p", {"dev": db})
    assert verify(cli, p).code == 1  # no chain yet
    journal.append(Target("dev", db), "test", outcome="ok")
    assert runs(db) == [
        ("migrate up", "ok", 0, None),
        ("sync", "failed", 0, "boom"),
        ("test", "ok", 0, None),
    ]
    assert verify(cli, p).code == 0


def test_refusals_are_journaled(tmp_path: Path, make_db: Callable[..., str], cli: Cli) -> None:
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "prod": make_db("prod")},
        extra='[[blackout]]\nfrom = 2020-01-01\nenvs = ["dev"]\nreason = "freeze"\n',
    )
    prod, dev = p.dsns["prod"], p.dsns["dev"]
    p.write("V1__a.sql", "CREATE TABLE a ();")

    def m(*args: str) -> Result:
        return cli("--config", str(p.config), "migrate", *args)

    assert m("up", "--env", "prod").code == 4  # no journal yet: nothing written, nothing made
    assert q(prod, "SELECT to_regclass('pgferry.journal')") == [(None,)]
    assert m("up", "--env", "prod", "--yes").code == 0
    assert m("up", "--env", "prod").code == 4  # protected, no --yes
    p.write("V1__a.sql", "CREATE TABLE a (x int);")  # validate fails: refused
    assert m("up", "--env", "prod", "--yes").code == 4
    assert m("repair", "--env", "prod").code == 4  # repair without --yes
    assert [(c, o, e) for c, o, e, _ in runs(prod)][1:] == [
        ("migrate up", "refused", 4),
        ("migrate up", "refused", 4),
        ("migrate repair", "refused", 4),
    ]
    errors = [e for *_, e in runs(prod)][1:]
    assert "protected: migrate up needs --yes" in errors[0]
    assert "validate failed" in errors[1] and "repair the migration history" in errors[2]
    # blackout on dev: refused; overridden with a reason: journaled as an override
    p.write("V1__a.sql", "CREATE TABLE a ();")
    assert m("up", "--env", "dev").code == 4  # the window; dev has no journal: none is made
    assert q(dev, "SELECT to_regclass('pgferry.journal')") == [(None,)]
    journal.append(Target("dev", dev), "setup", outcome="ok")
    r = m("up", "--env", "dev")
    assert r.code == 4 and "blackout window" in r.err
    r = m("up", "--env", "dev", "--override-blackout", "--reason", "INC-1")
    assert r.code == 0, r.err
    assert [(c, o) for c, o, *_ in runs(dev)] == [
        ("setup", "ok"),
        ("migrate up", "refused"),
        ("blackout override", "ok"),
        ("migrate up", "ok"),
    ]
    assert q(
        dev,
        "SELECT details->>'reason', details->>'command' FROM pgferry.journal"
        " WHERE command = 'blackout override'",
    ) == [("INC-1", "migrate up")]


def test_a_freeze_covers_sync(tmp_path: Path, make_db: Callable[..., str], cli: Cli) -> None:
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "prod": make_db("prod")},
        extra='[[blackout]]\nfrom = 2020-01-01\nenvs = ["prod"]\nreason = "year-end freeze"\n',
    )
    dev, prod = p.dsns["dev"], p.dsns["prod"]
    for dsn in (dev, prod):
        q(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    q(dev, "INSERT INTO t VALUES (1, 'a')")
    q(prod, "INSERT INTO t VALUES (2, 'only in prod')")
    journal.append(Target("prod", prod), "setup", outcome="ok")

    def sync(*args: str) -> Result:
        return cli("--config", str(p.config), "sync", "dev", "prod", "--yes", *args)

    for mode in ("incremental", "full"):
        r = sync("--mode", mode)
        assert r.code == 4 and "blackout window" in r.err and "year-end freeze" in r.err, r.err
    assert q(prod, "SELECT id FROM t ORDER BY id") == [(2,)]  # nothing deleted
    assert sync("--override-blackout").code == 2  # needs --reason
    assert sync("--mode", "verify").code == 1  # reads only: not refused
    assert sync("--dry-run").code == 0
    r = cli(
        "--config", str(p.config), "sync", "dev", "prod", "--override-blackout", "--reason", "INC-7"
    )  # protected, no --yes: refused (and journaled as refused, not as an override)
    assert r.code == 4 and "needs --yes" in r.err
    r = sync("--mode", "full", "--override-blackout", "--reason", "INC-7 restore")
    assert r.code == 0, r.err
    assert q(prod, "SELECT id FROM t ORDER BY id") == [(1,)]
    got = [(c, o) for c, o, *_ in runs(prod) if c != "verify"]  # (verify journals itself)
    assert got[:6] == [
        ("setup", "ok"),
        ("sync", "refused"),
        ("sync", "refused"),
        ("sync", "refused"),
        ("blackout override", "ok"),
        ("sync", "ok"),
    ]


def test_a_finding_is_not_an_error_and_the_listing_shows_the_counts(
    tmp_path: Path, make_db: Callable[..., str], cli: Cli
) -> None:
    """A verify or sync that finds something (exit 1) is journaled as a problem with its counts,
    not as an error: `pgferry journal` shows what it found on the row's line."""
    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")})
    dev, prod = p.dsns["dev"], p.dsns["prod"]
    for dsn in (dev, prod):
        q(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    q(dev, "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 7) g")
    assert cli("--config", str(p.config), "sync", "dev", "prod", "--yes").code == 0
    q(dev, "UPDATE t SET v = 'dev' WHERE id = 3")
    q(prod, "UPDATE t SET v = 'prod' WHERE id = 3")
    r = cli("--config", str(p.config), "sync", "dev", "prod", "--yes")
    assert r.code == 1 and "changed on both sides" in r.out, r.out
    assert [x for x in runs(prod) if x[0] == "sync"] == [
        ("sync", "ok", 0, None),
        ("sync", "problem", 1, None),
    ]
    listing = cli("--config", str(p.config), "journal", "--env", "prod")
    assert listing.code == 0, listing.err
    lines = [ln for ln in listing.out.splitlines() if " sync " in ln]
    assert "problem" in lines[0] and "conflicts: 1" in lines[0], listing.out
    assert "ok" in lines[1] and "inserted: 7" in lines[1], listing.out

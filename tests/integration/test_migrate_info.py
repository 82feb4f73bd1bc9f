"""migrate new|number|sum|status|validate|baseline|repair against real databases.

History rows are written here the way Flyway writes them (see test_flyway_compat.py),
so these tests do not depend on ``migrate up``; the demo test covers the two together.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgferry.migrate import files, history
from tests.helpers import Project, Result, write_project


def record(dsn: str, path: Path, *, success: bool = True, run: bool = True) -> None:
    """Apply a file and record it as Flyway does (type SQL, description with spaces)."""
    mf = files.parse_name(path)
    assert mf is not None
    mf.read()
    with psycopg.connect(dsn) as c:
        history.ensure_table(c, "public", "flyway_schema_history")
        if run and success:
            c.execute(mf.sql)
        history.insert(
            c,
            "public",
            "flyway_schema_history",
            version=str(mf.version) if mf.version else None,
            description=mf.description,
            type="SQL",
            script=mf.script,
            checksum=mf.checksum,
            installed_by="pgferry_test",
            execution_time=3,
            success=success,
        )


def entries_by_script(r: Result) -> dict[str, dict[str, Any]]:
    return {e["script"]: e for e in r.json["entries"]}


@pytest.fixture
def m(
    project: Project, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """``pgferry --config <project> migrate ...`` in-process, on a wide terminal (rich
    wraps table cells on a narrow one, and text assertions look for whole phrases)."""
    monkeypatch.setenv("COLUMNS", "160")
    return lambda *args: cli("--config", str(project.config), "migrate", *args)


def test_new_and_sum(project: Project, m: Callable[..., Result]) -> None:
    r = m("new", "Add leads: territory index!", "--undo", "--json")
    assert r.code == 0, r.err
    assert r.json["created"] == [
        "migrations/VXXX__add_leads_territory_index.sql",
        "migrations/UXXX__add_leads_territory_index.sql",
    ]
    text = (project.migrations / "VXXX__add_leads_territory_index.sql").read_text()
    assert text.startswith("-- Migration: add leads territory index")
    assert "UXXX__add_leads_territory_index.sql" in text and "pgferry lint" in text
    assert files.sum_state(files.scan(project.migrations)) == "ok"
    # the same description again: refused, nothing written
    r = m("new", "add leads territory index")
    assert r.code == 2 and "already exists" in r.err
    assert m("new", "!!!").code == 2
    # an edit makes the sum stale; `sum` fixes it
    project.write("V1__init.sql", "CREATE TABLE t (id bigint);\n")
    assert files.sum_state(files.scan(project.migrations)) == "stale"
    r = m("sum", "--json")
    assert r.code == 0 and r.json["was"] == "stale" and r.json["files"] == 3
    assert files.sum_state(files.scan(project.migrations)) == "ok"


def test_number_uses_highest_file_and_applied_versions(
    project: Project, m: Callable[..., Result], tmp_path: Path
) -> None:
    project.write("V1__init.sql", "CREATE TABLE t (id bigint);\n")
    project.write("V2__more.sql", "CREATE TABLE u (id bigint);\n")
    # prod was migrated further by another branch: version 7 is applied there
    other = tmp_path / "V7__elsewhere.sql"
    other.write_text("SELECT 1;\n")
    record(project.dsns["prod"], other)
    assert m("new", "b second").code == 0
    assert m("new", "a first", "--undo").code == 0
    assert m("new", "c third").code == 0

    r = m("number", "--dry-run", "--json")
    assert r.code == 0, r.err
    assert [(x["from"], x["to"]) for x in r.json["renames"]] == [
        ("VXXX__a_first.sql", "V8__a_first.sql"),
        ("UXXX__a_first.sql", "U8__a_first.sql"),
        ("VXXX__b_second.sql", "V9__b_second.sql"),
        ("VXXX__c_third.sql", "V10__c_third.sql"),
    ]
    assert {e["env"]: e["version"] for e in r.json["environments"]} == {"dev": None, "prod": "7"}
    assert (project.migrations / "VXXX__a_first.sql").exists()  # dry run: nothing renamed

    # status shows the same numbers the renames will give
    s = m("status", "--env", "prod", "--json")
    assert [(t["script"], t["version"]) for t in s.json["templates"]] == [
        ("VXXX__a_first.sql", "8"),
        ("VXXX__b_second.sql", "9"),
        ("VXXX__c_third.sql", "10"),
    ]

    r = m("number", "--json")
    assert r.code == 0
    names = sorted(p.name for p in project.migrations.iterdir())
    assert names == [
        "U8__a_first.sql",
        "V10__c_third.sql",
        "V1__init.sql",
        "V2__more.sql",
        "V8__a_first.sql",
        "V9__b_second.sql",
        "pgferry.sum",
    ]
    assert files.sum_state(files.scan(project.migrations)) == "ok"
    r = m("number")
    assert r.code == 0 and "no templates" in r.out


def test_number_warns_about_unreachable_env(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "staging": "postgresql://nobody@127.0.0.1:1/none"}
    )
    p.write("V3__x.sql", "SELECT 1;\n")
    p.write("VXXX__y.sql", "SELECT 2;\n")
    r = cli("--config", str(p.config), "migrate", "number", "--json")
    assert r.code == 0, r.err
    assert "warning: staging not reachable" in r.err
    assert r.json["renames"][0]["to"] == "V4__y.sql"
    assert (p.migrations / "V4__y.sql").exists()


def test_number_agrees_with_a_template_applied_on_dev(
    project: Project, m: Callable[..., Result]
) -> None:
    project.write("V1__init.sql", "CREATE TABLE t (id bigint);\n")
    project.write("VXXX__add_u.sql", "CREATE TABLE u (id bigint);\n")
    record(project.dsns["dev"], project.migrations / "V1__init.sql")
    # `up` on dev records the template under the number it would get: 2
    tpl = files.scan(project.migrations).templates[0]
    with psycopg.connect(project.dsns["dev"]) as c:
        c.execute(tpl.sql)
        history.insert(
            c,
            "public",
            "flyway_schema_history",
            version="2",
            description=tpl.description,
            type="SQL",
            script="V2__add_u.sql",
            checksum=tpl.checksum,
            installed_by="x",
            execution_time=1,
            success=True,
        )
    r = m("number", "--json")
    assert r.code == 0, r.err
    assert r.json["renames"][0]["to"] == "V2__add_u.sql"
    s = m("status", "--env", "dev", "--json")
    assert s.json["counts"] == {"applied": 2}, s.json


def test_status_states_and_validate(project: Project, m: Callable[..., Result]) -> None:
    dev = project.dsns["dev"]
    for name, sql in [
        ("V1__a.sql", "CREATE TABLE a (id bigint);\n"),
        ("V2__b.sql", "CREATE TABLE b (id bigint);\n"),
        ("V3__c.sql", "CREATE TABLE c (id bigint);\n"),
        ("V4__d.sql", "CREATE TABLE d (id bigint);\n"),
        ("V6__f.sql", "CREATE TABLE f (id bigint);\n"),
        ("R__view.sql", "CREATE VIEW v AS SELECT 1 AS one;\n"),
    ]:
        project.write(name, sql)
    for name in ("V1__a.sql", "V2__b.sql", "V3__c.sql", "V6__f.sql", "R__view.sql"):
        record(dev, project.migrations / name)
    project.write("V5__e.sql", "CREATE TABLE e (id bigint);\n")
    record(dev, project.migrations / "V5__e.sql", success=False)
    project.write("VXXX__next.sql", "SELECT 1;\n")
    assert m("sum").code == 0

    r = m("validate", "--env", "dev", "--json")
    assert r.code == 1
    assert r.json["problems"] == [
        "4 V4__d.sql: not applied and below the current version 6 (the history is ahead of "
        "the files); `migrate up --out-of-order` applies it, or renumber it",
        "5 V5__e.sql: failed; fix the cause, run `migrate repair`, then `migrate up`",
    ]

    # edit an applied file, delete another
    project.write("V2__b.sql", "CREATE TABLE b (id bigint, x text);\n")
    (project.migrations / "V3__c.sql").unlink()
    r = m("status", "--env", "dev", "--json")
    assert r.code == 0, r.err
    states = {k: v["state"] for k, v in entries_by_script(r).items()}
    assert states == {
        "V1__a.sql": "applied",
        "V2__b.sql": "checksum_mismatch",
        "V3__c.sql": "missing",
        "V4__d.sql": "ignored",
        "V5__e.sql": "failed",
        "V6__f.sql": "applied",
        "VXXX__next.sql": "template",
        "R__view.sql": "applied",
    }
    assert r.json["current_version"] == "6" and r.json["sum"] == "stale"
    assert r.json["templates"] == [{"script": "VXXX__next.sql", "version": "7"}]
    assert not r.json["ok"] and len(r.json["problems"]) == 5

    r = m("validate", "--env", "dev")
    assert r.code == 1
    out = r.out.replace("\n", " ")
    assert "2 V2__b.sql: changed after it was applied" in out
    assert "3 V3__c.sql: applied, but the file is gone" in out
    assert "5 V5__e.sql: failed" in out
    assert "pgferry.sum is stale" in out
    assert "4 V4__d.sql: not applied and below the current version 6" in out
    assert "5 problem(s)" in out

    # the text table renders every state
    r = m("status", "--env", "dev")
    assert r.code == 0
    for word in (
        "checksum mismatch",
        "missing",
        "ignored",
        "failed",
        "template",
        "XXX→7",
        "current version: 6",
        "pgferry.sum: stale",
    ):
        assert word in r.out, word

    # prod: nothing applied, all pending; a fresh database has no history table
    r = m("status", "--env", "prod", "--json")
    assert r.json["current_version"] is None
    assert r.json["counts"] == {"pending": 6, "template": 1}


def test_status_default_env_and_bad_env(project: Project, m: Callable[..., Result]) -> None:
    r = m("status", "--json")
    assert r.code == 0 and r.json["env"] == "dev"
    r = m("status", "--env", "nope")
    assert r.code == 2 and "unknown environment 'nope'" in r.err


def test_baseline(project: Project, m: Callable[..., Result]) -> None:
    project.write("V1__a.sql", "CREATE TABLE a (id bigint);\n")
    project.write("V2__b.sql", "CREATE TABLE b (id bigint);\n")
    project.write("V3__c.sql", "CREATE TABLE c (id bigint);\n")
    r = m("baseline", "--env", "prod", "--version", "2")
    assert r.code == 4 and "protected" in r.err
    with psycopg.connect(project.dsns["prod"]) as c:
        assert not history.exists(c, "public", "flyway_schema_history")

    r = m("baseline", "--env", "prod", "--version", "2", "--yes", "--json")
    assert r.code == 0, r.err
    with psycopg.connect(project.dsns["prod"]) as c:
        rows = c.execute(
            "SELECT installed_rank, version, description, type, script, checksum, installed_by,"
            " execution_time, success FROM flyway_schema_history"
        ).fetchall()
        j = c.execute("SELECT command, outcome, details FROM pgferry.journal").fetchall()
    assert rows == [
        (
            1,
            "2",
            "<< Flyway Baseline >>",
            "BASELINE",
            "<< Flyway Baseline >>",
            None,
            "pgferry_test",
            0,
            True,
        )
    ]
    assert j[0][:2] == ("migrate baseline", "ok") and j[0][2]["version"] == "2"

    r = m("status", "--env", "prod", "--json")
    states = [(e["version"], e["state"]) for e in r.json["entries"]]
    assert states == [
        ("1", "below_baseline"),
        ("2", "baseline"),
        ("2", "below_baseline"),
        ("3", "pending"),
    ]
    assert r.json["current_version"] == "2"

    r = m("baseline", "--env", "prod", "--version", "3", "--yes")
    assert r.code == 2 and "already has 1 row(s)" in r.err
    # a custom description, dev is not protected
    r = m("baseline", "--env", "dev", "--version", "1.5", "--description", "adopted in 2026")
    assert r.code == 0, r.err
    with psycopg.connect(project.dsns["dev"]) as c:
        assert c.execute(
            "SELECT version, description, script FROM flyway_schema_history"
        ).fetchone() == ("1.5", "adopted in 2026", "<< Flyway Baseline >>")
    assert m("baseline", "--env", "dev", "--version", "x").code == 2


def test_repair(project: Project, m: Callable[..., Result]) -> None:
    dev = project.dsns["dev"]
    project.write("V1__a.sql", "CREATE TABLE a (id bigint);\n")
    project.write("V2__b.sql", "CREATE TABLE b (id bigint);\n")
    record(dev, project.migrations / "V1__a.sql")
    record(dev, project.migrations / "V2__b.sql", success=False)
    project.write("V1__a.sql", "-- a comment added after the fact\nCREATE TABLE a (id bigint);\n")
    assert m("sum").code == 0
    assert m("validate", "--env", "dev").code == 1

    r = m("repair", "--env", "dev")  # no terminal, no --yes: refused, nothing changed
    assert r.code == 4 and "--yes" in r.err
    with psycopg.connect(dev) as c:
        assert c.execute("SELECT count(*) FROM flyway_schema_history").fetchone() == (2,)

    r = m("repair", "--env", "dev", "--yes", "--json")
    assert r.code == 0, r.err
    assert [x["script"] for x in r.json["removed_failed"]] == ["V2__b.sql"]
    new_sum = files.scan(project.migrations).by_version()[files.Version("1")].checksum
    assert r.json["realigned"][0]["new_checksum"] == new_sum
    with psycopg.connect(dev) as c:
        rows = c.execute(
            "SELECT version, checksum, success FROM flyway_schema_history ORDER BY installed_rank"
        ).fetchall()
        j = c.execute(
            "SELECT command, outcome, arguments, details FROM pgferry.journal ORDER BY id"
        ).fetchall()
    assert rows == [("1", new_sum, True)]
    assert j[-1][0:2] == ("migrate repair", "ok")
    assert j[-1][3]["removed_failed"][0]["script"] == "V2__b.sql"
    r = m("validate", "--env", "dev", "--json")
    assert r.code == 0, r.json
    assert m("status", "--env", "dev", "--json").json["counts"] == {"applied": 1, "pending": 1}
    r = m("repair", "--env", "dev")
    assert r.code == 0 and "nothing to repair" in r.out


def test_repair_blackout_and_protected(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    extra = '[[blackout]]\nfrom = "2000-01-01"\nenvs = ["prod"]\nreason = "frozen for the audit"\n'
    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, extra=extra)
    p.write("V1__a.sql", "CREATE TABLE a (id bigint);\n")
    record(p.dsns["prod"], p.migrations / "V1__a.sql", success=False)

    def run(*a: str) -> Result:
        return cli("--config", str(p.config), "migrate", *a)

    r = run("repair", "--env", "prod", "--yes")
    assert r.code == 4 and "blackout" in r.err and "frozen for the audit" in r.err
    r = run("repair", "--env", "prod", "--override-blackout")
    assert r.code == 2 and "--reason" in r.err
    r = run("repair", "--env", "prod", "--override-blackout", "--reason", "hotfix INC-42")
    assert r.code == 4 and "protected" in r.err
    r = run("repair", "--env", "prod", "--yes", "--override-blackout", "--reason", "hotfix INC-42")
    assert r.code == 0, r.err
    with psycopg.connect(p.dsns["prod"]) as c:
        d = c.execute(
            "SELECT details FROM pgferry.journal WHERE command = 'migrate repair'"
        ).fetchone()
        assert c.execute("SELECT count(*) FROM flyway_schema_history").fetchone() == (0,)
    assert d is not None and d[0]["blackout_override"]["reason"] == "hotfix INC-42"
    assert "frozen for the audit" in d[0]["blackout_override"]["window"]
    # baseline respects the window too
    r = run("baseline", "--env", "prod", "--version", "1", "--yes")
    assert r.code == 4 and "blackout" in r.err


def test_status_on_5000_files(project: Project, m: Callable[..., Result]) -> None:
    """Correctness at scale (the time is measured in docs/migrations.md, not asserted)."""
    for i in range(1, 5001):
        (project.migrations / f"V{i}__step_{i}.sql").write_text(
            f"-- step {i}\nCREATE TABLE IF NOT EXISTS t{i % 7} (id bigint);\n"
        )
    ms = files.scan(project.migrations)
    rows = [
        (i, str(i), f"step {i}", "SQL", f"V{i}__step_{i}.sql", m_.checksum, "x", 1, True)
        for i, m_ in enumerate(ms.versioned[:4000], 1)
    ]
    with psycopg.connect(project.dsns["dev"]) as c:
        history.ensure_table(c, "public", "flyway_schema_history")
        with c.cursor().copy(
            "COPY flyway_schema_history (installed_rank, version, description, type, script,"
            " checksum, installed_by, execution_time, success) FROM STDIN"
        ) as cp:
            for row in rows:
                cp.write_row(row)
    assert m("sum").code == 0
    t0 = time.perf_counter()
    r = m("status", "--env", "dev", "--json")
    elapsed = time.perf_counter() - t0
    assert r.code == 0, r.err
    assert r.json["counts"] == {"applied": 4000, "pending": 1000}
    assert r.json["current_version"] == "4000" and r.json["sum"] == "ok"
    assert len(r.json["entries"]) == 5000
    print(f"status on 5000 files: {elapsed:.3f}s")  # informational only
    json.dumps(r.json)
    # the text view sums up the quiet rows instead of printing 5,000 lines
    r = m("status", "--env", "dev")
    assert r.code == 0
    assert "3995 older applied migrations (--all lists them)" in r.out
    assert "950 more pending migrations (--all lists them)" in r.out
    assert "current version: 4000   (4000 applied, 1000 pending)" in r.out


def test_status_names_the_failed_statement_of_a_non_transactional_file(
    project: Project, m: Callable[..., Result]
) -> None:
    project.write("V1__t.sql", "CREATE TABLE t (a int, b int);\n")
    project.write(
        "V2__idx.sql",
        "CREATE INDEX CONCURRENTLY t_a ON t (a);\nCREATE INDEX CONCURRENTLY t_c ON t (c);\n",
    )
    assert m("sum").code == 0
    r = m("up", "--env", "dev")
    assert r.code == 3, r.err
    r = m("status", "--env", "dev", "--json")
    entry = entries_by_script(r)["V2__idx.sql"]
    assert entry["state"] == "failed"
    assert entry["failed_statement"]["statement"] == 2
    assert entry["failed_statement"]["statements_done"] == 1
    assert 'column "c" does not exist' in entry["failed_statement"]["error"]
    r = m("status", "--env", "dev")
    assert "failed (statement 2 of 2)" in r.out
    r = m("validate", "--env", "dev")
    assert r.code == 1
    assert "2 V2__idx.sql: failed (statement 2 of 2 (line 2) failed:" in r.out.replace("\n", " ")
    # fix the file, repair, and `up` resumes after the statement that completed
    project.write(
        "V2__idx.sql",
        "CREATE INDEX CONCURRENTLY t_a ON t (a);\nCREATE INDEX CONCURRENTLY t_b ON t (b);\n",
    )
    assert m("sum").code == 0
    r = m("repair", "--env", "dev", "--yes", "--json")
    assert r.code == 0 and [x["script"] for x in r.json["removed_failed"]] == ["V2__idx.sql"]
    r = m("up", "--env", "dev", "--json")
    assert r.code == 0, r.err
    assert m("validate", "--env", "dev").code == 0
    with psycopg.connect(project.dsns["dev"]) as c:
        idx = c.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 't' ORDER BY 1"
        ).fetchall()
    assert idx == [("t_a",), ("t_b",)]


def test_second_template_after_one_applied_on_dev(
    project: Project, m: Callable[..., Result]
) -> None:
    """up, status and number agree on template numbers while one template is applied on dev."""
    project.write("V1__init.sql", "CREATE TABLE t (id bigint);\n")
    project.write("VXXX__a_first.sql", "CREATE TABLE a (id bigint);\n")
    assert m("up", "--env", "dev").code == 0  # records the template as version 2
    project.write("VXXX__b_second.sql", "CREATE TABLE b (id bigint);\n")
    s = m("status", "--env", "dev", "--json").json
    assert [(e["script"], e["state"], e["version"]) for e in s["entries"]] == [
        ("V1__init.sql", "applied", "1"),
        ("VXXX__a_first.sql", "applied", "2"),
        ("VXXX__b_second.sql", "template", "3"),
    ]
    r = m("up", "--env", "dev", "--json")
    assert r.code == 0, r.err
    assert [a["version"] for a in r.json["applied"]] == ["3"]
    r = m("number", "--json")
    assert [(x["to"], x["version"]) for x in r.json["renames"]] == [
        ("V2__a_first.sql", "2"),
        ("V3__b_second.sql", "3"),
    ]
    assert m("sum").code == 0
    r = m("validate", "--env", "dev", "--json")
    assert r.code == 0, r.json


def test_number_leaves_an_orphan_undo_template(project: Project, m: Callable[..., Result]) -> None:
    project.write("V1__init.sql", "SELECT 1;\n")
    project.write("VXXX__x.sql", "SELECT 2;\n")
    project.write("UXXX__y.sql", "SELECT 3;\n")  # no VXXX__y.sql
    r = m("number", "--json")
    assert r.code == 0, r.err
    assert [x["to"] for x in r.json["renames"]] == ["V2__x.sql"]
    assert r.json["orphan_undo"] == ["UXXX__y.sql"]
    assert "UXXX__y.sql has no VXXX file" in r.err
    assert (project.migrations / "UXXX__y.sql").exists()
    s = m("status", "--json").json
    assert any("UXXX__y.sql: undo template without a VXXX file" in w for w in s["warnings"])


def _repair_on_a_terminal(project: Project, answer: bytes) -> tuple[int, bytes]:
    """Run `migrate repair` with stdin and stderr on a pseudo-terminal and answer its question."""
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pgferry",
            "--config",
            str(project.config),
            "migrate",
            "repair",
            "--env",
            "dev",
        ],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=project.root,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(master, 1024)
        except OSError:
            break
    os.write(master, answer)
    out, _ = p.communicate(timeout=60)
    os.close(master)
    return p.returncode, seen + out


def test_repair_asks_on_a_terminal(project: Project) -> None:
    project.write("V1__a.sql", "CREATE TABLE a (id bigint);\n")
    record(project.dsns["dev"], project.migrations / "V1__a.sql", success=False)
    code, text = _repair_on_a_terminal(project, b"n\n")
    assert code == 4, text
    assert b"will remove failed row 1" in text and b"repair in dev?" in text
    code, text = _repair_on_a_terminal(project, b"y\n")
    assert code == 0, text
    assert b"dev: repaired (1 removed, 0 realigned)" in text
    with psycopg.connect(project.dsns["dev"]) as c:
        assert c.execute("SELECT count(*) FROM flyway_schema_history").fetchone() == (0,)


def test_unreadable_history_is_one_line_exit_3(
    tmp_path: Path, make_db: Callable[..., str], pg_admin_dsn: str, cli: Callable[..., Result]
) -> None:
    dsn = make_db("locked")
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    admin = psycopg.conninfo.make_conninfo(pg_admin_dsn, dbname=dbname)
    with psycopg.connect(admin, autocommit=True) as c:  # setup only: a table the role cannot read
        c.execute("CREATE SCHEMA ops")
        history.ensure_table(c, "ops", "flyway_schema_history")
    p = write_project(tmp_path / "p", {"dev": dsn}, extra='[migrate]\nschema = "ops"\n')
    p.write("V1__a.sql", "SELECT 1;\n")
    for verb in ("status", "validate", "repair"):
        r = cli("--config", str(p.config), "migrate", verb, "--env", "dev")
        assert r.code == 3, (verb, r.err)
        assert r.err.startswith(
            "error: cannot read the migration history of dev: permission denied"
        )
        assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1


def test_baseline_and_repair_wait_for_a_running_migration(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    from pgferry.migrate.locks import lock_key

    dsn = make_db("busy")
    p = write_project(tmp_path / "p", {"dev": dsn}, extra='[migrate]\nlock_wait = "1s"\n')
    p.write("V1__a.sql", "SELECT 1;\n")
    record(dsn, p.migrations / "V1__a.sql", success=False)
    with psycopg.connect(dsn, autocommit=True, application_name="someone's migrate up") as c:
        c.execute("SELECT pg_advisory_lock(%s)", [lock_key("public", "flyway_schema_history")])
        r = cli("--config", str(p.config), "migrate", "repair", "--env", "dev", "--yes")
        assert r.code == 3, r.err
        assert "another migration run holds the migration lock" in r.err
        assert "someone's migrate up" in r.err
    r = cli("--config", str(p.config), "migrate", "repair", "--env", "dev", "--yes")
    assert r.code == 0, r.err


def test_template_applied_on_dev_keeps_its_number_when_an_earlier_named_one_arrives(
    project: Project, m: Callable[..., Result]
) -> None:
    """z applied on dev as 2, then a new template `a` (sorts first): z keeps 2, a gets 3."""
    project.write("V1__init.sql", "CREATE TABLE t (id bigint);\n")
    project.write("VXXX__z_last.sql", "CREATE TABLE z (id bigint);\n")
    assert m("up", "--env", "dev").code == 0
    project.write("VXXX__a_first.sql", "CREATE TABLE a (id bigint);\n")
    s = m("status", "--env", "dev", "--json").json
    assert [(e["script"], e["state"], e["version"]) for e in s["entries"]] == [
        ("V1__init.sql", "applied", "1"),
        ("VXXX__a_first.sql", "template", "3"),
        ("VXXX__z_last.sql", "applied", "2"),
    ]
    r = m("up", "--env", "dev", "--json")
    assert r.code == 0, r.err
    assert [a["version"] for a in r.json["applied"]] == ["3"]
    r = m("number", "--json")
    assert sorted((x["to"], x["version"]) for x in r.json["renames"]) == [
        ("V2__z_last.sql", "2"),
        ("V3__a_first.sql", "3"),
    ]
    assert r.json["environments"][0]["applied_templates"] == {
        "VXXX__a_first.sql": "3",
        "VXXX__z_last.sql": "2",
    }
    assert m("sum").code == 0
    assert m("validate", "--env", "dev").code == 0
    # prod has neither: one up applies both in version order
    r = m("up", "--env", "prod", "--yes", "--json")
    assert r.code == 0, r.err
    assert [a["script"] for a in r.json["applied"]] == [
        "V1__init.sql",
        "V2__z_last.sql",
        "V3__a_first.sql",
    ]

"""Foundation against a real server: env check, env template, init, journal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from pgferry import journal
from pgferry.pg.connect import Target, redact
from tests.helpers import Project, Result, write_project


def test_env_check_ok(project: Project, cli: Callable[..., Result]) -> None:
    r = cli("--config", str(project.config), "env", "check", "--json")
    assert r.code == 0, r.err
    envs = {e["env"]: e for e in r.json["environments"]}
    assert envs["dev"]["ok"] and envs["prod"]["ok"]
    assert envs["prod"]["server_version"].startswith("18")
    assert envs["prod"]["role"] == "pgferry_test"
    assert envs["prod"]["privileges"]["superuser"] is False
    assert envs["prod"]["privileges"]["owns_database"] is True


def test_env_check_problems(
    tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "pgferry.toml").write_text(
        '[environments.a]\nurl = "${A_URL}"\n\n'
        '[environments.b]\nurl = "${B_URL}"\n\n'
        '[environments.c]\nurl = "postgresql://app:s3cret@db.example.com/app"\n'
        "protected = true\n\n"
        '[environments.d]\nurl = "postgresql://app:changeme@localhost:1/app"\n'
    )
    (root / ".env").write_text("B_URL=your-database-url-here\n")
    monkeypatch.delenv("A_URL", raising=False)
    r = cli("--config", str(root / "pgferry.toml"), "env", "check")
    assert r.code == 1
    lines = [ln for ln in r.out.splitlines() if ln.startswith("problem")]
    assert any("a: variable A_URL (line 2) is not set" in ln for ln in lines)
    assert any("b: variable B_URL (line 5) holds a placeholder" in ln for ln in lines)
    assert any("c: protected and not on localhost, but sslmode=prefer" in ln for ln in lines)
    assert any("d: the URL's password is a placeholder" in ln for ln in lines)
    assert "s3cret" not in r.out + r.err


def test_env_template_and_init(tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = tmp_path / "new"
    r = cli("init", str(root))
    assert r.code == 0, r.err
    assert (root / "pgferry.toml").is_file() and (root / "migrations").is_dir()
    assert "PROD_DATABASE_URL=" in (root / ".env.template").read_text()
    gi = (root / ".gitignore").read_text().splitlines()
    assert ".env" in gi and ".pgferry/" in gi
    assert cli("init", str(root)).code == 2  # no silent overwrite
    r = cli("--config", str(root / "pgferry.toml"), "env", "template", "--json")
    assert r.code == 0 and r.json["variables"] == ["PROD_DATABASE_URL"]


def test_unknown_env_and_bad_toml(project: Project, cli: Callable[..., Result]) -> None:
    r = cli("--config", str(project.config), "journal", "--env", "staging")
    assert r.code == 2 and "unknown environment 'staging'" in r.err
    project.config.write_text("[environments.dev\n")
    r = cli("--config", str(project.config), "journal", "--env", "dev")
    assert r.code == 2 and "malformed TOML" in r.err and len(r.err.strip().splitlines()) == 1


def test_journal_append_only_and_redacted(
    db: str, cli: Callable[..., Result], tmp_path: Path
) -> None:
    target = Target("dev", db)
    journal.append(
        target,
        "test",
        outcome="ok",
        arguments={"url": "postgresql://u:hunter2@h/db", "token": "abc"},
        details={"note": "password=hunter2 host=x"},
    )
    with psycopg.connect(db, autocommit=True) as c:
        row = c.execute(
            "SELECT arguments::text || details::text, os_user, db_role FROM pgferry.journal"
        ).fetchone()
        assert row is not None and "hunter2" not in row[0] and "abc" not in row[0]
        assert row[2] == "pgferry_test"
        for stmt in (
            "UPDATE pgferry.journal_log SET outcome = 'failed'",
            "DELETE FROM pgferry.journal_log",
            "TRUNCATE pgferry.journal_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):  # the view of runs
            c.execute("UPDATE pgferry.journal SET outcome = 'failed'")
    proj = write_project(tmp_path / "j", {"dev": db})
    r = cli("--config", str(proj.config), "journal", "--env", "dev", "--json")
    assert r.code == 0 and r.json["entries"][0]["command"] == "test"


def test_redact() -> None:
    assert redact("postgresql://app:p%40ss@db:5432/x?sslmode=require") == (
        "postgresql://app:***@db:5432/x?sslmode=require"
    )
    assert redact("host=db password='a b' user=x") == "host=db password=*** user=x"
    assert redact("postgresql://h/db?password=zz&x=1") == "postgresql://h/db?password=***&x=1"


def test_usage_errors_exit_2(cli: Callable[..., Result]) -> None:
    assert cli("env", "check", "--bogus").code == 2
    assert cli("no-such-command").code == 2


def test_journal_operation_records_outcomes(db: str) -> None:
    from pgferry.errors import BadInput, Refused

    target = Target("dev", db)
    with journal.operation(target, "cmd ok", {"x": 1}) as op:
        op.details["n"] = 3
    for exc in (BadInput("bad"), Refused("no"), RuntimeError("boom")):
        with pytest.raises(type(exc)), journal.operation(target, "cmd", {}):
            raise exc
    with psycopg.connect(db) as c:
        rows = c.execute(
            "SELECT command, outcome, exit_code, details->>'error' FROM pgferry.journal ORDER BY id"
        ).fetchall()
    assert rows == [
        ("cmd ok", "ok", 0, None),
        ("cmd", "bad_input", 2, "bad"),
        ("cmd", "refused", 4, "no"),
        ("cmd", "failed", 3, "RuntimeError: boom"),
    ]


def test_embedded_role_creates_in_public(tmp_path: Path) -> None:
    """The embedded role is called like pgferry's schema; its objects still go to public."""
    from pgferry.pg import embedded

    root = Path("/tmp") / f"pgfe-{tmp_path.name[-12:]}"
    try:
        dsn = embedded.ensure_database(root, "app")
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE SCHEMA pgferry")  # as journal.ensure does
            c.execute("CREATE TABLE t (id int)")
            assert c.execute("SELECT to_regclass('public.t')").fetchone() != (None,)
            assert c.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone() == (False,)
    finally:
        embedded.stop(root)
        import shutil

        shutil.rmtree(root, ignore_errors=True)

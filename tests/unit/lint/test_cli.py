"""``pgferry lint`` on both paths: the import-light fast path (the console script) and the
Typer command must print the same bytes and exit with the same code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgferry.cli.lint import _parse_fast, fast_main

UNSAFE = (
    "CREATE TABLE IF NOT EXISTS t (id bigint);\n"
    "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();\n"
    "ALTER TABLE users ADD COLUMN nick varchar(20);\n"
)


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "V1__a.sql").write_text(UNSAFE)
    (tmp_path / "migrations" / "V2__b.sql").write_text("CREATE INDEX i ON users (nick);\n")
    (tmp_path / "migrations" / "U1__a.sql").write_text("DROP TABLE t;\n")
    (tmp_path / "bad.sql").write_text("SELECT 1;\nALTER TABLE t ADDD COLUMN x int;\n")
    (tmp_path / "pgferry.toml").write_text('[lint]\ndisable = ["prefer-text-field"]\n')
    return tmp_path


def both(
    cli: Callable[..., Any], capsys: pytest.CaptureFixture[str], cwd: Path, *args: str
) -> tuple[Any, tuple[int | None, str, str]]:
    slow = cli(*args, cwd=cwd)
    capsys.readouterr()
    code = fast_main(list(args))
    cap = capsys.readouterr()
    return slow, (code, cap.out, cap.err)


@pytest.mark.parametrize(
    "args",
    [
        ("lint",),
        ("lint", "migrations/V1__a.sql"),
        ("--json", "lint"),
        ("lint", "--format", "sarif", "migrations"),
        ("lint", "--pg-version", "10", "migrations/V1__a.sql"),
        ("lint", "bad.sql"),
        ("--json", "lint", "bad.sql"),
        ("lint", "nope.sql"),
        ("lint", "--list-rules"),
        ("lint", "--list-rules", "--format", "markdown"),
        ("lint", "--all", "--format", "json", "migrations"),
    ],
)
def test_fast_path_matches_typer(
    cli: Callable[..., Any], capsys: pytest.CaptureFixture[str], proj: Path, args: tuple[str, ...]
) -> None:
    slow, (code, out, err) = both(cli, capsys, proj, *args)
    assert (code, out, err) == (slow.code, slow.out, slow.err)


def test_exit_codes_and_default_targets(cli: Callable[..., Any], proj: Path) -> None:
    r = cli("--json", "lint", cwd=proj)
    assert r.code == 1
    out = r.json
    # default: the migrations dir without undo files; [lint] disable applies
    assert out["files"] == 2
    assert {Path(f["path"]).name for f in out["findings"]} == {"V1__a.sql", "V2__b.sql"}
    assert "prefer-text-field" not in {f["rule"] for f in out["findings"]}
    assert cli("lint", "--pg-version", "10", "migrations/V1__a.sql", cwd=proj).code == 1
    clean = proj / "clean.sql"
    clean.write_text("ALTER TABLE users ADD COLUMN nickname text;\n")
    assert cli("lint", "clean.sql", cwd=proj).code == 0
    bad = cli("lint", "bad.sql", cwd=proj)
    assert bad.code == 2
    assert bad.err.strip() == 'error: bad.sql:2: syntax error at or near "ADDD"'


def test_bad_lint_config_names_key_and_line(
    cli: Callable[..., Any], proj: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (proj / "pgferry.toml").write_text('[lint]\ndisable = "prefer-text-field"\n')
    slow, (code, out, err) = both(cli, capsys, proj, "lint")
    assert code == slow.code == 2
    assert err == slow.err and "lint.disable" in err and ":2" in err
    (proj / "pgferry.toml").write_text('[lint]\ndisable = ["no-such-rule"]\n')
    r = cli("lint", cwd=proj)
    assert r.code == 2 and "unknown rule 'no-such-rule'" in r.err


def test_pgferry_config_variable_is_honoured_on_both_paths(
    cli: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
    proj: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGFERRY_CONFIG", str(proj / "missing.toml"))
    slow, (code, out, err) = both(cli, capsys, proj, "lint")
    assert code == slow.code == 2
    assert err == slow.err and "no config file at" in err


def test_fast_parser_defers_what_it_does_not_know() -> None:
    assert _parse_fast(["lint", "--help"]) is None
    assert _parse_fast(["migrate", "new", "lint"]) is None
    assert _parse_fast(["lint", "--format", "xml"]) is None
    assert _parse_fast(["-c", "x.toml", "--json", "lint", "-e", "dev", "a.sql"]) == {
        "paths": ["a.sql"],
        "env": "dev",
        "catalog": None,
        "fmt": "json",
        "pg_version": None,
        "list_rules": False,
        "config": "x.toml",
        "json": True,
        "debug": False,
        "jobs": None,
        "all": False,
    }
    assert _parse_fast(["lint", "-j", "2", "a.sql"])["jobs"] == 2  # type: ignore[index]
    assert _parse_fast(["lint", "--jobs=0", "a.sql"]) is None  # Typer explains the bad value


def test_list_rules_json(cli: Callable[..., Any], proj: Path) -> None:
    r = cli("lint", "--list-rules", "--format", "json", cwd=proj)
    rules = json.loads(r.out)["rules"]
    assert len(rules) >= 45
    assert {"code": "PF040", "name": "require-concurrent-index-creation"}.items() <= rules[
        [x["name"] for x in rules].index("require-concurrent-index-creation")
    ].items()

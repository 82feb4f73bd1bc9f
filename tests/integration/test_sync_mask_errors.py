"""A masking rule that fails on one row does not show the unmasked value it read.

The server's message quotes the value it stumbled on (``invalid input syntax for type
integer: "person5@realmail.com"``, a DETAIL's ``Token "..." is invalid``, a function's
``RAISE``); that message went to the terminal, the report and the target's journal,
which is append-only: personal data the masking exists to keep out of staging.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.helpers import Project, Result, q, write_project

KEY = "mask-errors-key-0123456789"
SCHEMA = "CREATE TABLE people (id int PRIMARY KEY, email text, note text);"
DATA = """
INSERT INTO people SELECT g, 'person' || g || '@realmail.com', 'n' || g
FROM generate_series(1, 30) g;
CREATE FUNCTION shout(t text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF t LIKE 'person7@%%' THEN RAISE EXCEPTION 'cannot mask %%', t; END IF;
    RETURN upper(t);
END $$;
"""
#: rules that work on the probe's row and fail on a later one, by what the server says
RULES = {
    # 22P02: the value in double quotes
    "cast": "sql:CASE WHEN starts_with({col}, 'person5@') THEN {col}::int::text ELSE 'x' END",
    # 22P02 for json: the value in DETAIL (Token "person5@realmail" is invalid)
    "json": "sql:CASE WHEN starts_with({col}, 'person5@') THEN ({col})::jsonb::text ELSE 'x' END",
    # P0001: a function's own words, the value unquoted
    "raise": "sql:shout({col})",
}
RUNS = {
    "sync": ("sync", "prod", "staging"),
    "full": ("sync", "prod", "staging", "--mode", "full"),
    "verify": ("verify", "prod", "staging"),
    "dry-run": ("sync", "prod", "staging", "--dry-run"),
}


def project(root: Path, make_db: Callable[..., str], rule: str) -> Project:
    rule_toml = json.dumps(rule)
    proj = write_project(
        root,
        {"prod": make_db("prod"), "staging": make_db("staging")},
        protected=("prod",),
        extra=f'[sync.mask]\n"public.people.email" = {rule_toml}\n',
    )
    for env, text in (("prod", SCHEMA + DATA), ("staging", SCHEMA)):
        with psycopg.connect(proj.dsns[env], autocommit=True) as c:
            c.execute(text.replace("%%", "%"))
    return proj


def leaked(proj: Project, *texts: str) -> list[str]:
    """Where the unmasked addresses show up: the given outputs, and either journal."""
    where = [f"output {i}" for i, t in enumerate(texts) if "realmail" in t]
    for env, dsn in proj.dsns.items():
        found = q(
            dsn,
            "SELECT count(*) FROM pgferry.journal WHERE details::text LIKE '%realmail%'"
            if q(dsn, "SELECT to_regclass('pgferry.journal') IS NOT NULL")[0][0]
            else "SELECT 0",
        )[0][0]
        if found:
            where.append(f"{env}'s journal ({found} rows)")
    return where


# every path a failed source read takes (the sync's comparison, the full load's fast path,
# verify, the dry run) with the quoting failure; the others on two of them
CASES = [("cast", run) for run in sorted(RUNS)] + [
    ("json", "sync"),
    ("raise", "full"),
    ("raise", "verify"),
]


@pytest.mark.parametrize(("rule", "run"), CASES)
def test_a_rule_failing_on_a_row_does_not_show_its_unmasked_value(
    rule: str,
    run: str,
    tmp_path: Path,
    make_db: Callable[..., str],
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proj = project(tmp_path / "p", make_db, RULES[rule])
    monkeypatch.setenv("PGFERRY_MASK_KEY", KEY)
    report = tmp_path / "report.json"
    args = RUNS[run] + (() if run == "dry-run" else ("--report", str(report)))
    r = cli("--config", str(proj.config), *args)
    # (a dry run that stops a table found a problem: exit 1, as for a table the plan stops)
    assert r.code == (1 if run == "dry-run" else 3), r.out + r.err
    state = {"cast": "22P02", "json": "22P02", "raise": "P0001"}[rule]
    # the failure is told, by what failed (the full load's fast path used to fall back to
    # batches on the source's failed transaction and tell "current transaction is aborted")
    assert f"SQLSTATE {state}" in r.out, r.out
    assert "transaction is aborted" not in r.out
    if rule == "cast":
        assert 'invalid input syntax for type integer: "..."' in r.out.replace("\n", " ")
    texts = [r.out, r.err] + ([report.read_text(encoding="utf-8")] if report.exists() else [])
    assert not leaked(proj, *texts)
    assert q(proj.dsns["staging"], "SELECT count(*) FROM people") == [(0,)]


def test_the_rule_probe_does_not_show_the_value_of_the_row_it_read(
    tmp_path: Path,
    make_db: Callable[..., str],
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proj = project(tmp_path / "p", make_db, "sql:({col})::int::text")
    monkeypatch.setenv("PGFERRY_MASK_KEY", KEY)
    r = cli("--config", str(proj.config), "sync", "prod", "staging")
    assert r.code == 2, r.out + r.err
    assert "does not work on public.people.email: invalid input syntax for type integer" in (
        r.err.replace("\n", " ")
    )
    assert not leaked(proj, r.out, r.err)


def test_errors_of_tables_without_masked_columns_keep_the_servers_words(
    tmp_path: Path,
    make_db: Callable[..., str],
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the same failure of the source's read in a table that masks nothing, in a run that
    # masks another: nothing is left out, so the message is as useful as ever
    proj = project(tmp_path / "p", make_db, "redact")
    for env in ("prod", "staging"):
        with psycopg.connect(proj.dsns[env], autocommit=True) as c:
            c.execute("CREATE TABLE codes (id int PRIMARY KEY, code text)")
    with psycopg.connect(proj.dsns["prod"], autocommit=True) as c:
        c.execute("INSERT INTO codes VALUES (1, '5'), (2, 'not a number')")
    with proj.config.open("a", encoding="utf-8") as f:
        f.write('\n[sync.tables."public.codes"]\nwhere = "code::int > 0"\n')
    monkeypatch.setenv("PGFERRY_MASK_KEY", KEY)
    r = cli("--config", str(proj.config), "sync", "prod", "staging")
    assert r.code == 3, r.out + r.err
    out = " ".join(r.out.replace("│", " ").split())
    assert 'public.codes: invalid input syntax for type integer: "not a number"' in out, out
    assert q(proj.dsns["staging"], "SELECT count(*) FROM people") == [(30,)]  # redacted
    assert not leaked(proj, r.out, r.err)

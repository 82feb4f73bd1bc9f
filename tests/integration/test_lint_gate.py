"""The lint gate end to end: ``migrate plan`` shows findings, ``migrate up`` on a protected
env refuses (exit 4) while error findings remain, ``--allow-unsafe --reason`` runs and
journals the reason; suppressed findings do not block. Real subprocesses, real databases.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from pgferry.config import load_config
from pgferry.lint.gate import blocking, check_migrations
from pgferry.migrate.files import scan
from tests.helpers import one

UNSAFE = "CREATE TABLE docs (id bigint);\nINSERT INTO docs SELECT generate_series(1, 100);\n"
INDEX = "CREATE INDEX docs_id ON docs (id);\n"


def _history(dsn: str) -> list[tuple[str, bool]]:
    with psycopg.connect(dsn) as c:
        return [
            (r[0], r[1])
            for r in c.execute(
                "SELECT script, success FROM flyway_schema_history ORDER BY installed_rank"
            )
        ]


def test_gate_refuses_unsafe_migration_on_protected_env(project: Any) -> None:
    project.write("V1__docs.sql", UNSAFE)
    assert project.run("migrate", "up", "--env", "prod", "--yes").code == 0
    project.write("V2__index_docs.sql", INDEX)

    plan = project.run("--json", "migrate", "plan", "--env", "prod")
    assert plan.code == 0, plan.err
    step = json.loads(plan.out)["steps"][0]
    assert step["file"] == "V2__index_docs.sql"
    assert [(f["rule"], f["line"]) for f in step["findings"]] == [
        ("require-concurrent-index-creation", 1)
    ]
    assert step["findings"][0]["impact"].startswith("builds an index on public.docs (")

    refused = project.run("migrate", "up", "--env", "prod", "--yes")
    assert refused.code == 4, refused.err
    assert "require-concurrent-index-creation" in refused.err
    assert _history(project.dsns["prod"]) == [("V1__docs.sql", True)]

    no_reason = project.run("migrate", "up", "--env", "prod", "--yes", "--allow-unsafe")
    assert no_reason.code == 2

    forced = project.run(
        "migrate",
        "up",
        "--env",
        "prod",
        "--yes",
        "--allow-unsafe",
        "--reason",
        "docs has 100 rows; index build takes ms",
    )
    assert forced.code == 0, forced.err
    assert _history(project.dsns["prod"])[-1] == ("V2__index_docs.sql", True)
    details = one(
        project.dsns["prod"],
        "SELECT details FROM pgferry.journal WHERE command"
        " LIKE 'migrate%' AND outcome = 'ok' ORDER BY id DESC LIMIT 1",
    )
    assert "docs has 100 rows; index build takes ms" in json.dumps(details)


def test_gate_lets_unprotected_env_and_suppressed_findings_through(project: Any) -> None:
    project.write("V1__docs.sql", UNSAFE)
    project.write("V2__index_docs.sql", INDEX)
    # dev is not protected: findings are shown, nothing is refused
    assert project.run("migrate", "up", "--env", "dev").code == 0
    # prod: the same files, the index reviewed and suppressed with a reason
    project.write(
        "V2__index_docs.sql",
        "-- pgferry:ignore require-concurrent-index-creation -- docs is tiny\n" + INDEX,
    )
    r = project.run("migrate", "up", "--env", "prod", "--yes")
    assert r.code == 0, r.err
    assert [s for s, ok in _history(project.dsns["prod"]) if ok] == [
        "V1__docs.sql",
        "V2__index_docs.sql",
    ]


def test_check_migrations_catalog_mode_and_syntax_errors(project: Any) -> None:
    project.write("V1__docs.sql", UNSAFE)
    assert project.run("migrate", "up", "--env", "prod", "--yes").code == 0
    project.write("V2__index_docs.sql", INDEX)
    project.write("V3__broken.sql", "ALTER TABLE docs ADDD COLUMN x int;\n")
    cfg = load_config(project.config)
    files = [m for m in scan(cfg.migrations_dir).versioned if m.script != "V1__docs.sql"]
    from pgferry.pg.connect import resolve_env

    found = check_migrations(files, cfg, resolve_env(cfg, "prod"))
    assert [(f.path.rsplit("/", 1)[-1], f.rule, f.severity) for f in found] == [
        ("V2__index_docs.sql", "require-concurrent-index-creation", "error"),
        ("V3__broken.sql", "syntax-error", "error"),
    ]
    assert found[0].impact.startswith("builds an index on public.docs (")
    assert 'V3__broken.sql:1: syntax error at or near "ADDD"' in found[1].message
    assert len(blocking(found)) == 2
    assert all(
        set(f.to_dict()) >= {"rule", "severity", "path", "line", "column", "message"} for f in found
    )


def test_gate_lets_an_adopted_history_through(project: Any) -> None:
    """A fresh protected target adopting a team's history: every file is pending and the
    target lacks every table, so indexes dropped and rebuilt on those tables (in the same
    file or a later one) are no hazard; they used to be refused as DROP INDEX errors."""
    project.write(
        "V1__docs.sql",
        "CREATE TABLE docs (id bigint, title text);\nCREATE INDEX docs_title ON docs (title);\n",
    )
    project.write(
        "V2__docs_title.sql",
        "DROP INDEX docs_title;\nCREATE INDEX docs_title_lower ON docs (lower(title));\n",
    )
    project.write(
        "V3__tags.sql",
        "CREATE TABLE tags (id bigint, name text);\n"
        "CREATE INDEX tags_name ON tags (name);\n"
        "DROP INDEX tags_name;\n"
        "CREATE UNIQUE INDEX tags_name_key ON tags (name);\n",
    )
    r = project.run("migrate", "up", "--env", "prod", "--yes")
    assert r.code == 0, r.err
    assert [s for s, ok in _history(project.dsns["prod"]) if ok] == [
        "V1__docs.sql",
        "V2__docs_title.sql",
        "V3__tags.sql",
    ]
    # once applied, the tables exist: the same DROP INDEX in a new file is a hazard again
    with psycopg.connect(project.dsns["prod"], autocommit=True) as c:
        c.execute("INSERT INTO docs SELECT g, 't' || g FROM generate_series(1, 1000) g")
    project.write("V4__docs_title_again.sql", "DROP INDEX docs_title_lower;\n")
    refused = project.run("migrate", "up", "--env", "prod", "--yes")
    assert refused.code == 4, refused.err
    assert "require-concurrent-index-deletion" in refused.err

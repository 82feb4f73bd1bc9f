"""Catalog-aware lint against a real PostgreSQL: the snapshot, fewer false positives, impact.

The database is built by the test role (a non-superuser owner, as on Neon or
Supabase); lint reads it through ``snapshot.take`` / ``pgferry lint --env``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgferry.lint import snapshot
from pgferry.lint.engine import Linter

SCHEMA = """
CREATE TYPE case_status AS ENUM ('open', 'closed');
CREATE TABLE legal_cases (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title varchar(200) NOT NULL,
    court varchar(20),
    email text,
    status case_status NOT NULL DEFAULT 'open',
    CONSTRAINT legal_cases_email_nn CHECK (email IS NOT NULL)
);
CREATE INDEX legal_cases_court ON legal_cases (court);
CREATE TABLE empty_docs (id bigint, body text);
CREATE FUNCTION stable_fn() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1';
CREATE FUNCTION volatile_fn() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
INSERT INTO legal_cases (title, court, email)
SELECT 'case ' || g, 'court ' || (g % 50), 'c' || g || '@x.test' FROM generate_series(1, 20000) g;
ALTER TABLE legal_cases ADD CONSTRAINT legal_cases_title_len CHECK (length(title) > 0) NOT VALID;
ANALYZE legal_cases;
"""


@pytest.fixture
def shaped_db(db: str) -> str:
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(SCHEMA)
    return db


def take(dsn: str) -> snapshot.Snapshot:
    with psycopg.connect(dsn, autocommit=True) as c:
        return snapshot.take(c, source="test", now="2026-01-01T00:00:00+00:00")


def rules(findings: list[Any]) -> list[str]:
    return [f.rule for f in findings if f.suppressed is None]


def test_snapshot_reads_sizes_checks_functions_enums(shaped_db: str, tmp_path: Path) -> None:
    snap = take(shaped_db)
    t = snap.tables["public.legal_cases"]
    assert t.rows == 20000 and t.heap_bytes > 500_000 and t.total_bytes > t.heap_bytes
    assert t.columns["court"] == "character varying(20)"
    assert "title" in t.not_null
    assert t.not_null_proven("email") and not t.not_null_proven("title")
    assert {c.name: c.validated for c in t.checks} == {
        "legal_cases_email_nn": True,
        "legal_cases_title_len": False,
    }
    assert {i.name for i in t.indexes} == {"legal_cases_pkey", "legal_cases_court"}
    assert snap.tables["public.empty_docs"].heap_bytes == 0
    assert snap.functions["public.stable_fn"] == "s" and snap.functions["volatile_fn"] == "v"
    assert snap.functions["gen_random_uuid"] == "v" and snap.functions["now"] == "s"
    assert snap.enums["public.case_status"] == ["open", "closed"]
    assert snap.major >= 14
    path = tmp_path / "snap.json"
    path.write_text(snap.to_json(), encoding="utf-8")
    assert snapshot.load(path) == snap


def test_catalog_drops_false_positives_and_keeps_real_ones(shaped_db: str) -> None:
    sql = (
        "ALTER TABLE legal_cases ALTER COLUMN court TYPE text;\n"  # binary coercible
        "ALTER TABLE legal_cases ALTER COLUMN email SET NOT NULL;\n"  # validated check
        "CREATE INDEX empty_docs_body ON empty_docs (body);\n"  # empty table
        "ALTER TABLE legal_cases ADD COLUMN a int DEFAULT stable_fn();\n"  # STABLE user fn
        "ALTER TABLE legal_cases ADD COLUMN b int DEFAULT volatile_fn();\n"
        "ALTER TABLE legal_cases ALTER COLUMN court TYPE varchar(10);\n"  # shrinks: rewrite
        "CREATE INDEX legal_cases_title ON legal_cases (title);\n"
    )
    static = Linter().lint_text("V9.sql", sql)
    assert rules(static).count("changing-column-type") == 2
    assert "adding-not-nullable-field" in rules(static)
    assert rules(static).count("require-concurrent-index-creation") == 2
    assert rules(static).count("adding-field-with-default") == 2

    found = Linter(catalog=take(shaped_db)).lint_text("V9.sql", sql)
    by_line = {(f.line, f.rule): f for f in found if f.suppressed is None}
    assert sorted(k for k in by_line if not k[1].startswith("prefer-")) == [
        (5, "adding-field-with-default"),
        (6, "changing-column-type"),
        (7, "require-concurrent-index-creation"),
    ]
    rewrite = by_line[(6, "changing-column-type")].impact
    assert rewrite.startswith("rewrites public.legal_cases (")
    assert "~20k rows) under ACCESS EXCLUSIVE: blocks reads and writes for" in rewrite
    index = by_line[(7, "require-concurrent-index-creation")].impact
    assert index.startswith("builds an index on public.legal_cases (")
    assert "under SHARE: blocks writes for" in index


def test_lint_env_and_catalog_file_via_cli(
    project: Any, cli: Callable[..., Any], tmp_path: Path
) -> None:
    with psycopg.connect(project.dsns["dev"], autocommit=True) as c:
        c.execute(SCHEMA)
    project.write(
        "V1__shrink_court.sql", "ALTER TABLE legal_cases ALTER COLUMN court TYPE varchar(10);\n"
    )
    project.write(
        "V2__widen_court.sql",
        "-- pgferry:ignore prefer-text-field -- fixed-width court codes\n"
        "ALTER TABLE legal_cases ALTER COLUMN title TYPE varchar(300);\n",
    )
    snap_file = tmp_path / "prod-shape.json"
    cfg = str(project.config)

    r = cli(
        "--config",
        cfg,
        "lint",
        "--env",
        "dev",
        "--catalog",
        str(snap_file),
        "--format",
        "json",
        cwd=project.root,
    )
    assert r.code == 1, r.err
    out = json.loads(r.out)
    assert out["env"] == "dev" and out["files"] == 2
    assert [(Path(f["path"]).name, f["rule"]) for f in out["findings"]] == [
        ("V1__shrink_court.sql", "changing-column-type"),
        ("V1__shrink_court.sql", "prefer-text-field"),
    ]
    assert "public.legal_cases (" in out["findings"][0]["impact"]
    assert out["suppressed"][0]["suppressed"] == "fixed-width court codes"
    assert json.loads(snap_file.read_text())["format"] == "pgferry-lint-catalog/1"

    # CI: the same answer from the snapshot file, without database credentials
    r2 = cli(
        "--config",
        cfg,
        "lint",
        "--catalog",
        str(snap_file),
        "--json",
        str(project.migrations),
        cwd=project.root,
    )
    assert r2.code == 1
    assert [f["rule"] for f in json.loads(r2.out)["findings"]] == [
        "changing-column-type",
        "prefer-text-field",
    ]

    # dev is not protected: up runs despite the errors; then nothing is pending
    up = cli("--config", cfg, "migrate", "up", "--env", "dev", cwd=project.root)
    assert up.code == 0, up.err
    r3 = cli("--config", cfg, "lint", "--env", "dev", cwd=project.root)
    assert r3.code == 0
    assert "catalog: dev (PostgreSQL" in r3.out
    assert "no pending migrations for dev" in r3.out


def test_bad_catalog_file_is_bad_input(
    project: Any, cli: Callable[..., Any], tmp_path: Path
) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "something else"}')
    project.write("V1__a.sql", "SELECT 1;\n")
    r = cli("--config", str(project.config), "lint", "--catalog", str(bad), cwd=project.root)
    assert r.code == 2
    assert "is not a pgferry lint catalog snapshot" in r.err


def test_partitioned_table_sizes_come_from_its_partitions(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("CREATE TABLE events (id bigint, at date NOT NULL) PARTITION BY RANGE (at)")
        c.execute(
            "CREATE TABLE events_2025 PARTITION OF events "
            "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"
        )
        c.execute(
            "CREATE TABLE events_2026 PARTITION OF events "
            "FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')"
        )
        c.execute(
            "INSERT INTO events SELECT g, date '2025-01-01' + (g % 700) "
            "FROM generate_series(1, 30000) g"
        )
        c.execute("ANALYZE events")
    snap = take(db)
    parent = snap.tables["public.events"]
    assert parent.kind == "p"
    assert parent.heap_bytes > 0 and parent.rows == 30000
    assert parent.total_bytes == sum(
        snap.tables[f"public.events_{y}"].total_bytes for y in (2025, 2026)
    )
    [f] = [
        f
        for f in Linter(catalog=snap).lint_text(
            "V1.sql", "CREATE INDEX events_at ON events (at);\n"
        )
        if f.suppressed is None
    ]
    assert f.rule == "require-concurrent-index-creation"
    assert "CONCURRENTLY does not work on the parent" in f.message
    assert f.impact.startswith("builds an index on public.events (")


def test_enum_labels_from_the_catalog(shaped_db: str) -> None:
    sql = (
        "ALTER TYPE case_status ADD VALUE 'open';\n"
        "ALTER TYPE case_status ADD VALUE IF NOT EXISTS 'stayed' BEFORE 'clsoed';\n"
        "ALTER TYPE case_status ADD VALUE IF NOT EXISTS 'settled' AFTER 'open';\n"
    )
    found = [
        (f.line, f.message)
        for f in Linter(catalog=take(shaped_db)).lint_text("V.sql", sql)
        if f.rule == "enum-label-mismatch"
    ]
    assert found == [
        (1, "public.case_status already has label 'open': ADD VALUE fails (add IF NOT EXISTS)"),
        (
            2,
            "public.case_status has no label 'clsoed' to add 'stayed' BEFORE "
            "(labels: open, closed)",
        ),
    ]


def test_catalog_file_records_history_and_ci_skips_applied_files(
    project: Any, cli: Callable[..., Any], tmp_path: Path
) -> None:
    """The CI recipe: `lint --env prod --catalog FILE` once, then `lint --catalog FILE`.
    The file carries the history, so CI skips V1 (applied) and knows leads is an old table
    with rows: V2's blocking index is reported, with its impact."""
    project.write(
        "V1__leads.sql",
        "CREATE TABLE leads (id bigint, region text);\nCREATE INDEX leads_id ON leads (id);\n",
    )
    cfg = str(project.config)
    assert cli("--config", cfg, "migrate", "up", "--env", "dev", cwd=project.root).code == 0
    with psycopg.connect(project.dsns["dev"], autocommit=True) as c:
        c.execute("INSERT INTO leads SELECT g, 'r' || (g % 7) FROM generate_series(1, 20000) g")
        c.execute("ANALYZE leads")
    project.write("V2__leads_region.sql", "CREATE INDEX leads_region ON leads (region);\n")
    snap_file = tmp_path / "prod-shape.json"

    r = cli(
        "--config",
        cfg,
        "lint",
        "--env",
        "dev",
        "--catalog",
        str(snap_file),
        "--format",
        "json",
        cwd=project.root,
    )
    assert r.code == 1, r.err
    assert r.json["files"] == 1
    history = json.loads(snap_file.read_text())["history"]
    assert list(history["applied"]) == ["1"] and history["baseline"] is None

    ci = cli(
        "--config", cfg, "lint", "--catalog", str(snap_file), "--format", "json", cwd=project.root
    )
    assert ci.code == 1
    assert (ci.json["files"], ci.json["skipped"]) == (1, 1)
    [f] = ci.json["findings"]
    assert (Path(f["path"]).name, f["rule"]) == (
        "V2__leads_region.sql",
        "require-concurrent-index-creation",
    )
    assert "~20k rows) under SHARE" in f["impact"]
    assert ci.json["findings"] == r.json["findings"]

    every = cli(
        "--config",
        cfg,
        "lint",
        "--catalog",
        str(snap_file),
        "--format",
        "json",
        "--all",
        cwd=project.root,
    )
    assert (every.json["files"], every.json["skipped"]) == (2, 0)
    assert every.json["findings"] == ci.json["findings"]
    env_all = cli(
        "--config", cfg, "lint", "--env", "dev", "--all", "--format", "json", cwd=project.root
    )
    assert env_all.json["files"] == 2 and env_all.json["findings"] == ci.json["findings"]

"""What ``pgferry lint`` lints, and in which order: files are linted in version order
however they are named (a shell glob sorts V10 before V2), and directory mode skips the
files a catalog's history marks as applied unless ``--all``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgferry.lint.snapshot import FORMAT

FILES = {
    "V2__leads.sql": "CREATE TABLE leads (id bigint, region text);\n",
    "V10__leads_region.sql": "CREATE INDEX leads_region ON leads (region);\n",
    "V9__note.sql": "ALTER TABLE leads ADD COLUMN note text;\n",
    "V1.1__users_email.sql": "CREATE INDEX users_email ON users (email);\n",
    "R__views.sql": "CREATE OR REPLACE VIEW v AS SELECT 1;\n",
    "U2__leads.sql": "DROP TABLE leads;\n",
}


def write_catalog(
    path: Path, tables: dict[str, Any] | None = None, history: dict[str, Any] | None = None
) -> Path:
    """A catalog snapshot file as ``pgferry lint --env E --catalog FILE`` writes it."""
    data: dict[str, Any] = {
        "format": FORMAT,
        "server_version": 180000,
        "source": "prod",
        "tables": tables or {},
    }
    if history is not None:
        data["history"] = history
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_project(root: Path, files: dict[str, str]) -> Path:
    """``root/migrations`` holding ``files``, and an empty pgferry.toml; the directory."""
    d = root / "migrations"
    d.mkdir()
    for name, sql in files.items():
        (d / name).write_text(sql, encoding="utf-8")
    (root / "pgferry.toml").write_text("", encoding="utf-8")
    return d


@pytest.fixture
def mig(tmp_path: Path) -> Path:
    d = write_project(tmp_path, FILES)
    write_catalog(
        tmp_path / "prod.json",
        {"public.users": {"rows": 300_000, "total_bytes": 28 << 20, "heap_bytes": 20 << 20}},
    )
    return d


def test_named_files_lint_in_version_order_like_their_directory(
    cli: Callable[..., Any], mig: Path
) -> None:
    root = mig.parent
    whole = cli("lint", "--catalog", "prod.json", "--format", "json", "migrations", cwd=root)
    # what `pgferry lint migrations/*.sql` receives: the shell sorts names as text
    globbed = sorted(f"migrations/{n}" for n in FILES)
    assert globbed[:3] == [
        "migrations/R__views.sql",
        "migrations/U2__leads.sql",
        "migrations/V1.1__users_email.sql",
    ]
    named = cli("lint", "--catalog", "prod.json", "--format", "json", *globbed, cwd=root)
    assert named.out == whole.out
    assert named.code == whole.code == 1
    found = [(Path(f["path"]).name, f["rule"]) for f in named.json["findings"]]
    # leads is created by pending V2 and absent from the catalog: V10's index and U2's
    # DROP are fine; users has 300k rows: its index blocks writes
    assert found == [("V1.1__users_email.sql", "require-concurrent-index-creation")]
    # named twice (a directory and a file in it): linted once
    twice = cli(
        "lint",
        "--catalog",
        "prod.json",
        "--format",
        "json",
        "migrations",
        "migrations/V10__leads_region.sql",
        cwd=root,
    )
    assert twice.out == whole.out


def test_named_files_order_does_not_depend_on_the_command_line(
    cli: Callable[..., Any], mig: Path
) -> None:
    root = mig.parent
    a = cli(
        "lint",
        "--catalog",
        "prod.json",
        "migrations/V10__leads_region.sql",
        "migrations/V2__leads.sql",
        cwd=root,
    )
    b = cli(
        "lint",
        "--catalog",
        "prod.json",
        "migrations/V2__leads.sql",
        "migrations/V10__leads_region.sql",
        cwd=root,
    )
    assert a.out == b.out and a.code == b.code == 0


#: V1 ran on prod long ago and created leads (300k rows now); V2 and V3 are pending
HISTORY_FILES = {
    "V1__leads.sql": "CREATE TABLE leads (id bigint, region text, note text);\n"
    "CREATE INDEX leads_id ON leads (id);\n",
    "V2__leads_region.sql": "CREATE INDEX leads_region ON leads (region);\n",
    "V3__drop_note.sql": "ALTER TABLE leads DROP COLUMN note;\n",
    "R__views.sql": "CREATE OR REPLACE VIEW lead_regions AS SELECT DISTINCT region FROM leads;\n",
}
LEADS = {"public.leads": {"rows": 300_000, "total_bytes": 28 << 20, "heap_bytes": 20 << 20}}


@pytest.fixture
def hist(tmp_path: Path) -> Path:
    d = write_project(tmp_path, HISTORY_FILES)
    from pgferry.migrate.files import parse_name

    views = parse_name(d / "R__views.sql")
    assert views is not None
    views.read()
    write_catalog(
        tmp_path / "prod.json",
        LEADS,
        {"applied": {"1": None}, "repeatable": {"views": views.checksum}, "baseline": None},
    )
    write_catalog(tmp_path / "no-history.json", LEADS)
    return tmp_path


def test_ci_mode_reports_hazards_on_old_tables(cli: Callable[..., Any], hist: Path) -> None:
    """`pgferry lint --catalog FILE` (the CI recipe): V1, applied, is skipped; leads is an
    old table with 300k rows, so V2's blocking index and V3's DROP COLUMN are reported."""
    r = cli("lint", "--catalog", "prod.json", "--format", "json", cwd=hist)
    assert r.code == 1, r.err
    assert r.json["files"] == 2 and r.json["skipped"] == 2
    assert [(Path(f["path"]).name, f["rule"]) for f in r.json["findings"]] == [
        ("V2__leads_region.sql", "require-concurrent-index-creation"),
        ("V3__drop_note.sql", "ban-drop-column"),
    ]
    assert "(28 MB, ~300k rows)" in r.json["findings"][0]["impact"]
    text = cli("lint", "--catalog", "prod.json", cwd=hist)
    assert text.out.splitlines()[-1] == (
        "1 error(s), 1 warning(s) in 2 file(s); 2 applied file(s) skipped (--all lints them)"
    )


def test_all_lints_applied_files_too(cli: Callable[..., Any], hist: Path) -> None:
    r = cli("lint", "--catalog", "prod.json", "--format", "json", "--all", cwd=hist)
    assert r.json["files"] == 4 and r.json["skipped"] == 0
    # V1 ran when leads did not exist: its own index was on a new table
    assert [(Path(f["path"]).name, f["rule"]) for f in r.json["findings"]] == [
        ("V2__leads_region.sql", "require-concurrent-index-creation"),
        ("V3__drop_note.sql", "ban-drop-column"),
    ]
    # a directory named on the command line is directory mode too
    named = cli("lint", "--catalog", "prod.json", "--format", "json", "migrations", cwd=hist)
    assert named.json["files"] == 2 and named.json["skipped"] == 2


def test_a_catalog_without_history_skips_nothing_and_still_sees_old_tables(
    cli: Callable[..., Any], hist: Path
) -> None:
    r = cli("lint", "--catalog", "no-history.json", "--format", "json", cwd=hist)
    assert r.json["files"] == 4 and r.json["skipped"] == 0
    assert [(Path(f["path"]).name, f["rule"]) for f in r.json["findings"]] == [
        ("V2__leads_region.sql", "require-concurrent-index-creation"),
        ("V3__drop_note.sql", "ban-drop-column"),
    ]


def test_without_a_catalog_tables_of_earlier_files_exist(
    cli: Callable[..., Any], hist: Path
) -> None:
    r = cli("lint", "--format", "json", cwd=hist)
    assert r.json["files"] == 4 and r.json["skipped"] == 0
    assert [(Path(f["path"]).name, f["rule"]) for f in r.json["findings"]] == [
        ("V2__leads_region.sql", "require-concurrent-index-creation"),
        ("V3__drop_note.sql", "ban-drop-column"),
    ]


def test_an_edited_repeatable_is_pending_and_named_files_are_always_linted(
    cli: Callable[..., Any], hist: Path
) -> None:
    (hist / "migrations" / "R__views.sql").write_text(
        "CREATE OR REPLACE VIEW lead_regions AS SELECT region FROM leads GROUP BY 1;\n"
    )
    r = cli("lint", "--catalog", "prod.json", "--format", "json", cwd=hist)
    assert r.json["files"] == 3 and r.json["skipped"] == 1
    named = cli(
        "lint", "--catalog", "prod.json", "--format", "json", "migrations/V1__leads.sql", cwd=hist
    )
    assert named.json["files"] == 1 and named.json["skipped"] == 0

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


def write_catalog(path: Path, tables: dict[str, Any] | None = None,
                  history: dict[str, Any] | None = None) -> Path:
    """A catalog snapshot file as ``pgferry lint --env E --catalog FILE`` writes it."""
    data: dict[str, Any] = {"format": FORMAT, "server_version": 180000, "source": "prod",
                            "tables": tables or {}}
    if history is not None:
        data["history"] = history
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def mig(tmp_path: Path) -> Path:
    d = tmp_path / "migrations"
    d.mkdir()
    for name, sql in FILES.items():
        (d / name).write_text(sql, encoding="utf-8")
    (tmp_path / "pgferry.toml").write_text("", encoding="utf-8")
    write_catalog(tmp_path / "prod.json", {
        "public.users": {"rows": 300_000, "total_bytes": 28 << 20, "heap_bytes": 20 << 20}})
    return d


def test_named_files_lint_in_version_order_like_their_directory(
        cli: Callable[..., Any], mig: Path) -> None:
    root = mig.parent
    whole = cli("lint", "--catalog", "prod.json", "--format", "json", "migrations", cwd=root)
    # what `pgferry lint migrations/*.sql` receives: the shell sorts names as text
    globbed = sorted(f"migrations/{n}" for n in FILES)
    assert globbed[:3] == ["migrations/R__views.sql", "migrations/U2__leads.sql",
                           "migrations/V1.1__users_email.sql"]
    named = cli("lint", "--catalog", "prod.json", "--format", "json", *globbed, cwd=root)
    assert named.out == whole.out
    assert named.code == whole.code == 1
    found = [(Path(f["path"]).name, f["rule"]) for f in named.json["findings"]]
    # leads is created by pending V2 and absent from the catalog: V10's index and U2's
    # DROP are fine; users has 300k rows: its index blocks writes
    assert found == [("V1.1__users_email.sql", "require-concurrent-index-creation")]
    # named twice (a directory and a file in it): linted once
    twice = cli("lint", "--catalog", "prod.json", "--format", "json", "migrations",
                "migrations/V10__leads_region.sql", cwd=root)
    assert twice.out == whole.out


def test_named_files_order_does_not_depend_on_the_command_line(
        cli: Callable[..., Any], mig: Path) -> None:
    root = mig.parent
    a = cli("lint", "--catalog", "prod.json", "migrations/V10__leads_region.sql",
            "migrations/V2__leads.sql", cwd=root)
    b = cli("lint", "--catalog", "prod.json", "migrations/V2__leads.sql",
            "migrations/V10__leads_region.sql", cwd=root)
    assert a.out == b.out and a.code == b.code == 0

"""When a table counts as new (nobody uses it yet, no rows): created earlier in the same
file, or absent from the catalog and created by a file that is still pending. Without a
catalog, a table from an earlier file is an existing table with rows."""

from __future__ import annotations

from typing import Any

import pytest

from pgferry.lint.engine import Linter
from pgferry.lint.snapshot import Snapshot, from_dict

OLD_TABLE_HAZARDS = {
    "V2__idx.sql": (
        "CREATE INDEX leads_region ON leads (region);\n",
        "require-concurrent-index-creation",
    ),
    "V3__drop.sql": ("ALTER TABLE leads DROP COLUMN region;\n", "ban-drop-column"),
    "V4__type.sql": ("ALTER TABLE leads ALTER COLUMN id TYPE int;\n", "changing-column-type"),
    "V5__rename_col.sql": ("ALTER TABLE leads RENAME COLUMN id TO lead_id;\n", "renaming-column"),
    "V6__rename.sql": ("ALTER TABLE leads RENAME TO prospects;\n", "renaming-table"),
}
CREATE = ("V1__leads.sql", "CREATE TABLE leads (id bigint, region text);\n")


def live(findings: list[Any]) -> list[tuple[str, str]]:
    return [(f.path, f.rule) for f in findings if f.suppressed is None]


def catalog(**tables: dict[str, Any]) -> Snapshot:
    return from_dict(
        {
            "server_version": 180000,
            "tables": {f"public.{name}": {"heap_bytes": 8192, **t} for name, t in tables.items()},
        }
    )


@pytest.mark.parametrize("name", sorted(OLD_TABLE_HAZARDS))
def test_without_a_catalog_a_table_from_an_earlier_file_exists(name: str) -> None:
    sql, rule = OLD_TABLE_HAZARDS[name]
    found = live(Linter().lint_files([CREATE, (name, sql)]))
    assert (name, rule) in found


@pytest.mark.parametrize("name", sorted(OLD_TABLE_HAZARDS))
def test_a_table_created_earlier_in_the_same_file_is_new(name: str) -> None:
    sql, rule = OLD_TABLE_HAZARDS[name]
    assert (name, rule) not in live(Linter().lint_text(name, CREATE[1] + sql))
    assert (name, rule) not in live(Linter(catalog=catalog()).lint_text(name, CREATE[1] + sql))


@pytest.mark.parametrize("name", sorted(OLD_TABLE_HAZARDS))
def test_a_pending_file_creating_a_table_the_catalog_lacks_makes_it_new(name: str) -> None:
    sql, rule = OLD_TABLE_HAZARDS[name]
    found = live(Linter(catalog=catalog()).lint_files([CREATE, (name, sql)]))
    assert (name, rule) not in found


@pytest.mark.parametrize("name", sorted(OLD_TABLE_HAZARDS))
def test_an_applied_file_does_not_make_its_tables_new(name: str) -> None:
    sql, rule = OLD_TABLE_HAZARDS[name]
    linter = Linter(catalog=catalog(), applied={CREATE[0]})
    assert (name, rule) in live(linter.lint_files([CREATE, (name, sql)]))


def test_a_table_the_catalog_has_is_not_new_because_a_pending_file_creates_it() -> None:
    """The issue's case: the catalog says leads has 300k rows (28 MB); V1 (not known to be
    applied) creates it; V2's blocking index must still be reported, with its impact."""
    snap = catalog(leads={"rows": 300_000, "total_bytes": 28 << 20, "heap_bytes": 20 << 20})
    found = Linter(catalog=snap).lint_files(
        [CREATE, ("V2__idx.sql", OLD_TABLE_HAZARDS["V2__idx.sql"][0])]
    )
    [f] = [f for f in found if f.rule == "require-concurrent-index-creation"]
    assert f.path == "V2__idx.sql" and f.severity == "error"
    assert f.impact.startswith("builds an index on public.leads (28 MB, ~300k rows) under SHARE")


def test_create_table_if_not_exists_of_a_table_the_catalog_has_is_not_new() -> None:
    snap = catalog(leads={"rows": 300_000, "total_bytes": 28 << 20, "heap_bytes": 20 << 20})
    sql = (
        "CREATE TABLE IF NOT EXISTS leads (id bigint, region text);\n"
        "CREATE INDEX leads_region ON leads (region);\n"
    )
    assert ("V1.sql", "require-concurrent-index-creation") in live(
        Linter(catalog=snap).lint_text("V1.sql", sql)
    )
    # without a catalog pgferry cannot know: the file created it
    assert not live(Linter().lint_text("V1.sql", sql))


def test_a_table_dropped_by_a_pending_file_is_no_longer_new() -> None:
    files = [
        CREATE,
        ("V2__drop.sql", "DROP TABLE leads;\n"),
        ("V3__again.sql", "CREATE INDEX leads_region ON leads (region);\n"),
    ]
    found = live(Linter(catalog=catalog()).lint_files(files))
    assert found == [("V3__again.sql", "require-concurrent-index-creation")]


def test_drop_index_on_a_new_table_is_exempt_like_create_index() -> None:
    """The adopted history: V1 created leads and an index, V2 replaced the index. On a
    target that lacks leads (all pending), neither is reported; without a catalog (leads
    may be old) both are; an applied V1 makes leads an existing table."""
    files = [
        (
            "V1__leads.sql",
            "CREATE TABLE leads (id bigint, region text);\n"
            "CREATE INDEX leads_region ON leads (region);\n",
        ),
        (
            "V2__reindex.sql",
            "DROP INDEX leads_region;\nCREATE INDEX leads_region2 ON leads (region, id);\n",
        ),
    ]
    assert not live(Linter(catalog=catalog()).lint_files(files))
    hazards = [
        ("V2__reindex.sql", "require-concurrent-index-deletion"),
        ("V2__reindex.sql", "require-concurrent-index-creation"),
    ]
    assert live(Linter().lint_files(files)) == hazards
    assert live(Linter(catalog=catalog(), applied={"V1__leads.sql"}).lint_files(files)) == hazards

"""Severity parity with squawk and strong_migrations: renames are errors with the safe
recipe in the message; a whole-table UPDATE/DELETE is an error on a big table
(``[lint] big_table_rows``); data-change-with-ddl is reported once per file and table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgferry.lint.engine import Linter, Settings
from pgferry.lint.snapshot import Snapshot, from_dict


def live(findings: list[Any], rule: str) -> list[Any]:
    return [f for f in findings if f.rule == rule and f.suppressed is None]


def catalog(rows: int) -> Snapshot:
    return from_dict(
        {
            "server_version": 180000,
            "tables": {
                "public.users": {"rows": rows, "heap_bytes": 8192 * 100, "total_bytes": 8192 * 120}
            },
        }
    )


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("ALTER TABLE users RENAME COLUMN name TO full_name;", "renaming-column"),
        ("ALTER TABLE users RENAME TO accounts;", "renaming-table"),
    ],
)
def test_renames_are_errors_with_the_safe_recipe(sql: str, rule: str) -> None:
    [f] = live(Linter().lint_text("V1.sql", sql + "\n"), rule)
    assert f.severity == "error"
    for step in ("expand", "dual-write", "contract"):
        assert step in f.message.lower()
    assert f.help
    # still a warning when the team says so
    [w] = live(Linter(Settings(severity={rule: "warning"})).lint_text("V1.sql", sql), rule)
    assert w.severity == "warning"


@pytest.mark.parametrize(
    ("rows", "settings", "severity"),
    [
        (300_000, Settings(), "error"),
        (100_001, Settings(), "error"),
        (100_000, Settings(), "warning"),
        (50_000, Settings(), "warning"),
        (-1, Settings(), "warning"),  # never analyzed: unknown
        (5_000, Settings(big_table_rows=1_000), "error"),
        (300_000, Settings(severity={"backfill-without-where": "warning"}), "warning"),
        (10, Settings(severity={"PF076": "error"}), "error"),
    ],
)
def test_backfill_without_where_is_an_error_on_a_big_table(
    rows: int, settings: Settings, severity: str
) -> None:
    for sql in ("UPDATE users SET plan = 'free';\n", "DELETE FROM users;\n"):
        [f] = live(
            Linter(settings, catalog=catalog(rows)).lint_text("V1.sql", sql),
            "backfill-without-where",
        )
        assert f.severity == severity, (rows, sql)
    if severity == "error" and rows > 100_000:
        assert "300k rows" in f.message or "100k rows" in f.message


def test_backfill_without_where_is_a_warning_without_a_catalog() -> None:
    [f] = live(
        Linter().lint_text("V1.sql", "UPDATE users SET plan = 'free';\n"), "backfill-without-where"
    )
    assert f.severity == "warning"


def test_data_change_with_ddl_once_per_file_and_table() -> None:
    updates = "UPDATE users SET plan = 'free' WHERE id < 10;\n" * 183
    sql = "ALTER TABLE users ADD COLUMN plan text;\n" + updates
    found = live(Linter().lint_text("V1.sql", sql), "data-change-with-ddl")
    assert [(f.line, f.severity) for f in found] == [(2, "warning")]
    assert "users" in found[0].message and "183 data-changing statements" in found[0].message
    two = (
        "ALTER TABLE users ADD COLUMN plan text;\n"
        "ALTER TABLE orders ADD COLUMN note text;\n" + updates
    )
    found = live(Linter().lint_text("V2.sql", two), "data-change-with-ddl")
    assert [(f.line, f.message.split(" in the same")[0]) for f in found] == [
        (3, "data change after ALTER TABLE public.orders"),
        (3, "data change after ALTER TABLE public.users"),
    ]
    # a later transaction of the same file on the same table: still the one finding
    again = (
        "BEGIN;\nALTER TABLE users ADD COLUMN a text;\nUPDATE users SET a = 'x' WHERE id = 1;"
        "\nCOMMIT;\nBEGIN;\nALTER TABLE users ADD COLUMN b text;\n"
        "UPDATE users SET b = 'y' WHERE id = 1;\nCOMMIT;\n"
    )
    settings = Settings(disable=["transaction-nesting"])
    found = live(Linter(settings).lint_text("V3.sql", again), "data-change-with-ddl")
    assert [f.line for f in found] == [3]
    # each file has its own
    lt = Linter()
    found = live(lt.lint_files([("V4.sql", sql), ("V5.sql", sql)]), "data-change-with-ddl")
    assert [f.path for f in found] == ["V4.sql", "V5.sql"]


def test_big_table_rows_from_pgferry_toml(cli: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "pgferry.toml").write_text("[lint]\nbig_table_rows = 1000\n")
    (tmp_path / "V1__plans.sql").write_text("UPDATE users SET plan = 'free';\n")
    (tmp_path / "shape.json").write_text(
        '{"format": "pgferry-lint-catalog/1", "server_version": 180000, "tables": '
        '{"public.users": {"rows": 5000, "heap_bytes": 819200, "total_bytes": 983040}}}'
    )
    r = cli("lint", "--catalog", "shape.json", "--format", "json", "V1__plans.sql", cwd=tmp_path)
    assert r.code == 1 and r.json["findings"][0]["severity"] == "error"
    (tmp_path / "pgferry.toml").write_text("[lint]\nbig_table_rows = -5\n")
    bad = cli("lint", "V1__plans.sql", cwd=tmp_path)
    assert bad.code == 2 and "lint.big_table_rows" in bad.err

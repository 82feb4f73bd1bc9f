"""The engine around the rules: parsing errors, positions, suppression, config, formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgferry.errors import ConfigError, SqlParseError
from pgferry.lint import report
from pgferry.lint.engine import Linter, Settings
from pgferry.lint.model import Finding
from pgferry.lint.rules import ALL_RULES


def rules_of(findings: list[Finding], live: bool = True) -> list[tuple[str, int]]:
    return [(f.rule, f.line) for f in findings if (f.suppressed is None) == live]


def test_parse_error_names_file_line_and_parser_message() -> None:
    with pytest.raises(SqlParseError) as e:
        Linter().lint_text("V3__x.sql", "SELECT 1;\n-- é\nALTER TABLE t ADDD COLUMN a int;\n")
    assert e.value.exit_code == 2
    assert e.value.message.startswith("V3__x.sql:3: syntax error at or near")
    assert '"ADDD"' in e.value.message


def test_positions_count_characters_after_multibyte_text() -> None:
    sql = "SELECT 'ééé';\n  CREATE INDEX i ON t (a);\n"
    [f] = [
        f for f in Linter().lint_text("x.sql", sql) if f.rule == "require-concurrent-index-creation"
    ]
    assert (f.line, f.column) == (2, 3)
    assert f.statement == "CREATE INDEX i ON t (a)"


def test_alter_actions_on_separate_lines_are_reported_on_their_own_line() -> None:
    sql = (
        "ALTER TABLE t\n"
        "  ADD COLUMN a int DEFAULT (1 + 2),  -- comma in parens and a comment\n"
        "  ALTER COLUMN b SET NOT NULL,\n"
        "  DROP COLUMN c;\n"
    )
    found = rules_of(Linter().lint_text("x.sql", sql))
    assert ("adding-not-nullable-field", 3) in found
    assert ("ban-drop-column", 4) in found


def test_statement_ignore_with_reason_and_file_ignore() -> None:
    sql = (
        "-- pgferry:ignore-file prefer-text-field\n"
        "CREATE TABLE a (name varchar(5));\n"
        "-- pgferry:ignore ban-drop-column, PF008 -- column unused since v41 (JIRA-7)\n"
        "ALTER TABLE users DROP COLUMN legacy, ALTER COLUMN b TYPE bigint;\n"
        "ALTER TABLE users DROP COLUMN other;\n"
        "DROP TABLE x; -- pgferry:ignore ban-drop-table -- archived\n"
    )
    found = Linter().lint_text("x.sql", sql)
    assert rules_of(found, live=False) == [
        ("prefer-text-field", 2),
        ("ban-drop-column", 4),
        ("changing-column-type", 4),
        ("ban-drop-table", 6),
    ]
    reasons = {f.rule: f.suppressed for f in found if f.suppressed is not None}
    assert reasons["ban-drop-column"] == "column unused since v41 (JIRA-7)"
    assert reasons["prefer-text-field"] == ""
    live = rules_of(found)
    assert ("ban-drop-column", 5) in live  # the ignore covers only the next statement
    assert not any(r == "unused-ignore" for r, _ in live)


def test_file_level_finding_can_be_ignored_before_its_statement() -> None:
    sql = (
        "-- pgferry:ignore ban-uncommitted-transaction -- closed by the next file\n"
        "BEGIN;\n"
        "ALTER TABLE users ADD COLUMN nickname text;\n"
    )
    found = Linter().lint_text("x.sql", sql)
    [f] = [f for f in found if f.rule == "ban-uncommitted-transaction"]
    assert (f.line, f.suppressed) == (2, "closed by the next file")


def test_ignore_that_suppresses_nothing_is_a_finding() -> None:
    sql = (
        "-- pgferry:ignore ban-drop-table -- stale\n"
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS nickname text;\n"
        "-- pgferry:ignore not-a-rule\n"
        "SELECT 1;\n"
    )
    found = [f for f in Linter().lint_text("x.sql", sql) if f.rule == "unused-ignore"]
    assert [(f.line, f.severity) for f in found] == [(1, "warning"), (3, "warning")]
    assert "unknown rule 'not-a-rule'" in found[1].message


def test_config_disables_and_changes_severity_by_name_or_code() -> None:
    sql = "ALTER TABLE u DROP COLUMN a;\nCREATE TABLE t (a int);\n"
    found = Linter(Settings(disable=["PF023"], severity={"ban-drop-column": "error"})).lint_text(
        "x.sql", sql
    )
    assert [(f.rule, f.severity) for f in found] == [("ban-drop-column", "error")]
    with pytest.raises(ConfigError, match="unknown rule 'nope'"):
        Linter(Settings(disable=["nope"]))


def test_opt_in_rules_need_enable() -> None:
    sql = "ALTER TABLE u ADD COLUMN a text;\n"
    assert not Linter().lint_text("x.sql", sql)
    found = Linter(Settings(enable=["require-lock-timeout"])).lint_text("x.sql", sql)
    assert [f.rule for f in found] == ["require-lock-timeout"]


def test_tables_an_earlier_pending_file_created_are_new_only_with_a_catalog() -> None:
    """(More in test_lint_newness.py.) With a catalog that lacks the table, an earlier
    pending file created it; without one, it may have been applied years ago."""
    from pgferry.lint.snapshot import Snapshot

    files = [
        ("V1.sql", "CREATE TABLE leads (id bigint, region text);\n"),
        ("V2.sql", "CREATE INDEX leads_region ON leads (region);\n"),
    ]
    assert not Linter(catalog=Snapshot(180000)).lint_files(files)
    assert [f.path for f in Linter().lint_files(files)] == ["V2.sql"]


def test_json_and_sarif_outputs() -> None:
    sql = (
        "CREATE INDEX i ON t (a);\n"
        "-- pgferry:ignore ban-drop-column -- ok\n"
        "ALTER TABLE t DROP COLUMN b;\n"
    )
    found = Linter().lint_text("m/V1__x.sql", sql)
    obj = json.loads(report.as_json(found, 1, {"pg_version": 18}))
    assert obj["ok"] is False
    assert obj["summary"] == {"errors": 1, "warnings": 0, "suppressed": 1}
    assert [f["rule"] for f in obj["findings"]] == ["require-concurrent-index-creation"]
    assert obj["suppressed"][0]["suppressed"] == "ok" and obj["findings"][0]["line"] == 1
    sarif = json.loads(report.sarif(found, ALL_RULES, "0"))
    run = sarif["runs"][0]
    assert sarif["version"] == "2.1.0"
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == {
        "require-concurrent-index-creation",
        "ban-drop-column",
    }
    res = {r["ruleId"]: r for r in run["results"]}
    loc = res["require-concurrent-index-creation"]["locations"][0]["physicalLocation"]
    assert loc == {
        "artifactLocation": {"uri": "m/V1__x.sql"},
        "region": {"startLine": 1, "startColumn": 1},
    }
    assert res["ban-drop-column"]["suppressions"][0]["justification"] == "ok"


def test_text_output_shows_place_statement_message_and_safe_rewrite() -> None:
    found = Linter().lint_text("V1.sql", "CREATE INDEX i ON t (a);\n")
    out = report.text(found, 1)
    assert out.splitlines() == [
        "V1.sql:1:1: error[require-concurrent-index-creation] "
        "CREATE INDEX without CONCURRENTLY blocks writes while it builds",
        "    | CREATE INDEX i ON t (a)",
        "    = safe: CREATE INDEX CONCURRENTLY, in a migration file of its own.",
        "1 error(s), 0 warning(s) in 1 file(s)",
    ]


def test_docs_lint_md_is_generated_from_the_rules() -> None:
    from pgferry.lint.docs import BEGIN, END, markdown

    doc = (Path(__file__).resolve().parents[3] / "docs" / "lint.md").read_text(encoding="utf-8")
    block = doc.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == markdown(ALL_RULES).strip(), (
        "docs/lint.md is stale: run `python -m pgferry.lint.docs`"
    )

"""Every rule, tested as data: tests/unit/lint/cases/<rule>.yaml holds failing and passing SQL.

A failing case lists the lines the rule fires on, once per finding (``lines: [1, 1]``:
two findings on line 1), and must produce exactly those; a passing case must produce
none. Cases can set ``pg_version`` and an inline ``catalog`` (the JSON
form of a snapshot) to exercise version gates and catalog-mode pruning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pgferry.lint.engine import Linter, Settings
from pgferry.lint.rules import ALL_RULES
from pgferry.lint.snapshot import from_dict

CASES = Path(__file__).parent / "cases"


def _load() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path in sorted(CASES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for kind in ("fail", "pass"):
            for i, case in enumerate(data.get(kind) or []):
                case = case if isinstance(case, dict) else {"sql": case}
                out.append((data["rule"], f"{kind}-{i}", {**case, "kind": kind}))
    return out


ALL = _load()


def lint(rule: str, case: dict[str, Any]) -> list[Any]:
    catalog = None
    if "catalog" in case:
        raw = case["catalog"]
        catalog = from_dict(
            {
                "server_version": 180000,
                **raw,
                "tables": {k: {"heap_bytes": 8192, **v} for k, v in raw.get("tables", {}).items()},
            }
        )
    linter = Linter(Settings(enable=[rule]), catalog=catalog, pg_version=case.get("pg_version", 18))
    return linter.lint_text("case.sql", case["sql"])


@pytest.mark.parametrize(("rule", "case_id", "case"), ALL, ids=[f"{r}-{c}" for r, c, _ in ALL])
def test_rule_case(rule: str, case_id: str, case: dict[str, Any]) -> None:
    found = [f for f in lint(rule, case) if f.rule == rule and f.suppressed is None]
    if case["kind"] == "fail":
        assert "lines" in case, f"{rule} {case_id}: list the lines it fires on (lines: [...])"
        assert sorted(f.line for f in found) == case["lines"], (
            f"{rule} should fire on lines {case['lines']} of:\n{case['sql']}\n{found}"
        )
    else:
        assert not found, f"{rule} should not fire on:\n{case['sql']}\n{found}"


def test_every_rule_has_cases_with_both_outcomes() -> None:
    names = {r.name for r in ALL_RULES} - {"syntax-error"}
    files = {p.stem for p in CASES.glob("*.yaml")}
    assert names == files
    for rule in names:
        kinds = {c["kind"] for r, _, c in ALL if r == rule}
        assert kinds == {"fail", "pass"}, rule


def test_rule_metadata_is_complete() -> None:
    codes = [r.code for r in ALL_RULES]
    assert len(codes) == len(set(codes))
    for r in ALL_RULES:
        assert r.severity in ("error", "warning")
        assert r.message and "\n" not in r.message
        assert r.__doc__ and len(r.__doc__.strip()) > 40, r.name
        if r.name not in ("syntax-error", "unused-ignore"):
            assert "Anti-pattern" in r.__doc__, r.name
            assert r.help, r.name

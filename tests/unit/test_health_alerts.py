"""examples/prometheus/pgferry.rules.yml: valid rules (promtool check rules) that fire when
they should (promtool test rules), on the metric names pgferry health exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pgferry.health.metrics import GAUGES
from tests.helpers.prom import promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "prometheus" / "pgferry.rules.yml"
TESTS = RULES.with_name("pgferry.rules.test.yml")


def test_promtool_checks_the_rules() -> None:
    out = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 9 rules found" in out.stdout


def test_promtool_unit_tests_fire_each_alert_when_it_should() -> None:
    out = subprocess.run(
        [promtool(), "test", "rules", TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=TESTS.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_rules_use_only_metrics_pgferry_exports() -> None:
    exported = {name for name, _, _ in GAUGES} | {"pgferry_sync_rows_total"}
    used = set(
        re.findall(
            r"\bpgferry_[a-z_]+",
            "\n".join(
                line.split("expr:", 1)[1]
                for line in RULES.read_text().splitlines()
                if "expr:" in line
            ),
        )
    )
    assert used and used <= exported, used - exported
    doc = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
    for alert in re.findall(r"alert: (\w+)", RULES.read_text()):
        assert alert in doc, f"{alert} is not in docs/alerts.md"

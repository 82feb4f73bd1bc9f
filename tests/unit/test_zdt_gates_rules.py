"""examples/prometheus/pgferry-gates.rules.yml: the series the gate presets read, recorded
from common HTTP metrics; promtool checks and tests them (issue 17)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pgferry.config import GATE_PRESETS
from tests.helpers.prom import promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "prometheus" / "pgferry-gates.rules.yml"
TESTS = RULES.with_name("pgferry-gates.rules.test.yml")


def test_promtool_checks_and_tests_the_gate_rules() -> None:
    out = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 4 rules found" in out.stdout
    out = subprocess.run(
        [promtool(), "test", "rules", TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=TESTS.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_presets_read_the_recorded_series() -> None:
    recorded = set(re.findall(r"record: (\S+)", RULES.read_text()))
    for name in ("latency", "errors"):
        used = set(re.findall(r"app:[a-z_:0-9]+", str(GATE_PRESETS[name]["promql"])))
        assert used and used <= recorded, (name, used, recorded)

"""examples/prometheus/pgferry-gates.rules.yml: the series the gate presets read, recorded
from common HTTP metrics; promtool checks and tests them (issue 17)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pgferry.config import GATE_PRESETS

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "prometheus" / "pgferry-gates.rules.yml"
TESTS = RULES.with_name("pgferry-gates.rules.test.yml")


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip(
            "promtool is not installed: apt install prometheus "
            "(.ci/run installs it when it runs as root with apt)"
        )
    return tool


def test_promtool_checks_and_tests_the_gate_rules() -> None:
    out = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 4 rules found" in out.stdout
    out = subprocess.run(
        [_promtool(), "test", "rules", TESTS.name],
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

"""``[health]``: defaults, per-environment overrides, data thresholds, clear errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pgferry.config import load_config
from pgferry.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pgferry.toml"
    p.write_text("[environments.dev]\n[environments.prod]\n" + text, encoding="utf-8")
    return p


def test_defaults_are_the_issue_s(tmp_path: Path) -> None:
    h = load_config(write(tmp_path, "")).health.thresholds("prod")
    assert str(h.latency_warn) == "200ms" and str(h.timeout) == "3s"
    assert str(h.cache_interval) == "15s" and h.cache_interval == timedelta(seconds=15)
    assert (h.connections_warn, h.connections_critical) == (90, 95)
    assert tuple(map(str, (h.long_transaction_warn, h.long_transaction_critical))) == (
        "5min",
        "30min",
    )
    assert tuple(map(str, (h.idle_in_transaction_warn, h.idle_in_transaction_critical))) == (
        "60s",
        "300s",
    )
    assert str(h.blocked_warn) == "30s"
    assert (h.wraparound_warn, h.wraparound_critical) == (1_300_000_000, 1_400_000_000)
    assert (h.sequence_warn, h.sequence_critical) == (85, 95)
    assert h.slow_query_ms == 100 and str(h.backup_max_age) == "26h"
    assert str(h.restore_test_max_age) == "8d" and h.tables == {}
    assert h.seconds("backup_max_age") == timedelta(hours=26).total_seconds()


def test_backup_max_age_follows_the_backup_section_unless_set(tmp_path: Path) -> None:
    assert (
        str(
            load_config(write(tmp_path, '[backup]\nmax_age = "50h"\n'))
            .health.thresholds("prod")
            .backup_max_age
        )
        == "50h"
    )
    cfg = load_config(
        write(tmp_path, '[backup]\nmax_age = "50h"\n[health]\nbackup_max_age = "2h"\n')
    )
    assert str(cfg.health.thresholds("prod").backup_max_age) == "2h"


def test_an_environment_overrides_only_what_it_sets(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            """
[health]
latency_warn = "100ms"
blocked_warn = "45s"

[health.tables."public.legal_cases"]
optimal = 2000
degraded_below = 1

[health.environments.dev]
blocked_warn = "2s"

[health.environments.dev.tables."public.legal_cases"]
degraded_below = 0
""",
        )
    )
    prod, dev = cfg.health.thresholds("prod"), cfg.health.thresholds("dev")
    assert (str(prod.latency_warn), str(prod.blocked_warn)) == ("100ms", "45s")
    assert (str(dev.latency_warn), str(dev.blocked_warn)) == ("100ms", "2s")
    assert prod.tables["public.legal_cases"].optimal == 2000
    assert prod.tables["public.legal_cases"].degraded_below == 1
    assert dev.tables["public.legal_cases"].degraded_below == 0
    assert dev.tables["public.legal_cases"].optimal is None  # a table's entry replaces it


def test_thresholds_out_of_order_name_the_key_and_line(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        '[health.tables."public.t"]\noptimal = 10\ndegraded_below = 1\ncritical_below = 5\n',
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert (
        ":3: health.tables.public.t: critical_below (5) must not be above degraded_below (1)"
        in str(e.value)
    )


def test_a_table_needs_a_schema_and_a_threshold(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"health.tables.legal_cases: name the table as "
        r"schema.table",
    ):
        load_config(write(tmp_path, "[health.tables.legal_cases]\noptimal = 1\n"))
    with pytest.raises(ConfigError, match="give at least one of optimal, degraded_below"):
        load_config(write(tmp_path, '[health.tables."public.t"]\nestimate = true\n'))


def test_unknown_environment_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"health.environments.qa: .*not a configured "
        r"environment \(configured: dev, prod\)",
    ):
        load_config(write(tmp_path, '[health.environments.qa]\ntimeout = "1s"\n'))
    with pytest.raises(ConfigError, match=r"health.timeout: 'soon' is not a duration"):
        load_config(write(tmp_path, '[health]\ntimeout = "soon"\n'))
    with pytest.raises(ConfigError, match=r"health.connections_warn"):
        load_config(write(tmp_path, "[health]\nconnections_warn = 120\n"))
    with pytest.raises(
        ConfigError,
        match=r"health.connections_critical: 80 is below "
        r"connections_warn \(90\)",
    ):
        load_config(write(tmp_path, "[health]\nconnections_critical = 80\n"))

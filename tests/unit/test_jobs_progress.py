"""The percent a run's progress bar shows, from its events (pure)."""

from __future__ import annotations

from typing import Any

from pgferry.jobs.progress import Percent


def test_sync_tables_rows_and_the_end() -> None:
    p = Percent()
    events: list[dict[str, Any]] = [
        {"type": "step", "message": "queued"},
        {"type": "run_started", "tables": ["a", "b"]},
        {"type": "table_started", "table": "a", "total_rows": 100},
        {"type": "batch_written", "table": "a", "rows": 50},
        {"type": "batch_written", "table": "a", "rows": 80},  # the estimate was low
        {"type": "table_finished", "table": "a"},
        {"type": "table_started", "table": "b", "total_rows": 0},
        {"type": "batch_written", "table": "b", "rows": 10},  # no estimate: no fraction
        {"type": "table_finished", "table": "b"},
        {"type": "run_finished"},
        {"type": "complete"},
    ]
    seen = [p.update(e) for e in events]
    assert seen == [None, 0.0, 0.0, 25.0, 49.5, 50.0, 50.0, 50.0, 100.0, None, 100.0]


def test_migrations_by_file_and_a_second_phase_restarts() -> None:
    p = Percent()
    assert p.update({"type": "migration_started", "index": 1, "total": 4}) == 0.0
    assert p.update({"type": "migration_finished", "index": 1, "total": 4}) == 25.0
    assert p.update({"type": "migration_finished", "index": 4, "total": 4}) == 100.0
    assert p.update({"type": "run_started", "tables": ["a"]}) == 0.0
    assert p.update({"type": "migration_started", "total": 0}) is None

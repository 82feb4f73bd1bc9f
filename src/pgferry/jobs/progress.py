"""How far a run is, in percent, from its own events: what a progress bar shows.

Contract: :class:`Percent` is fed every event dict of one run, in order
(:meth:`Percent.update`), and answers the run's progress from 0 to 100 (one decimal),
or None when the event says nothing about it. It understands the events of the
commands (:mod:`pgferry.sync.events`: the tables of ``run_started``, rows of
``batch_written`` against a table's ``total_rows`` estimate, ``table_finished``;
:mod:`pgferry.migrate.events`: file ``index`` of ``total``) and the run's last event
(``complete``: 100). A run of several phases (a release, a professional migration)
restarts at 0 with each phase that announces its size; the value never exceeds 100.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Any


class Percent:
    def __init__(self) -> None:
        self._tables: list[str] = []
        self._done: dict[str, float] = {}
        self._totals: dict[str, int] = {}
        self._rows: dict[str, int] = {}

    def _tables_percent(self) -> float:
        n = len(self._tables) or 1
        return min(100.0, round(sum(self._done.values()) / n * 100, 1))

    def update(self, event: dict[str, Any]) -> float | None:
        kind = event.get("type")
        if kind == "complete":
            return 100.0
        if kind == "run_started" and isinstance(event.get("tables"), list):
            self._tables = [str(t) for t in event["tables"]]
            self._done, self._totals, self._rows = {}, {}, {}
            return 0.0
        table = str(event.get("table", ""))
        if kind == "table_started":
            self._totals[table] = int(event.get("total_rows") or 0)
            self._done.setdefault(table, 0.0)
            return self._tables_percent()
        if kind == "batch_written":
            self._rows[table] = self._rows.get(table, 0) + int(event.get("rows") or 0)
            total = self._totals.get(table, 0)
            if total > 0:  # an estimate: a table is not done before table_finished says so
                self._done[table] = min(0.99, self._rows[table] / total)
            return self._tables_percent()
        if kind == "table_finished":
            self._done[table] = 1.0
            return self._tables_percent()
        if kind in ("migration_started", "migration_finished"):
            total = int(event.get("total") or 0)
            if total <= 0:
                return None
            index = int(event.get("index") or 0)
            done = index if kind == "migration_finished" else index - 1
            return min(100.0, round(max(done, 0) / total * 100, 1))
        return None

"""A health report as Prometheus metrics (prometheus-client), base units, standard suffixes.

Contract: :func:`registry` returns a ``CollectorRegistry`` that exposes the given
reports (one per environment); :func:`exposition` renders it as the text format
(for node_exporter's textfile collector, and the admin service's ``/metrics``).
The names are the issue's; every series also carries ``env`` (the environment it
describes; the sync series name it as ``target``), so several environments'
files can sit side by side. Statuses are 0 optimal, 1 healthy, 2 degraded,
3 critical, and -1 for a check that could not run (never 0). A series with nothing
to say (no backup yet, an unreachable database's latency) is left out, not 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pgferry.health.facts import SyncRun
from pgferry.health.status import LEVELS, HealthReport

COMPLETED = ("ok", "problem")  # a sync that ran to its end (dead letters are counted apart)


class ReportCollector(Collector):
    """Yields the metric families of the reports it was given."""

    def __init__(self, reports: Iterable[HealthReport]) -> None:
        self.reports = list(reports)

    def collect(self) -> Iterator[Metric]:
        g = {name: GaugeMetricFamily(name, doc, labels=labels) for name, doc, labels in GAUGES}
        rows = CounterMetricFamily(
            "pgferry_sync_rows",
            "Rows every sync into the environment wrote, by table and result.",
            labels=["env", "table", "result"],
        )
        for r in self.reports:
            f, env = r.facts, r.env
            g["pgferry_health_status"].add_metric([env], LEVELS[r.status])
            for c in r.checks:
                g["pgferry_check_status"].add_metric([env, c.name], LEVELS[c.status])
            for table, t in sorted(f.tables.items()):
                if t.rows is not None:
                    g["pgferry_table_rows"].add_metric([env, table], t.rows)
            if f.reachable and f.latency_s is not None:
                g["pgferry_db_latency_seconds"].add_metric([env], f.latency_s)
            b = f.backups
            if b is not None and b.last_complete is not None:
                g["pgferry_backup_last_success_timestamp_seconds"].add_metric(
                    [env], b.last_complete.timestamp()
                )
            if b is not None and b.last_restore_test is not None:
                g["pgferry_backup_last_restore_test_timestamp_seconds"].add_metric(
                    [env], b.last_restore_test.timestamp()
                )
            if f.migrations is not None:
                g["pgferry_migrations_pending"].add_metric([env], len(f.migrations.pending))
            if f.sync is not None:
                g["pgferry_dead_letters"].add_metric([env], f.sync.dead_letters)
                self._sync(g, rows, env, r)
            for kind, seconds in sorted(f.durations.items()):
                g["pgferry_run_duration_seconds"].add_metric([env, kind], seconds)
        yield from g.values()
        yield rows

    @staticmethod
    def _sync(
        g: dict[str, GaugeMetricFamily], rows: CounterMetricFamily, env: str, r: HealthReport
    ) -> None:
        s = r.facts.sync
        assert s is not None
        by_source: dict[str, list[SyncRun]] = {}
        for run in s.runs:  # newest first
            if run.outcome not in ("running", "refused"):
                by_source.setdefault(run.source, []).append(run)
        sources: dict[str, tuple[int, float | None]] = {}
        for source, runs in by_source.items():
            failed = next((i for i, x in enumerate(runs) if x.outcome in COMPLETED), len(runs))
            done = next((x for x in runs if x.outcome in COMPLETED and x.finished_at), None)
            sources[source] = (
                failed,
                done.finished_at.timestamp() if done and done.finished_at else None,
            )
        for source, (failed, last) in sorted(sources.items()):
            g["pgferry_sync_consecutive_failures"].add_metric([source, env], failed)
            if last is not None:
                g["pgferry_sync_last_success_timestamp_seconds"].add_metric([source, env], last)
        for (table, result), n in sorted(s.rows.items()):
            rows.add_metric([env, table, result], n)


GAUGES: list[tuple[str, str, list[str]]] = [
    (
        "pgferry_health_status",
        "Overall health: 0 optimal, 1 healthy, 2 degraded, 3 critical.",
        ["env"],
    ),
    (
        "pgferry_check_status",
        "One check: 0 optimal, 1 healthy, 2 degraded, 3 critical, -1 unknown (could not run).",
        ["env", "check"],
    ),
    (
        "pgferry_table_rows",
        "Rows of a [health.tables] table (exact, or the estimate).",
        ["env", "table"],
    ),
    ("pgferry_db_latency_seconds", "Round trip of SELECT 1.", ["env"]),
    (
        "pgferry_backup_last_success_timestamp_seconds",
        "When the newest complete backup finished.",
        ["env"],
    ),
    (
        "pgferry_backup_last_restore_test_timestamp_seconds",
        "When a backup was last restore-tested successfully.",
        ["env"],
    ),
    (
        "pgferry_sync_last_success_timestamp_seconds",
        "When the last sync from source into target ran to its end.",
        ["source", "target"],
    ),
    (
        "pgferry_sync_consecutive_failures",
        "Syncs from source into target that failed in a row (0 after one that ran to its end).",
        ["source", "target"],
    ),
    ("pgferry_migrations_pending", "Migrations not applied yet.", ["env"]),
    (
        "pgferry_dead_letters",
        "Rows a sync could not write, waiting in pgferry.dead_letters.",
        ["env"],
    ),
    (
        "pgferry_run_duration_seconds",
        "How long the last run of each kind took (health: this one).",
        ["env", "kind"],
    ),
]


def registry(reports: Iterable[HealthReport]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ReportCollector(reports))
    return reg


def exposition(reports: Iterable[HealthReport]) -> str:
    """The Prometheus text format of ``reports``."""
    return generate_latest(registry(reports)).decode()

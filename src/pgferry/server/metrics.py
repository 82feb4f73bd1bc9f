"""``/metrics``: production's health metrics (:mod:`pgferry.health.metrics`) and the
service's own: runs by kind and state, their durations, dead letters, circuit breakers.

Contract: :func:`exposition` renders the Prometheus text format from the health cache
(one health run per ``cache_interval``, however often it is scraped) and one query on
the control database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from pgferry.server.state import Service


class RunCollector(Collector):
    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        from pgferry.jobs import breaker

        runs = GaugeMetricFamily(
            "pgferry_service_runs",
            "Runs in the control database, by kind and state.",
            labels=["kind", "state"],
        )
        took = SummaryMetricFamily(
            "pgferry_service_run_duration_seconds",
            "How long the finished runs took, by kind.",
            labels=["kind"],
        )
        with self.svc.ctl.conn() as c:
            for r in c.execute(
                "SELECT kind, state, count(*) AS n FROM pgferry_control.runs"
                " GROUP BY 1, 2 ORDER BY 1, 2"
            ):
                runs.add_metric([r["kind"], r["state"]], r["n"])
            for r in c.execute(
                "SELECT kind, count(*) AS n, coalesce(sum(extract(epoch FROM"
                " finished_at - started_at)), 0)::float8 AS s FROM pgferry_control.runs"
                " WHERE finished_at IS NOT NULL AND started_at IS NOT NULL GROUP BY 1"
                " ORDER BY 1"
            ):
                took.add_metric([r["kind"]], r["n"], r["s"])
        yield runs
        yield took
        brk = GaugeMetricFamily(
            "pgferry_circuit_breaker_open",
            "1 while calls to the environment fail fast (open), 0.5 half-open, 0 closed.",
            labels=["env"],
        )
        for env, b in sorted(breaker.states(self.svc.cfg, self.svc.ctl).items()):
            brk.add_metric([env], {"open": 1.0, "half_open": 0.5}.get(b.state, 0.0))
        yield brk


def exposition(svc: Service) -> str:
    from pgferry.health.metrics import ReportCollector
    from pgferry.health.service import unreachable

    reg = CollectorRegistry(auto_describe=False)
    reports = []
    try:
        env = svc.production
        rep, brk = svc.health(env)
        if rep is None:  # its breaker is open: not asked, and down as far as anyone knows
            rep = unreachable(
                svc.cfg,
                env,
                now=datetime.now(UTC),
                why=f"calls to {env} fail fast until {brk['retry_at']}: "
                f"{brk['failures']} failures in a row ({brk['last_error']})",
            )
        reports.append(rep)
    except Exception:  # noqa: BLE001 - no production configured: the service's own metrics
        pass
    reg.register(ReportCollector(reports))
    reg.register(RunCollector(svc))
    return generate_latest(reg).decode()

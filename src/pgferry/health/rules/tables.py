"""The ``[health.tables]`` rule: a table's row count against its thresholds.

Contract: :func:`table_rows` judges one entry (``optimal``, ``degraded_below``,
``critical_below``); a table that is missing, or that could not be counted, is degraded
or unknown with what to do about it. :func:`table_threshold` writes the thresholds as the
report shows them.
"""

from __future__ import annotations

from pgferry.config import HealthTableConfig
from pgferry.health.facts import HealthFacts
from pgferry.health.rules.verdict import Status, Verdict, fix_for_failure


def table_threshold(cfg: HealthTableConfig) -> str:
    parts = [
        f"optimal >= {cfg.optimal}" if cfg.optimal is not None else "",
        f"degraded < {cfg.degraded_below}" if cfg.degraded_below is not None else "",
        f"critical < {cfg.critical_below}" if cfg.critical_below is not None else "",
    ]
    return ", ".join(p for p in parts if p)


def table_rows(f: HealthFacts, table: str, cfg: HealthTableConfig) -> Verdict:
    """A ``[health.tables]`` entry: the row count against its thresholds."""
    t, limit = f.tables.get(table), table_threshold(cfg)
    if t is None:
        why = f.failures.get("tables", "its query did not run")
        return "unknown", "", limit, f"{table} was not counted: {why}", fix_for_failure(f, why)
    if t.missing:
        return (
            "degraded",
            "missing",
            limit,
            f"{table} does not exist in {f.env}",
            f"apply the migrations (`pgferry migrate up --env {f.env}`) or fix the name in "
            f'[health.tables."{table}"]',
        )
    if t.hidden_by_rls:
        return (
            "unknown",
            "",
            limit,
            f"{table} was not counted: row-level security hides its rows from {f.role}",
            f'set estimate = true in [health.tables."{table}"] (pg_class.reltuples), or '
            f"connect as a role that bypasses row-level security (ALTER ROLE {f.role} BYPASSRLS)",
        )
    if t.rows is None:
        if "permission denied" in (t.error or ""):
            fix = f"GRANT SELECT ON {table} TO {f.role}"
        else:
            fix = f'set estimate = true in [health.tables."{table}"] (pg_class.reltuples)'
        return "unknown", "", limit, f"{table} could not be counted: {t.error}", fix
    n, value = t.rows, f"~{t.rows}" if t.estimated else str(t.rows)
    levels: tuple[tuple[Status, str, int | None], ...] = (
        ("critical", "critical_below", cfg.critical_below),
        ("degraded", "degraded_below", cfg.degraded_below),
    )
    for level, key, below in levels:
        if below is not None and n < below:
            return (
                level,
                value,
                limit,
                f"{table} has {n:,} rows, below {key} = {below}",
                f"find out where the rows of {table} went (`pgferry journal --env {f.env}`); "
                "restore or sync them back",
            )
    if cfg.optimal is not None and n < cfg.optimal:
        return (
            "healthy",
            value,
            limit,
            f"{table} has {n:,} rows, short of optimal = {cfg.optimal}",
            "",
        )
    return "optimal", value, limit, f"{table} has {n:,} rows", ""

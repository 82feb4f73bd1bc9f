"""Sync facts from the target's own records: its journal and ``pgferry.dead_letters``.

Contract: :func:`sync` reads the newest ``sync`` rows of ``pgferry.journal`` (its
details hold the run's result: ``outcome``, ``finished_at``, ``totals``, ``tables``,
``run_id``), the rows every sync wrote by table and result, the duration of the
last sync and ``migrate up``, and the dead letters still waiting: those of a table
with no clean sync (table status ``ok``) begun after them, by the server's clock. An environment
where no sync ever ran has none of these tables: empty facts, not an error.
The journal is read by column names that the one-row-per-run layout and the
earlier table share, so either works.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgferry.config import Config, HealthThresholds
from pgferry.health.facts import HealthFacts, Sync, SyncRun

RUNS_SQL = """
SELECT coalesce(details->'source'->>'env', arguments->>'source', ''), outcome,
       coalesce((details->>'finished_at')::timestamptz, at), duration_ms,
       coalesce(details->>'run_id', arguments->>'run_id')
FROM pgferry.journal WHERE command = 'sync' ORDER BY id DESC LIMIT 20
"""
# (written out twice, not formatted in: no SQL is built from strings)
ROWS_SQL = """
SELECT t->>'table', k, sum((t->>k)::bigint)::bigint
FROM pgferry.journal j CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(j.details->'tables') = 'array' THEN j.details->'tables'
             ELSE '[]'::jsonb END) t
CROSS JOIN unnest(ARRAY['inserted', 'updated', 'deleted', 'unchanged', 'dead_lettered']) k
WHERE j.command = 'sync' AND t ? k
GROUP BY 1, 2
"""
# a clean sync's time is the server's (j.at, when it began), as the dead letters' is: the
# finished_at in its details is the syncing machine's clock, which may run fast
DEAD_SQL = """
WITH clean AS (
    SELECT t->>'table' AS table_name, max(j.at) AS at
    FROM pgferry.journal j CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(j.details->'tables') = 'array' THEN j.details->'tables'
             ELSE '[]'::jsonb END) t
    WHERE j.command = 'sync' AND t->>'status' = 'ok'
    GROUP BY 1)
SELECT d.table_name, count(*) FROM pgferry.dead_letters d LEFT JOIN clean c USING (table_name)
WHERE c.at IS NULL OR d.at > c.at
GROUP BY 1
"""
MIGRATE_SQL = """
SELECT duration_ms FROM pgferry.journal WHERE command = 'migrate up' AND duration_ms IS NOT NULL
ORDER BY id DESC LIMIT 1
"""


def _exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s)", [name]).fetchone() != (None,)


def sync(conn: psycopg.Connection[Any], f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    s = Sync()  # set on f only once every query ran: a half-read Sync would export zeros
    if not _exists(conn, "pgferry.journal"):
        f.sync = s
        return
    s.runs = [
        SyncRun(src, outcome, at, ms / 1000 if ms is not None else None, run_id)
        for src, outcome, at, ms, run_id in conn.execute(RUNS_SQL)
    ]
    s.rows = {(t, k): int(n) for t, k, n in conn.execute(ROWS_SQL)}
    done = next((r for r in s.runs if r.duration_s is not None), None)
    if done is not None and done.duration_s is not None:
        f.durations["sync"] = done.duration_s
    row = conn.execute(MIGRATE_SQL).fetchone()
    if row is not None:
        f.durations["migrate"] = row[0] / 1000
    if _exists(conn, "pgferry.dead_letters"):
        s.dead_letter_tables = {t: int(n) for t, n in conn.execute(DEAD_SQL)}
        s.dead_letters = sum(s.dead_letter_tables.values())
    f.sync = s

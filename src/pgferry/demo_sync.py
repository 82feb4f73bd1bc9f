"""The sync part of ``pgferry demo``: dev has data, prod has none; verify, sync, verify.

Contract: :data:`STEPS` are :class:`pgferry.demo_story.DemoStep` objects that run after the
migration steps (both environments at the same schema version). They seed dev
with deterministic generated data — exactly :data:`CASES` legal cases,
:data:`UPDATES` regulatory updates and :data:`SOURCES` data sources (same rows on
every run: no random(), no now()) — then show ``pgferry verify dev prod`` finding
the gap (exit 1) and ``pgferry health --env prod`` degraded (0 legal cases, below
its ``[health.tables]`` threshold), close the gap with an incremental
``pgferry sync dev prod --yes`` (progress bars, a Markdown report in the demo
directory) and show ``verify`` exiting 0 and prod's health optimal; then a mistake
made in dev reaches prod through a sync, and ``pgferry sync revert`` puts prod back
from the run's before-images; then a correction made by hand in prod meets a change
of the same row in dev: the sync stops at the conflict, and ``--on-conflict target``
keeps prod's row. A step that ends otherwise raises
:class:`~pgferry.errors.OperationFailed` (through ``Demo.cli``'s ``expect``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from pgferry.errors import OperationFailed

if TYPE_CHECKING:
    from pgferry.demo_story import Demo

SOURCES = 12
CASES = 2025
UPDATES = 5654
REPORT = "sync-report.md"
TABLES = ("public.data_sources", "public.legal_cases", "public.regulatory_updates")

# Identity columns are GENERATED ALWAYS: explicit ids need OVERRIDING SYSTEM VALUE, and
# the sequences are moved past them so dev's application could go on inserting.
SEED_SQL = """
INSERT INTO data_sources (id, name, kind, base_url, active, created_at, updated_at)
OVERRIDING SYSTEM VALUE
SELECT i,
       (ARRAY['US Federal Courts (PACER)', 'California Superior Court', 'UK High Court',
              'German Federal Court of Justice', 'EU Court of Justice', 'New York Supreme Court',
              'SEC', 'FCA', 'BaFin', 'EU Official Journal', 'Federal Register',
              'LexisNexis feed'])[i],
       (ARRAY['court', 'court', 'court', 'court', 'court', 'court', 'regulator', 'regulator',
              'regulator', 'gazette', 'gazette', 'vendor'])[i],
       'https://source' || i || '.example.org/api',
       i <> 12,
       timestamptz '2024-01-01 09:00:00+00' + i * interval '1 day',
       timestamptz '2024-01-01 09:00:00+00' + i * interval '1 day'
FROM generate_series(1, %(sources)s) AS i;

INSERT INTO legal_cases (id, source_id, case_number, title, jurisdiction, status, filed_on,
                         created_at, updated_at)
OVERRIDING SYSTEM VALUE
SELECT i,
       1 + i %% 6,
       (ARRAY['CV', 'CR', 'BK', 'AP'])[1 + i %% 4] || '-' || (2019 + i %% 6) || '-'
           || lpad(i::text, 5, '0'),
       (ARRAY['Acme Corp', 'Globex', 'Initech', 'Umbrella plc', 'Stark Industries',
              'Wayne Enterprises', 'Hooli', 'Vandelay Imports', 'Soylent GmbH',
              'Tyrell SA'])[1 + i %% 10]
           || ' v. ' ||
       (ARRAY['State of New York', 'Federal Trade Commission', 'Doe', 'Roe',
              'European Commission', 'Bundeskartellamt', 'HM Revenue & Customs',
              'Cyberdyne Systems', 'Oceanic Airlines', 'Monarch Group',
              'Pied Piper'])[1 + (i * 7) %% 11],
       (ARRAY['US-NY', 'US-CA', 'US-DE', 'UK', 'DE', 'EU'])[1 + i %% 6],
       (ARRAY['open', 'open', 'stayed', 'settled', 'closed'])[1 + (i * 3) %% 5],
       date '2019-01-01' + (i * 13) %% 2000,
       timestamptz '2024-02-01 08:00:00+00' + i * interval '3 hours',
       timestamptz '2024-02-01 08:00:00+00' + i * interval '3 hours' + (i %% 17) * interval '1 day'
FROM generate_series(1, %(cases)s) AS i;

INSERT INTO regulatory_updates (id, source_id, title, summary, published_at, case_id,
                                created_at, updated_at)
OVERRIDING SYSTEM VALUE
SELECT i,
       7 + i %% 5,
       (ARRAY['Guidance', 'Final rule', 'Enforcement notice', 'Consultation', 'Amendment'])
           [1 + i %% 5] || ' on ' ||
       (ARRAY['data retention', 'anti-money laundering', 'consumer credit', 'market abuse',
              'cross-border transfers', 'beneficial ownership', 'sanctions screening'])
           [1 + (i * 3) %% 7] || ' (' || i || ')',
       CASE WHEN i %% 9 = 0 THEN NULL
            ELSE 'Summary of update ' || i || ': obligations change for '
                 || (ARRAY['banks', 'insurers', 'brokers', 'fintechs'])[1 + i %% 4] || '.' END,
       timestamptz '2023-06-01 12:00:00+00' + i * interval '97 minutes',
       CASE WHEN i %% 5 < 3 THEN 1 + (i * 7) %% %(cases)s END,
       timestamptz '2023-06-01 12:00:00+00' + i * interval '97 minutes',
       timestamptz '2023-06-01 12:00:00+00' + i * interval '97 minutes'
FROM generate_series(1, %(updates)s) AS i;

SELECT setval(pg_get_serial_sequence('data_sources', 'id'), %(sources)s);
SELECT setval(pg_get_serial_sequence('legal_cases', 'id'), %(cases)s);
SELECT setval(pg_get_serial_sequence('regulatory_updates', 'id'), %(updates)s);
"""

COUNT_SQL = """
SELECT (SELECT count(*) FROM data_sources), (SELECT count(*) FROM legal_cases),
       (SELECT count(*) FROM regulatory_updates)
"""


def seed(dsn: str) -> dict[str, int]:
    """Fill an empty dev database (migrated) with the demo's rows; returns the counts."""
    with psycopg.connect(dsn) as conn:
        for stmt in filter(str.strip, SEED_SQL.split(";\n")):
            conn.execute(stmt, {"sources": SOURCES, "cases": CASES, "updates": UPDATES})
        return counts_on(conn)


def counts_on(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute(COUNT_SQL).fetchone()
    assert row is not None
    return dict(zip(TABLES, map(int, row), strict=True))


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return counts_on(conn)


def _dsn(d: Demo, env: str) -> str:
    from pgferry.config import load_config
    from pgferry.pg.connect import resolve_env

    return resolve_env(load_config(d.config_path), env).dsn


def step_seed(d: Demo) -> None:
    d.say(
        f"Seed dev with {CASES:,} legal cases, {UPDATES:,} regulatory updates and "
        f"{SOURCES} data sources (generated, the same on every run). prod stays empty."
    )
    dev = seed(_dsn(d, "dev"))
    prod = counts(_dsn(d, "prod"))
    for table in TABLES:
        d.say(f"  {table:<28} dev {dev[table]:>6,}   prod {prod[table]:>6,}")
    if dev != dict(zip(TABLES, (SOURCES, CASES, UPDATES), strict=True)) or any(prod.values()):
        raise OperationFailed(f"demo seed: unexpected counts dev={dev} prod={prod}")
    d.results["sync"] = {"dev_before": dev, "prod_before": prod}


def step_verify_gap(d: Demo) -> None:
    d.say(
        "verify compares the two sides with chunked checksums computed on each server; "
        "rows only in dev are the gap (exit 1: done, and it found a problem)."
    )
    obj = d.cli("verify", "dev", "prod", expect=(1,))
    if obj is not None:
        d.results["sync"]["verify_before"] = obj.get("totals")


def step_sync(d: Demo) -> None:
    report = d.directory / REPORT
    d.say(
        "An incremental sync closes the gap: parents first, in batches through COPY, "
        "upserts that skip unchanged rows; prod is protected, hence --yes."
    )
    obj = d.cli("sync", "dev", "prod", "--yes", "--report", str(report))
    if not report.is_file():
        raise OperationFailed(f"the sync did not write its report to {report}")
    if obj is not None:
        d.results["sync"]["sync"] = obj.get("totals")
    d.results["sync"]["report"] = str(report)
    if not d.st.json:
        d.say(f"\nThe report, {report.name}:\n")
        d.st.out.print(report.read_text(encoding="utf-8"), markup=False, highlight=False)


def step_verify_clean(d: Demo) -> None:
    d.say("verify again: every table matches (exit 0).")
    obj = d.cli("verify", "dev", "prod")
    prod = counts(_dsn(d, "prod"))
    d.results["sync"]["prod_after"] = prod
    if obj is not None:
        d.results["sync"]["verify_after"] = obj.get("totals")
    if prod != dict(zip(TABLES, (SOURCES, CASES, UPDATES), strict=True)):
        raise OperationFailed(f"after the sync prod holds {prod}")


def _health(d: Demo, expect: str, code: int) -> None:
    from datetime import UTC, datetime

    from pgferry.config import load_config
    from pgferry.health import service

    d.cli("health", "--env", "prod", expect=(code,))
    report = service.run(load_config(d.config_path), "prod", now=datetime.now(UTC), use_cache=False)
    rows = report.check("rows:public.legal_cases")
    d.results.setdefault("health", {})["after" if code == 0 else "before"] = {
        "status": report.status,
        "legal_cases": rows.value,
        "message": rows.message,
    }
    if report.status != expect:
        raise OperationFailed(
            f"prod health is {report.status}, expected {expect}: "
            + "; ".join(c.message for c in report.checks if c.status in ("degraded", "critical"))
        )


def step_health_before(d: Demo) -> None:
    d.say(
        "Health checks on prod: the server answers, the migrations are applied, but "
        "public.legal_cases has 0 rows and pgferry.toml says below 1 is degraded (exit 1)."
    )
    _health(d, "degraded", 1)


def step_health_after(d: Demo) -> None:
    d.say(f"Health again: {CASES:,} legal cases, at or above optimal = 2000; prod is optimal.")
    _health(d, "optimal", 0)


MISTAKE_SQL = "UPDATE regulatory_updates SET summary = NULL WHERE id <= 300"
SUMMARIES_SQL = "SELECT count(summary) FROM regulatory_updates"


def _one(dsn: str, q: str) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(q).fetchone()
        return row[0] if row else None


def step_mistake(d: Demo) -> None:
    dev, prod = _dsn(d, "dev"), _dsn(d, "prod")
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute(MISTAKE_SQL)
    before = _one(prod, SUMMARIES_SQL)
    d.say(
        f"A bad script in dev blanks the summaries of the first 300 updates "
        f"({MISTAKE_SQL}), and the next sync carries it into prod. prod is protected, so "
        f"the sync keeps every row it changes, as it was, in pgferry.before_images."
    )
    obj = d.cli("sync", "dev", "prod", "--yes")
    run_id = (obj or {}).get("run_id") or _one(
        prod, "SELECT run_id FROM pgferry.before_images ORDER BY id DESC LIMIT 1"
    )
    after = _one(prod, SUMMARIES_SQL)
    d.say(f"prod summaries: {before:,} before the sync, {after:,} after it.")
    if after != _one(dev, SUMMARIES_SQL) or after >= before:
        raise OperationFailed(f"the mistaken sync left {after} summaries in prod")
    d.results["sync"]["mistake"] = {"run_id": run_id, "before": before, "after": after}


def step_revert(d: Demo) -> None:
    run_id = d.results["sync"]["mistake"]["run_id"]
    d.say(
        "sync revert puts back every row that run changed (it refuses if one changed "
        "since): a minute of work instead of a restore."
    )
    d.cli("sync", "revert", str(run_id), "--env", "prod", "--yes")
    back = _one(_dsn(d, "prod"), SUMMARIES_SQL)
    d.say(f"prod summaries after the revert: {back:,}.")
    if back != d.results["sync"]["mistake"]["before"]:
        raise OperationFailed(f"after the revert prod holds {back} summaries")
    d.results["sync"]["reverted"] = back


FIX_SQL = """UPDATE regulatory_updates SET summary = CASE WHEN id % 9 = 0 THEN NULL
    ELSE 'Summary of update ' || id || ': obligations change for '
         || (ARRAY['banks', 'insurers', 'brokers', 'fintechs'])[1 + id % 4] || '.' END
WHERE id <= 300"""
CORRECT_SQL = "UPDATE legal_cases SET title = %s WHERE id = 7"


def step_conflict(d: Demo) -> None:
    dev, prod = _dsn(d, "dev"), _dsn(d, "prod")
    with psycopg.connect(dev, autocommit=True) as conn:
        conn.execute(FIX_SQL)  # the bad script is fixed in dev, so dev and prod agree again
        conn.execute(CORRECT_SQL, ["Globex v. Doe (refiled)"])
    with psycopg.connect(prod, autocommit=True) as conn:
        conn.execute(CORRECT_SQL, ["Globex v. Doe (corrected by legal ops)"])
    d.say(
        "Someone corrects case 7's title by hand in prod, while dev changes the same row. "
        'The next sync finds the conflict: prod is protected, so on_conflict = "stop" '
        "leaves legal_cases as it is and lists the conflict (exit 1)."
    )
    d.cli("sync", "dev", "prod", "--yes", expect=(1,))
    title = _one(prod, "SELECT title FROM legal_cases WHERE id = 7")
    if title != "Globex v. Doe (corrected by legal ops)":
        raise OperationFailed(f"the stopped sync changed case 7's title to {title!r}")
    d.results["sync"]["conflict_stopped"] = title


def step_keep_target(d: Demo) -> None:
    d.say("--on-conflict target keeps prod's correction and syncs everything else.")
    d.cli("sync", "dev", "prod", "--yes", "--on-conflict", "target")
    prod = _dsn(d, "prod")
    title = _one(prod, "SELECT title FROM legal_cases WHERE id = 7")
    if title != "Globex v. Doe (corrected by legal ops)":
        raise OperationFailed(f"--on-conflict target left case 7's title as {title!r}")
    d.results["sync"]["conflict_kept"] = title


def steps() -> list[Any]:
    """The sync steps, to append to :data:`pgferry.demo.STEPS`."""
    from pgferry.demo_story import DemoStep

    return [
        DemoStep("seed dev", step_seed),
        DemoStep("verify finds the gap", step_verify_gap),
        DemoStep("prod health before the sync", step_health_before),
        DemoStep("sync dev -> prod", step_sync),
        DemoStep("verify again", step_verify_clean),
        DemoStep("prod health after the sync", step_health_after),
        DemoStep("a mistaken sync into prod", step_mistake),
        DemoStep("sync revert", step_revert),
        DemoStep("a conflict stops the sync", step_conflict),
        DemoStep("--on-conflict target", step_keep_target),
    ]

"""The zero-downtime part of ``pgferry demo``: a rename in prod, expand, backfill, contract.

Contract: :func:`steps` returns :class:`pgferry.demo_story.DemoStep` objects that run after
the backup steps: ``migrate new --expand-contract "rename legal_cases.jurisdiction to
jurisdiction_code"`` scaffolds the five files from prod's catalog, ``migrate number``
numbers them (V13 expand, V14 contract), ``migrate up --env prod --yes`` applies the
expand and *holds* the contract (its ``after backfill`` guard), ``migrate status`` says
why, ``backfill run`` copies the column in keyset batches, and ``migrate up --contract``
releases the contract file; then ``migrate test`` proves every undo file on a scratch
database of the embedded server. Figures go into ``demo.results["zdt"]``; a step that ends
otherwise raises :class:`~pgferry.errors.OperationFailed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from pgferry.errors import OperationFailed

if TYPE_CHECKING:
    from pgferry.demo_story import Demo

DESCRIPTION = "rename legal_cases.jurisdiction to jurisdiction_code"
SLUG = "rename_legal_cases_jurisdiction_to_jurisdiction_code"


def _prod(d: Demo, query: str, params: list[Any] | None = None) -> Any:
    from pgferry.config import load_config
    from pgferry.pg.connect import resolve_env

    target = resolve_env(load_config(d.config_path), "prod")
    with psycopg.connect(target.dsn, autocommit=True) as c:
        row = c.execute(query, params).fetchone()
    return row[0] if row else None


def _applied(d: Demo) -> int:
    return int(
        _prod(
            d,
            "SELECT count(*) FROM flyway_schema_history WHERE success "
            "AND type = 'SQL' AND version IS NOT NULL",
        )
    )


def step_scaffold(d: Demo) -> None:
    d.say(
        "Renaming a column in place breaks every running client that uses the old name "
        "(`pgferry lint` says so). Instead: expand, backfill, contract. pgferry writes the "
        "three steps from prod's catalog, and the undo of each:"
    )
    d.cli("migrate", "new", "--expand-contract", DESCRIPTION, "--env", "prod")
    d.say("The contract file declares what must be true before it may run:")
    contract = next((d.directory / "migrations").glob("VXXX__*_2_contract.sql"))
    guards = [
        ln
        for ln in contract.read_text(encoding="utf-8").splitlines()
        if ln.startswith("-- pgferry:")
    ]
    for line in guards:
        d.say(f"  {line}")
    d.cli("migrate", "number")
    d.results["zdt"] = {
        "files": sorted(p.name for p in (d.directory / "migrations").glob(f"*{SLUG}*")),
        "guards": guards,
    }


def step_expand(d: Demo) -> None:
    d.say(
        "`migrate up` applies the expand (a new column and a trigger that keeps both in "
        "step) and holds the contract back: its backfill has not run in prod."
    )
    before = _applied(d)
    d.cli("migrate", "up", "--env", "prod", "--yes")
    d.cli("migrate", "status", "--env", "prod")
    if _applied(d) != before + 1:
        raise OperationFailed("the expand should have been the only file applied")
    d.results["zdt"]["held_after_up"] = True


def step_backfill(d: Demo) -> None:
    d.say(
        "The backfill copies the existing rows in keyset batches, each its own short "
        "transaction with lock_timeout, checkpointed in pgferry.backfill_state (a crash "
        "resumes where it stopped); batches grow or shrink toward 200 ms."
    )
    d.cli("backfill", "run", SLUG, "--env", "prod", "--yes", "--batch-size", "500")
    missing = _prod(d, "SELECT count(*) FROM legal_cases WHERE jurisdiction_code IS NULL")
    if missing:
        raise OperationFailed(f"{missing} legal cases still lack jurisdiction_code")
    d.results["zdt"]["backfilled"] = _prod(
        d, "SELECT rows FROM pgferry.backfill_state WHERE name = %s", [SLUG]
    )


def step_contract(d: Demo) -> None:
    d.say("Every guard passes now: `--contract` releases the held file.")
    d.cli("migrate", "up", "--env", "prod", "--yes", "--contract")
    cols = _prod(
        d,
        "SELECT string_agg(column_name || ' ' || is_nullable, ', ' ORDER BY "
        "column_name) FROM information_schema.columns WHERE table_name = "
        "'legal_cases' AND column_name LIKE 'jurisdiction%'",
    )
    if cols != "jurisdiction_code NO":
        raise OperationFailed(f"after the contract legal_cases has {cols}")
    d.results["zdt"]["released"] = True
    d.results["zdt"]["current_version"] = _prod(
        d, "SELECT max(version::int) FROM flyway_schema_history WHERE success"
    )


def step_migrate_test(d: Demo) -> None:
    d.say(
        "CI proves every undo file: `migrate test` applies each migration on a scratch "
        "database of the embedded server, undoes it, applies it again and compares the "
        "schemas, then runs tests/*.sql."
    )
    d.cli("migrate", "test")


def steps() -> list[Any]:
    """The zero-downtime steps, to append to :data:`pgferry.demo.STEPS`."""
    from pgferry.demo_story import DemoStep

    return [
        DemoStep("scaffold a rename", step_scaffold),
        DemoStep("expand; the contract is held", step_expand),
        DemoStep("backfill", step_backfill),
        DemoStep("contract released", step_contract),
        DemoStep("migrate test", step_migrate_test),
    ]

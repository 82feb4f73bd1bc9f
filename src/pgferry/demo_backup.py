"""The backup part of ``pgferry demo``: back up prod after the sync, test-restore it, list it.

Contract: :func:`steps` returns :class:`pgferry.demo_story.DemoStep` objects that run after
the sync steps: ``backup create --env prod`` (the manifest's row counts must be
the figures the sync left in prod), ``backup verify latest --env prod
--restore-test`` (a scratch database on the embedded server, dropped again) and
``backup list --env prod``. Figures go into ``demo.results["backup"]``; a step
that ends otherwise raises :class:`~pgferry.errors.OperationFailed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgferry.errors import OperationFailed

if TYPE_CHECKING:
    from pgferry.demo_story import Demo


def _catalog(d: Demo) -> list[Any]:
    from pgferry.backup.catalog import list_backups
    from pgferry.config import load_config

    return list_backups(load_config(d.config_path).backup_dir, "prod")


def step_create(d: Demo) -> None:
    from pgferry.demo_sync import CASES, SOURCES, UPDATES

    d.say(
        "Back up prod: pg_dump in directory format, every table's rows counted in the dump's "
        "own snapshot, a sha256 of every file, and the manifest written last."
    )
    d.cli("backup", "create", "--env", "prod", "--tag", "demo")
    found = _catalog(d)
    if len(found) != 1 or found[0].manifest is None:
        raise OperationFailed(f"after backup create prod has {len(found)} complete backups")
    tables = found[0].manifest.tables
    want = {
        "public.data_sources": SOURCES,
        "public.legal_cases": CASES,
        "public.regulatory_updates": UPDATES,
    }
    got = {t: tables.get(t) for t in want}
    if got != want:
        raise OperationFailed(f"the backup of prod counted {got}, expected {want}")
    d.results["backup"] = {
        "id": found[0].id,
        "size_bytes": found[0].size_bytes,
        "tables": len(tables),
        "rows": got,
    }


def step_verify(d: Demo) -> None:
    d.say(
        "A backup nobody restored is a hope. verify --restore-test re-hashes every file, "
        "restores into a scratch database, compares every table's row count with the "
        "manifest, and drops the scratch database."
    )
    obj = d.cli("backup", "verify", "latest", "--env", "prod", "--restore-test")
    info = _catalog(d)[0]
    if not info.verification.restore_test_ok:
        raise OperationFailed(f"the test restore of {info.id} failed: {info.verification.problems}")
    d.results["backup"]["restore_test_ok"] = True
    if obj is not None:
        d.results["backup"]["tables_compared"] = obj.get("tables_compared")


def step_list(d: Demo) -> None:
    d.say(
        "The catalog: state, retention slot, and how old the newest (restore-tested) "
        "backup is, which is what the health check reads."
    )
    d.cli("backup", "list", "--env", "prod")


def steps() -> list[Any]:
    """The backup steps, to append to :data:`pgferry.demo.STEPS`."""
    from pgferry.demo_story import DemoStep

    return [
        DemoStep("backup prod", step_create),
        DemoStep("test-restore the backup", step_verify),
        DemoStep("list backups", step_list),
    ]

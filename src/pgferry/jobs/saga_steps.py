"""What each step of the release saga does, and how it is undone: :mod:`pgferry.commands`
calls (:mod:`pgferry.jobs.saga` runs them in order, keeps their state and compensates).

Contract: ``RUN[name](cfg, args, rec, started)`` runs step ``name`` and returns what it
recorded (``started``: what the step recorded as it started, :func:`pgferry.jobs.saga`
``_begin``); a step that ends with a problem raises :class:`StepFailed`.
``UNDO[name](cfg, args, done, backup_id)`` undoes a step from what it recorded (a done
step's result, or a failed one's: what it recorded as it started) and returns the
compensation's record: ``{"action": ...}``; ``"manual"`` (with ``why`` and ``restore``)
where it cannot. Steps without an entry in ``UNDO`` change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pgferry.config import Config
from pgferry.errors import PgferryError
from pgferry.jobs.operations import ReleaseArgs, release_tables

# -- the steps -----------------------------------------------------------------------


class StepFailed(PgferryError):
    """A step ended with a problem (verify found differences, health is critical)."""


def _backup(
    cfg: Config,
    a: ReleaseArgs,
    rec: Any,
    started: dict[str, Any],  # noqa: ARG001
) -> dict[str, Any]:
    from pgferry.commands import backup

    res = backup.create(
        cfg, backup.CreateOptions(a.env, tag="pre-release", keep=True), progress=rec
    )
    return {"backup": res.manifest.id, "path": str(res.path)}


def _migrate(cfg: Config, a: ReleaseArgs, rec: Any, started: dict[str, Any]) -> dict[str, Any]:
    from pgferry.commands import migrate_run

    res = migrate_run.up(cfg, migrate_run.RunOptions(env=a.env, yes=True), progress=rec)
    return {
        "version_before": started["version_before"],
        "current_version": res.current_version,
        "applied": [f.to_dict() for f in res.applied],
    }


def _sync(cfg: Config, a: ReleaseArgs, rec: Any, started: dict[str, Any]) -> dict[str, Any]:
    from pgferry.commands import sync

    ids = started["run_ids"]
    res = sync.sync(
        cfg,
        sync.SyncOptions(
            a.source,
            a.env,
            "incremental",
            release_tables(cfg, a),
            yes=True,
            run_id=ids[-1],
        ),
        progress=rec,
    )
    out = {
        "run_id": res.run_id,
        "run_ids": ids,
        "outcome": res.derive_outcome(),
        "totals": res.totals(),
        "before_images": any(t.before_images for t in res.tables),
    }
    if res.exit_code:
        raise StepFailed(
            f"sync ended {res.derive_outcome()} (exit {res.exit_code}): "
            f"{res.error or 'see its tables'}",
            **out,
        )
    return out


def _verify(
    cfg: Config,
    a: ReleaseArgs,
    rec: Any,
    started: dict[str, Any],  # noqa: ARG001
) -> dict[str, Any]:
    from pgferry.commands import sync

    res = sync.verify(
        cfg, sync.VerifyOptions(a.source, a.env, release_tables(cfg, a)), progress=rec
    )
    out = {"outcome": res.derive_outcome(), "totals": res.totals()}
    if res.exit_code:
        raise StepFailed(f"verify: {a.source} and {a.env} differ after the sync", **out)
    return out


def _health(
    cfg: Config,
    a: ReleaseArgs,
    rec: Any,  # noqa: ARG001
    started: dict[str, Any],  # noqa: ARG001
) -> dict[str, Any]:
    from pgferry.commands import health

    rep = health.health(cfg, a.env)
    out = {
        "status": rep.status,
        "not_ok": [c.name for c in rep.checks if c.status in ("degraded", "critical")],
    }
    if rep.status == "critical":
        raise StepFailed(f"health of {a.env} is critical: {', '.join(out['not_ok'])}", **out)
    return out


RUN: dict[str, Callable[[Config, ReleaseArgs, Any, dict[str, Any]], dict[str, Any]]] = {
    "backup": _backup,
    "migrate": _migrate,
    "sync": _sync,
    "verify": _verify,
    "health": _health,
}


# -- compensations ----------------------------------------------------------------


def _undo_migrate(
    cfg: Config, a: ReleaseArgs, done: dict[str, Any], backup_id: str | None
) -> dict[str, Any]:
    from pgferry.commands import migrate_info, migrate_run
    from pgferry.migrate import files

    to = done.get("version_before")
    if "applied" in done:
        applied = done["applied"] or []
        if not applied:
            return {"action": "none", "why": "no migration was applied"}
        undoable = {str(v) for v in files.scan(cfg.migrations_dir).undo}
        missing = [f["script"] for f in applied if str(f.get("version")) not in undoable]
        if missing:
            return {
                "action": "manual",
                "why": f"no U file for {', '.join(missing)}",
                "restore": f"pgferry backup restore {backup_id} --env {a.env} --yes",
            }
    # the step failed or was cancelled part way, without saying what it applied (each file
    # is its own transaction): the target's history above the version it started at
    elif migrate_info.status(cfg, a.env).current == to:
        return {"action": "none", "why": "no migration was applied"}
    res = migrate_run.undo(cfg, migrate_run.RunOptions(env=a.env, yes=True, to=to or "0"))
    return {"action": "migrate undo", "to": to, "current_version": res.current_version}


def run_ids(done: dict[str, Any]) -> list[str]:
    """The run ids of every attempt of the sync step, oldest first."""
    ids = done.get("run_ids") or ([done["run_id"]] if done.get("run_id") else [])
    return [str(i) for i in ids]


def _may_have_written(done: dict[str, Any], run_id: str) -> bool:
    """Could sync run ``run_id`` have committed rows? Unknown (so yes) unless the step's
    sync returned, with its counts, as that run."""
    if done.get("run_id") != run_id or "totals" not in done:
        return True  # it raised, or its worker died: its counts never came back
    t = done["totals"] or {}
    return any(t.get(k) for k in ("inserted", "updated", "deleted"))


def _undo_sync(
    cfg: Config, a: ReleaseArgs, done: dict[str, Any], backup_id: str | None
) -> dict[str, Any]:
    """Revert every attempt of the sync step from its before-images, newest first.

    The run ids come from the step itself (the saga chose each before its sync started),
    so a sync that raised, or whose worker died, is reverted too. Which of them committed
    anything, the target's before-images say: on a target that keeps them they are
    written in the transaction of the rows they describe."""
    from pgferry.commands import sync

    ids = run_ids(done)
    held = sync.runs_with_images(cfg, a.env, ids)
    if not sync.keeps_before_images(cfg, a.env) and any(
        i not in held and _may_have_written(done, i) for i in ids
    ):
        return {
            "action": "manual",
            "why": "the sync kept no before-images",
            "run_ids": ids,
            "restore": f"pgferry backup restore {backup_id} --env {a.env} --yes",
        }
    if not held:
        return {"action": "none", "why": "the sync committed nothing", "run_ids": ids}
    reverted = []
    for run_id in reversed(held):
        res = sync.revert(cfg, sync.RevertOptions(run_id, a.env, yes=True))
        reverted.append(res.to_dict())
    return {"action": "sync revert", "run_ids": ids, "reverted": reverted}


UNDO: dict[str, Callable[[Config, ReleaseArgs, dict[str, Any], str | None], dict[str, Any]]] = {
    "migrate": _undo_migrate,
    "sync": _undo_sync,
}

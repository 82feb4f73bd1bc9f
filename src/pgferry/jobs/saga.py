"""The release saga: backup → migrate up → sync → verify → health, with compensations.

Contract: the release's plan (:func:`pgferry.jobs.operations.release_plan`) is the
whole release as one plan (what the approver sees; its
``hashed`` part, hashed by the run, covers every step: the target, the exact
migration SQL, the tables and strategies the sync moves). :func:`execute` runs the
steps in order, each a :mod:`pgferry.commands` call, and keeps each step's state in
``pgferry_control.saga_steps``: a step that ended is never run again when the run
resumes after its worker died; a step that was running is run again (each is safe to
repeat: ``migrate up`` applies what is left, ``sync`` upserts, a backup is one more).
A step fails when it ends with a problem or raises anything (a driver error too).
When a step fails, the steps before it are compensated newest first, each once, after
the failed step itself where it wrote (a sync keeps what its units committed before it
ended with dead letters or a failed table, or raised: it is reverted first; it stays
``failed``):

- ``sync``: ``sync revert`` of each of its attempts, newest first. The saga chose each
  attempt's run id before that sync started and kept it in the step, so a sync that
  raised, or whose worker died, is known by its run id all the same; the before-images
  the target holds of those runs are what they committed (on a target that keeps them,
  they are written in the rows' own transaction). A target that keeps none while the
  sync may have written, or a revert that refuses (a row changed since), stops the saga;
- ``migrate``: ``migrate undo`` back to the version before, when every applied file
  has its U file; else the saga stops;
- ``backup``, ``verify``, ``health`` change nothing: nothing to undo (the backup stays,
  it is the way back).

``verify`` fails on any difference; ``health`` fails on ``critical`` only (degraded is
reported, and does not undo a release). The run ends ``failed`` when a step failed
(each step's outcome and compensation in its result; ``compensated`` says whether every
compensation finished), ``succeeded`` otherwise. A compensation that stopped leaves the
rest as it stands: the run's error says, in one sentence, which step it could not undo
and the pre-release backup to restore.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg.types.json import Jsonb

from pgferry.config import Config
from pgferry.errors import PgferryError
from pgferry.jobs import runs
from pgferry.jobs.control import Control
from pgferry.jobs.operations import Args, Outcome, ReleaseArgs, release_tables
from pgferry.pg.errors import error_message
from pgferry.redaction import redact, redact_tree

STEPS = ("backup", "migrate", "sync", "verify", "health")


# -- state -------------------------------------------------------------------------


def _steps(ctl: Control, run_id: str) -> dict[str, dict[str, Any]]:
    with ctl.conn() as c:
        c.execute(
            "INSERT INTO pgferry_control.saga_steps (run_id, idx, name, state)"
            " SELECT %s, i - 1, n, 'pending' FROM unnest(%s::text[]) WITH ORDINALITY"
            " AS s(n, i) ON CONFLICT DO NOTHING",
            [run_id, list(STEPS)],
        )
        rows = c.execute(
            "SELECT name, state, result, compensation FROM"
            " pgferry_control.saga_steps WHERE run_id = %s ORDER BY idx",
            [run_id],
        ).fetchall()
    return {r["name"]: dict(r) for r in rows}


def states(ctl: Control, run_id: str) -> dict[str, str]:
    """Each step's state as the run's saga left it (nothing for a saga not begun)."""
    with ctl.conn() as c:
        rows = c.execute(
            "SELECT name, state FROM pgferry_control.saga_steps WHERE run_id = %s", [run_id]
        ).fetchall()
    return {r["name"]: r["state"] for r in rows}


def _set(
    ctl: Control,
    run_id: str,
    name: str,
    state: str,
    *,
    result: dict[str, Any] | None = None,
    compensation: dict[str, Any] | None = None,
) -> None:
    with ctl.conn() as c:
        c.execute(
            "UPDATE pgferry_control.saga_steps SET state = %s,"
            " result = coalesce(%s, result), compensation = coalesce(%s, compensation),"
            " started_at = CASE WHEN %s = 'running' THEN now() ELSE started_at END,"
            " finished_at = CASE WHEN %s <> 'running' THEN now() END"
            " WHERE run_id = %s AND name = %s",
            [
                state,
                Jsonb(redact_tree(result)) if result is not None else None,
                Jsonb(redact_tree(compensation)) if compensation is not None else None,
                state,
                state,
                run_id,
                name,
            ],
        )


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


def _migrate(
    cfg: Config,
    a: ReleaseArgs,
    rec: Any,
    started: dict[str, Any],  # noqa: ARG001
) -> dict[str, Any]:
    from pgferry.commands import migrate_info, migrate_run

    before = migrate_info.status(cfg, a.env).current
    res = migrate_run.up(cfg, migrate_run.RunOptions(env=a.env, yes=True), progress=rec)
    return {
        "version_before": before,
        "current_version": res.current_version,
        "applied": [f.to_dict() for f in res.applied],
    }


def _sync(cfg: Config, a: ReleaseArgs, rec: Any, started: dict[str, Any]) -> dict[str, Any]:
    from pgferry.commands import sync

    run_ids = started["run_ids"]
    res = sync.sync(
        cfg,
        sync.SyncOptions(
            a.source,
            a.env,
            "incremental",
            release_tables(cfg, a),
            yes=True,
            run_id=run_ids[-1],
        ),
        progress=rec,
    )
    out = {
        "run_id": res.run_id,
        "run_ids": run_ids,
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
    from pgferry.commands import migrate_run
    from pgferry.migrate import files

    applied = done.get("applied") or []
    if not applied:
        return {"action": "none", "why": "no migration was applied"}
    ms = files.scan(cfg.migrations_dir)
    undoable = {str(v) for v in ms.undo}
    missing = [f["script"] for f in applied if str(f.get("version")) not in undoable]
    if missing:
        return {
            "action": "manual",
            "why": f"no U file for {', '.join(missing)}",
            "restore": f"pgferry backup restore {backup_id} --env {a.env} --yes",
        }
    to = done.get("version_before")
    res = migrate_run.undo(cfg, migrate_run.RunOptions(env=a.env, yes=True, to=to or "0"))
    return {"action": "migrate undo", "to": to, "current_version": res.current_version}


def _run_ids(done: dict[str, Any]) -> list[str]:
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

    ids = _run_ids(done)
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


def _begin(name: str, before: dict[str, Any]) -> dict[str, Any]:
    """What a step records as it starts: the sync its run id, chosen now (after the run
    ids of its earlier attempts, whose worker died), so that whatever it committed can
    be reverted even when it raises."""
    if name != "sync":
        return {}
    from pgferry.sync.engine import new_run_id

    return {"run_ids": [*_run_ids(before), new_run_id()]}


def execute(cfg: Config, ctl: Control, run: runs.ServiceRun, a: Args, rec: Any) -> Outcome:
    """Run the saga of ``run`` from where it stands (see the module docstring)."""
    assert isinstance(a, ReleaseArgs)
    steps = _steps(ctl, run.id)
    failed: str | None = next((n for n in STEPS if steps[n]["state"] == "failed"), None)
    error: str | None = steps[failed]["result"].get("error") if failed else None
    for name in STEPS if failed is None else ():
        if steps[name]["state"] == "done":
            rec.say(f"{name}: done before, not repeated", step=name, state="done")
            continue
        started = _begin(name, steps[name]["result"] or {})
        _set(ctl, run.id, name, "running", result=started)
        rec.say(f"{name}: started", step=name, state="running")
        try:
            result = RUN[name](cfg, a, rec, started)
        except Exception as e:  # noqa: BLE001 - a step that raised failed: compensate
            error = f"{name}: {error_message(e)}"
            details = e.details if isinstance(e, PgferryError) else {}
            _set(ctl, run.id, name, "failed", result={**started, **details, "error": error})
            rec.say(error, step=name, state="failed")
            failed = name
            break
        _set(ctl, run.id, name, "done", result=result)
        steps[name] = {**steps[name], "state": "done", "result": result}
        rec.say(f"{name}: done", step=name, state="done")
    stopped = _compensate(cfg, ctl, run, a, rec, failed) if failed is not None else None
    if stopped is not None:
        error = f"{error}; {stopped}"
    final = _steps(ctl, run.id)
    report = [
        {
            "step": n,
            "state": final[n]["state"],
            "result": final[n]["result"],
            "compensation": final[n]["compensation"],
        }
        for n in STEPS
    ]
    return Outcome(
        3 if failed else 0,
        {
            "ok": failed is None,
            "failed_step": failed,
            # every compensation finished (None: nothing failed, nothing to compensate)
            "compensated": None if failed is None else stopped is None,
            "steps": report,
        },
        error,
    )


def _wrote(st: dict[str, Any]) -> bool:
    """May a failed step have left writes behind? A sync that started may have: the units
    it committed before it failed or raised stay (its undo reverts what its run ids hold)."""
    return bool(_run_ids(st["result"] or {}))


def _compensate(
    cfg: Config, ctl: Control, run: runs.ServiceRun, a: ReleaseArgs, rec: Any, failed: str
) -> str | None:
    """Undo the steps up to ``failed``, newest first; None when every undo finished, else
    the sentence that says where it stopped and the way back."""
    steps = _steps(ctl, run.id)
    backup_id = (steps["backup"]["result"] or {}).get("backup")
    for name in reversed(STEPS[: STEPS.index(failed) + 1]):
        st = steps[name]
        if st["compensation"] is not None:
            if st["compensation"]["action"] in ("manual", "failed"):
                return _stopped(name, st["compensation"])  # stopped there before
            continue  # compensated before the worker died
        # the failed step itself is undone too where it wrote (it keeps its state
        # "failed": a resumed run finds the failure by it)
        state = "failed" if name == failed else "compensated"
        if st["state"] != "done" and not (name == failed and _wrote(st)):
            continue
        undo = UNDO.get(name)
        if undo is None:
            comp: dict[str, Any] = {"action": "none", "why": "changes nothing"}
        else:
            rec.say(f"{name}: compensating", step=name, state="compensating")
            try:
                comp = undo(cfg, a, st["result"] or {}, backup_id)
            except PgferryError as e:
                comp = {
                    "action": "failed",
                    "error": redact(e.message),
                    "restore": f"pgferry backup restore {backup_id} --env {a.env} --yes",
                }
        _set(ctl, run.id, name, state, compensation=comp)
        rec.say(f"{name}: compensation {comp['action']}", step=name, state=state)
        if comp["action"] in ("manual", "failed"):
            rec.say(
                f"stopped: undo by hand from backup {backup_id}: {comp.get('restore')}",
                step=name,
                state="stopped",
            )
            return _stopped(name, comp)
    return None


def _stopped(name: str, comp: dict[str, Any]) -> str:
    """Where the compensation stopped, and the way back (the rest of one sentence): the
    undo's own advice is left out here, it stays in the step's compensation."""
    why = str(comp.get("why") or comp.get("error") or "it has no undo")
    why = why.split("; ")[0].split(". ")[0]
    return (
        f"the compensation could not undo {name} ({why}) and stopped there: restore the "
        f"pre-release backup with `{comp.get('restore')}`"
    )

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
ended with dead letters or a failed table, or raised; a migration the files it applied
before the one that failed, each in its own transaction: it is undone first; it stays
``failed``). What a step records as it starts (the sync's run id, the target's version
before the migration) is what its undo goes by when it did not finish
(:mod:`pgferry.jobs.saga_steps` has the steps and their undos):

- ``sync``: ``sync revert`` of each of its attempts, newest first. The saga chose each
  attempt's run id before that sync started and kept it in the step, so a sync that
  raised, or whose worker died, is known by its run id all the same; the before-images
  the target holds of those runs are what they committed (on a target that keeps them,
  they are written in the rows' own transaction). A target that keeps none while the
  sync may have written, or a revert that refuses (a row changed since), stops the saga;
- ``migrate``: ``migrate undo`` back to the version before, when every applied file
  has its U file; else the saga stops (a missing U file, or the undo refused);
- ``backup``, ``verify``, ``health`` change nothing: nothing to undo (the backup stays,
  it is the way back).

``verify`` fails on any difference; ``health`` fails on ``critical`` only (degraded is
reported, and does not undo a release). The run ends ``failed`` when a step failed
(each step's outcome and compensation in its result; ``compensated`` says whether every
compensation finished), ``succeeded`` otherwise. A compensation that stopped leaves the
rest as it stands: the run's error says, in one sentence, which step it could not undo
and the pre-release backup to restore.

A cancel stops the saga before a step (:meth:`Recorder.cancel_asked`) or inside one (at
the step's events, as it stops any run), never at the saga's own lines or in its
compensations (:meth:`Recorder.cancel_held`). The step it stopped is ``failed``
(``cancelled`` in its result) and compensated as above; the run ends ``cancelled``, its
result saying ``cancelled: true``. A release cancelled while no worker carried it (its
worker died: queued again, or sent back for an approval and queued by the cancel) is
taken on only to compensate: no step runs again, and the step that was running when its
worker died is undone by what it recorded as it started (:func:`begun`).
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from pgferry.config import Config
from pgferry.errors import PgferryError
from pgferry.jobs import runs
from pgferry.jobs.control import Control
from pgferry.jobs.operations import Args, Outcome, ReleaseArgs
from pgferry.jobs.recorder import Recorder, RunCancelled
from pgferry.jobs.saga_steps import RUN, UNDO, run_ids
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


def begun(ctl: Control, run: runs.ServiceRun) -> bool:
    """Is ``run`` a release whose saga began (a step of it ran, or was compensated)? A
    cancel then stops it and undoes what its steps did; it does not just end it."""
    return run.kind == "release" and any(s != "pending" for s in states(ctl, run.id).values())


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


def _begin(cfg: Config, a: ReleaseArgs, name: str, before: dict[str, Any]) -> dict[str, Any]:
    """What a step records as it starts, so that whatever it committed can be undone even
    when it raises or is cancelled part way: the sync its run id, chosen now (after the
    run ids of its earlier attempts, whose worker died); the migration the target's
    version (its first attempt's, when its worker died)."""
    if name == "migrate":
        if "version_before" in before:
            return {"version_before": before["version_before"]}
        from pgferry.commands import migrate_info

        return {"version_before": migrate_info.status(cfg, a.env).current}
    if name != "sync":
        return {}
    from pgferry.sync.engine import new_run_id

    return {"run_ids": [*run_ids(before), new_run_id()]}


def execute(cfg: Config, ctl: Control, run: runs.ServiceRun, a: Args, rec: Recorder) -> Outcome:
    """Run the saga of ``run`` from where it stands (see the module docstring)."""
    assert isinstance(a, ReleaseArgs)
    # the saga's own lines never stop it: a cancel stops it before a step (asked there)
    # or inside one (at the step's events), never in its compensations
    with rec.cancel_held():
        return _execute(cfg, ctl, run, a, rec)


def _execute(
    cfg: Config, ctl: Control, run: runs.ServiceRun, a: ReleaseArgs, rec: Recorder
) -> Outcome:
    steps = _steps(ctl, run.id)
    failed: str | None = next((n for n in STEPS if steps[n]["state"] == "failed"), None)
    error: str | None = steps[failed]["result"].get("error") if failed else None
    cancelled = bool(failed and steps[failed]["result"].get("cancelled"))
    for name in STEPS if failed is None else ():
        if steps[name]["state"] == "done":
            rec.say(f"{name}: done before, not repeated", step=name, state="done")
            continue
        before = steps[name]["result"] or {}
        if rec.cancel_asked():
            # not started, or running when its worker died: what it recorded as it started
            # (a sync's run ids, a migration's version) is kept for its undo
            how = "finished" if steps[name]["state"] == "running" else "started"
            error = _fail(ctl, run.id, rec, name, before, f"{name}: cancelled before it {how}")
            failed, cancelled = name, True
            break
        started: dict[str, Any] = {}
        try:
            started = _begin(cfg, a, name, before)
            _set(ctl, run.id, name, "running", result=started)
            rec.say(f"{name}: started", step=name, state="running")
            with rec.cancel_held(False):
                result = RUN[name](cfg, a, rec, started)
        except RunCancelled:
            error = _fail(ctl, run.id, rec, name, started, f"{name}: cancelled")
            failed, cancelled = name, True
            break
        except Exception as e:  # noqa: BLE001 - a step that raised failed: compensate
            details = e.details if isinstance(e, PgferryError) else {}
            error = f"{name}: {error_message(e)}"
            _fail(ctl, run.id, rec, name, {**started, **details}, error, cancelled=False)
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
            # the step a cancel stopped (before it, or inside it) rather than an error
            "cancelled": cancelled,
            # every compensation finished (None: nothing failed, nothing to compensate)
            "compensated": None if failed is None else stopped is None,
            "steps": report,
        },
        error,
        cancelled=cancelled,
    )


def _fail(
    ctl: Control,
    run_id: str,
    rec: Recorder,
    name: str,
    recorded: dict[str, Any],
    error: str,
    *,
    cancelled: bool = True,
) -> str:
    """Step ``name`` failed (or a cancel stopped it): kept ``failed`` with what it recorded
    and ``error`` (``cancelled: true`` too when a cancel stopped it), and said; ``error``."""
    result = {**recorded, "error": error, **({"cancelled": True} if cancelled else {})}
    _set(ctl, run_id, name, "failed", result=result)
    rec.say(error, step=name, state="cancelled" if cancelled else "failed")
    return error


def _wrote(st: dict[str, Any]) -> bool:
    """May a failed step have left writes behind? A sync that started may have: the units
    it committed before it failed or raised stay (its undo reverts what its run ids hold);
    so may a migration that started: the files it applied before it failed stay (each is
    its own transaction; its undo goes back to the version it started at)."""
    result = st["result"] or {}
    return bool(run_ids(result)) or "version_before" in result


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

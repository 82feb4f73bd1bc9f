"""What a person does to a run once it was asked for, for every front end: reject it,
cancel it, retry it (submitting and approving: :mod:`pgferry.jobs.service`).

Contract:

- :func:`reject` needs a reason, and a run that waits for an approval;
- :func:`cancel` ends a run that has not started and asks a running one to stop at its
  next event. A release whose saga began is never ended here: it is asked (and queued,
  when it waited for an approval), and the worker that takes it on undoes what its steps
  did before it ends ``cancelled`` (:mod:`pgferry.jobs.saga`);
- :func:`retry` queues a failed or cancelled run again (the dead letters).

Each is a row in the control database's journal, with who and from where; a refused
cancel or retry (409) is a row with outcome ``refused``.
"""

from __future__ import annotations

from pgferry.errors import BadInput
from pgferry.jobs import queue, runner, runs, saga
from pgferry.jobs.control import Control
from pgferry.jobs.service import Caller, Conflict, audit, get_run, journal_refusal


def reject(ctl: Control, run_id: str, caller: Caller, reason: str) -> runs.ServiceRun:
    if not reason.strip():
        raise BadInput("a rejection needs a reason", field="reason")
    run = get_run(ctl, run_id)
    done = runs.update(
        ctl,
        run_id,
        expect=["awaiting_approval"],
        state="rejected",
        decided_reason=reason,
        approved_by=None,
        finished_at="now()",
    )
    if done is None:
        raise Conflict(f"run {run_id} is {run.state}, not awaiting approval", state=run.state)
    audit(ctl, "reject", caller, details={"run": run_id, "reason": reason})
    runner.announce(ctl, run_id, f"rejected by {caller.name}: {reason}", "approval", "rejected")
    runs.add_events(ctl, run_id, [{"type": "error", "state": "rejected", "error": reason}])
    return done


def cancel(ctl: Control, run_id: str, caller: Caller) -> runs.ServiceRun:
    """Cancel a run that has not started; ask a running one to stop (its next event)."""
    run = get_run(ctl, run_id)
    if run.final:
        ended = Conflict(f"run {run_id} already ended ({run.state})", state=run.state)
        journal_refusal(ctl, caller, run_id, ended, "cancel")
        raise ended
    if saga.begun(ctl, run):
        return _cancel_saga(ctl, run, caller)
    done = runs.update(
        ctl,
        run_id,
        expect=["awaiting_approval", "queued"],
        state="cancelled",
        cancel_requested=True,
        error=f"cancelled by {caller.name}",
        finished_at="now()",
    )
    if done is not None:
        runs.add_events(
            ctl,
            run_id,
            [{"type": "error", "state": "cancelled", "error": f"cancelled by {caller.name}"}],
        )
        audit(ctl, "cancel", caller, details={"run": run_id, "state": run.state})
        return done
    asked = runs.update(ctl, run_id, cancel_requested=True)
    runner.announce(
        ctl, run_id, f"cancel asked by {caller.name}: stops at its next event", "cancel", "running"
    )
    assert asked is not None
    audit(ctl, "cancel", caller, details={"run": run_id, "state": asked.state, "asked": True})
    return asked


def _cancel_saga(ctl: Control, run: runs.ServiceRun, caller: Caller) -> runs.ServiceRun:
    """Cancel a release whose saga began: it is not ended here (queued again after its
    worker died, or sent back for approval then) but asked, and queued when it waited for
    an approval: the worker that takes it on undoes what its steps did (it needs no
    approval to undo)."""
    asked = runs.update(
        ctl, run.id, expect=["awaiting_approval"], state="queued", cancel_requested=True
    )
    if asked is not None:
        queue.defer(ctl, asked)
    else:
        asked = runs.update(ctl, run.id, cancel_requested=True)
    assert asked is not None
    said = f"cancel asked by {caller.name}: it undoes what its steps did"
    runner.announce(ctl, run.id, said, "cancel", asked.state)
    audit(ctl, "cancel", caller, details={"run": run.id, "state": run.state, "asked": True})
    return asked


def retry(ctl: Control, run_id: str, caller: Caller) -> runs.ServiceRun:
    """Queue a failed or cancelled run again (a dead letter)."""
    run = get_run(ctl, run_id)
    done = runs.update(
        ctl,
        run_id,
        expect=["failed", "cancelled"],
        state="queued",
        error=None,
        exit_code=None,
        cancel_requested=False,
        finished_at=None,
    )
    if done is None:
        not_ended = Conflict(
            f"run {run_id} is {run.state}: only a failed or cancelled run is retried",
            state=run.state,
        )
        journal_refusal(ctl, caller, run_id, not_ended, "retry")
        raise not_ended
    audit(ctl, "retry", caller, details={"run": run_id, "state": run.state})
    runner.announce(ctl, run_id, f"retried by {caller.name}", "retry", "queued")
    queue.defer(ctl, done)
    return runs.get(ctl, run_id) or done

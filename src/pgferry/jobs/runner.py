"""Execute one run: the body of every job, whichever worker picks it up.

Contract: :func:`execute` takes a run id and carries the run to a final state, holding
its claim (:mod:`pgferry.jobs.claim`; one another process carries raises
:class:`~pgferry.jobs.claim.RunElsewhere` and is left alone):

1. a run already final, or cancelled while queued (also in the moment between its being
   read and started), is left as it is (a job delivered twice does nothing twice);
2. a run that writes to a protected environment is judged again by the policy
   (:func:`pgferry.policy.decide`, rule ``approval``) against its plan as it is *now*:
   a plan that changed since the approval sends the run back to ``awaiting_approval``
   with the new plan (it does not start); a schedule's run is approved by the config;
   a release resumed after its worker died is judged without its own progress (the
   migrations its saga applied) and not at all while it compensates (it only undoes), a
   migration run by whether what is left is the end of the approved plan;
3. the environment's circuit breaker is asked (:mod:`pgferry.jobs.breaker`), then the
   operation runs (:mod:`pgferry.jobs.operations`, a release: :mod:`pgferry.jobs.saga`)
   retrying transient failures (the database unreachable) with exponential backoff and
   jitter (tenacity), each failure counted by the breaker;
4. its events are stored with the run as they come (:class:`Recorder`; those that say
   how far it is carry ``percent``, :mod:`pgferry.jobs.progress`), ending with
   ``complete`` or ``error``; the state, exit code, result and error are written last.

A cancel (``cancel_requested``) interrupts the operation at its next progress event,
as Ctrl-C does on the command line: the transaction in flight rolls back, the
journal says interrupted. A release cancelled part way undoes its steps first, as when
one fails (:mod:`pgferry.jobs.saga`), and ends ``cancelled`` with its saga's report;
resumed after its worker died, it carries those undos on.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from pgferry.config import Config
from pgferry.errors import PgferryError, Unreachable
from pgferry.events import Notice, Subscriber
from pgferry.jobs import breaker, claim, runs, saga
from pgferry.jobs.control import Control
from pgferry.jobs.operations import KINDS, Outcome, needs_approval
from pgferry.jobs.recorder import Recorder, RunCancelled, RunStep
from pgferry.journal import Outcome as Outcome_
from pgferry.pg.errors import error_message
from pgferry.redaction import redact


def _transient(e: BaseException) -> bool:
    return isinstance(e, Unreachable) and not isinstance(e, breaker.CircuitOpen)


def with_retries(cfg: Config, ctl: Control, env: str, rec: Recorder, fn: Any) -> Outcome:
    """``fn()`` with the breaker asked first and transient failures retried."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0
        rec.say(
            f"attempt {state.attempt_number} failed ({redact(str(exc))}); "
            f"trying again in {wait:.1f} s",
            step="retry",
            state="retrying",
        )

    def attempt() -> Outcome:
        breaker.check(cfg, ctl, env)
        try:
            out: Outcome = fn()
        except Unreachable as e:
            if not isinstance(e, breaker.CircuitOpen):
                breaker.record(cfg, ctl, env, ok=False, error=e.message)
            raise
        breaker.record(cfg, ctl, env, ok=True)
        return out

    retrying = Retrying(
        retry=retry_if_exception(_transient),
        wait=wait_random_exponential(
            multiplier=0.5, max=cfg.service.retry_max_wait.total_seconds()
        ),
        stop=stop_after_attempt(cfg.service.retries + 1),
        reraise=True,
        before_sleep=before_sleep,
    )
    return retrying(attempt)


def _needs_new_approval(cfg: Config, ctl: Control, run: runs.ServiceRun, rec: Recorder) -> bool:
    """Judge the approval of a protected write against the plan as it is now."""
    from pgferry import policy

    op = KINDS[run.kind]
    a = op.args.model_validate(run.arguments)
    # consent given elsewhere: a schedule in the config, `pgferry release --yes`; a release
    # cancelled part way (the only run that gets here cancelled) only undoes what it did
    if run.schedule is not None or run.requested_from == "cli" or run.cancel_requested:
        return False
    if not needs_approval(cfg, op, a) or op.plan is None:
        return False
    plan = op.plan(cfg, a)
    hashed = plan.get("hashed", plan)
    if run.approved_by and run.attempts > 0:  # approved, resumed after its worker died
        if run.kind == "release":
            hashed = _release_resumed(ctl, run, hashed)
            if hashed is None:
                return False
        elif run.kind in ("migrate_up", "migrate_undo"):
            hashed = _migrate_resumed(run, hashed)
    now_hash = runs.digest(hashed)
    approval = policy.Approval(run.approved_by, run.plan_hash or "") if run.approved_by else None
    req = policy.WriteRequest(
        op.command,
        op.env(a),
        True,
        yes=True,
        requires_approval=True,
        approval=approval,
        plan_hash=now_hash,
        requested_by=run.requested_by,
    )
    d = policy.decide(cfg, req, datetime.now(UTC), ("approval",))
    if d.verdict is policy.Verdict.NEEDS_APPROVAL:
        runs.update(
            ctl,
            run.id,
            expect=["queued", "running"],  # a run cancelled meanwhile stays cancelled
            state="awaiting_approval",
            plan=plan,
            plan_hash=now_hash,
            approved_by=None,
            approved_at=None,
        )
        rec.say(d.message, step="approval", state="awaiting_approval")
        return True
    if (err := d.error()) is not None:
        raise err
    return False


def _release_resumed(
    ctl: Control, run: runs.ServiceRun, hashed: dict[str, Any]
) -> dict[str, Any] | None:
    """What a release resumed after its worker died is judged by: its own progress is no
    change of plan. None when it is compensating (it only undoes what the approval
    covered); with its migrate step done, the migrations it applied stand for the part of
    the plan they were (planned now, they are gone from it; a file added since is not
    applied by this run: the step is not repeated)."""
    done = saga.states(ctl, run.id)
    if "failed" in done.values():
        return None
    approved = (run.plan or {}).get("hashed") or {}
    if done.get("migrate") == "done" and "migrate" in approved:
        return {**hashed, "migrate": approved["migrate"]}
    return hashed


def _migrate_resumed(run: runs.ServiceRun, hashed: Any) -> Any:
    """What a migration run resumed after its worker died is judged by: the files its first
    attempt applied are gone from a plan made now; when what is left is the end of the
    approved plan, exactly, the approval stands (a file added or changed since is a change
    of plan)."""
    approved = (run.plan or {}).get("hashed")
    if not isinstance(approved, list) or not isinstance(hashed, list):
        return hashed
    if len(hashed) <= len(approved) and approved[len(approved) - len(hashed) :] == hashed:
        return approved
    return hashed


def execute(
    cfg: Config, ctl: Control, run_id: str, *, also: Subscriber | None = None
) -> runs.ServiceRun | None:
    """Carry run ``run_id`` to its end (see the module docstring); the run as it ended.
    ``also`` gets every event too (``pgferry release`` prints them)."""
    run = runs.get(ctl, run_id)
    if run is None or run.final or run.state == "awaiting_approval":
        return run
    with claim.claim(ctl, run_id):  # RunElsewhere: another process carries it now
        return _execute(cfg, ctl, run_id, also)


def _execute(
    cfg: Config, ctl: Control, run_id: str, also: Subscriber | None
) -> runs.ServiceRun | None:
    run = runs.get(ctl, run_id)  # again, held: it may have moved on meanwhile
    if run is None or run.final or run.state == "awaiting_approval":
        return run
    rec = Recorder(ctl, run_id, also, cfg=cfg).start()
    # a release cancelled part way, whose worker died, still undoes what its steps did
    if run.cancel_requested and not saga.begun(ctl, run):
        return finish(ctl, run_id, rec, "cancelled", None, None, "cancelled before it started")
    try:
        if _needs_new_approval(cfg, ctl, run, rec):
            rec.stop()
            rec.flush()
            return runs.get(ctl, run_id)
    except RunCancelled:
        return finish(ctl, run_id, rec, "cancelled", 3, None, "cancelled")
    except PgferryError as e:
        return finish(ctl, run_id, rec, "failed", e.exit_code, None, e.message)
    # only a run still to do: one cancelled since it was read stays cancelled
    started = runs.update(
        ctl,
        run_id,
        expect=["queued", "running"],
        state="running",
        attempts=run.attempts + 1,
        started_at="now()",
    )
    if started is None:
        rec.stop()
        rec.flush()
        return runs.get(ctl, run_id)
    try:
        # a release's saga says itself where a cancel stops it (before a step, or inside one)
        with rec.cancel_held(run.kind == "release"):
            rec.say(f"{run.kind} started (attempt {started.attempts})", step="run", state="running")
        out = _operate(cfg, ctl, started, rec)
    except RunCancelled:
        return finish(ctl, run_id, rec, "cancelled", 3, None, "cancelled")
    except PgferryError as e:
        return finish(ctl, run_id, rec, "failed", e.exit_code, e.details or None, e.message)
    except Exception as e:  # noqa: BLE001 - a run ends with its error recorded, always
        return finish(ctl, run_id, rec, "failed", 3, None, error_message(e))
    state = "cancelled" if out.cancelled else runs.state_of(out.exit_code)
    return finish(ctl, run_id, rec, state, out.exit_code, out.result, out.error)


def _operate(cfg: Config, ctl: Control, run: runs.ServiceRun, rec: Recorder) -> Outcome:
    op = KINDS[run.kind]
    a = op.args.model_validate(run.arguments)
    if run.kind == "release":
        return saga.execute(cfg, ctl, run, a, rec)
    return with_retries(cfg, ctl, op.env(a), rec, lambda: op.run(cfg, a, rec))


def finish(
    ctl: Control,
    run_id: str,
    rec: Recorder,
    state: runs.State,
    exit_code: int | None,
    result: dict[str, Any] | None,
    error: str | None,
) -> runs.ServiceRun | None:
    """The run's last event (``complete`` or ``error``) and its final state; then one
    ``service run`` row in the environment's journal (:func:`journal_run`)."""
    rec.stop()
    kind = "complete" if state in ("succeeded", "problem") else "error"
    rec.add(
        {"type": kind, "state": state, "exit_code": exit_code, "error": error, "at": time.time()}
    )
    rec.flush()
    run = runs.update(
        ctl,
        run_id,
        state=state,
        exit_code=exit_code,
        result=result,
        error=error,
        finished_at="now()",
    )
    if run is not None and rec.cfg is not None:
        journal_run(rec.cfg, run)
    return run


_JOURNAL_OUTCOME: dict[str, Outcome_] = {
    "succeeded": "ok",
    "problem": "problem",
    "failed": "failed",
    "cancelled": "failed",
    "rejected": "refused",
}


def journal_run(cfg: Config, run: runs.ServiceRun) -> None:
    """Who asked for the run and who approved it, in the journal of the environment it
    acted on (where that journal exists), beside the command's own row: the command's row
    says what changed, this one says on whose word. Never fails the run."""
    import psycopg

    from pgferry import journal
    from pgferry.pg.connect import resolve_env

    try:
        tgt = resolve_env(cfg, run.env)
    except PgferryError:
        return
    outcome = _JOURNAL_OUTCOME.get(run.state, "failed")
    if run.state == "failed" and run.exit_code == 4:
        outcome = "refused"
    try:
        journal.append(
            tgt,
            "service run",
            outcome=outcome,
            exit_code=run.exit_code or 0,
            create=False,
            retry_for=1,
            duration_ms=int(run.duration_s * 1000) if run.duration_s is not None else None,
            arguments={
                "run": run.id,
                "kind": run.kind,
                "arguments": run.arguments,
                "requested_by": run.requested_by,
                "requested_from": run.requested_from,
                "approved_by": run.approved_by,
                "plan_hash": run.plan_hash,
                "schedule": run.schedule,
            },
            details={"state": run.state, "attempts": run.attempts},
            error=run.error,
        )
    except (PgferryError, psycopg.Error) as e:
        journal.warn(tgt, e)


def announce(ctl: Control, run_id: str, message: str, step: str, state: str) -> None:
    """One event from outside the run's execution (queued, approved, resumed ...)."""
    runs.add_events(ctl, run_id, [RunStep(message, step, state).to_dict()])


__all__ = ["Notice", "Recorder", "RunCancelled", "RunStep", "announce", "execute", "finish"]

"""What the service does with runs, for every front end: submit and approve (reject,
cancel and retry: :mod:`pgferry.jobs.lifecycle`). The HTTP routes and ``pgferry release``
call these; they hold no logic of their own.

Contract:

- :func:`submit` validates the arguments (:mod:`pgferry.jobs.operations`; unknown
  environments are :class:`~pgferry.errors.ConfigError` naming the field), honours the
  Idempotency-Key (:func:`pgferry.jobs.runs.create`; one beginning ``schedule:`` is the
  schedules' own, refused), and asks the policy: a write (to
  any environment) is judged by its blackout window now (a refusal is journaled in the
  environment and raised: exit 4, HTTP 403); a write to a protected environment then —
  the plan made and hashed — by the ``approval`` rule, which sends it to
  ``awaiting_approval``. Anything else is
  queued at once (:func:`pgferry.jobs.queue.defer`).
- :func:`approve` binds the approval to the plan hash: the plan is made again; the
  person who asked cannot approve (:class:`~pgferry.errors.Refused`, 403); a plan that
  changed since it was shown (the stored hash is not the plan's now) is
  :class:`PlanChanged` (409) and the run keeps waiting with the new plan (when another
  approval came first, :class:`Conflict`: the new plan is not stored under that approval,
  the runner sends the run back for one); a
  ``plan_hash`` the approver sends that is not the hash of the plan shown, which has not
  changed (a typo, another run's hash), is :class:`PlanHashMismatch` (409) and the run
  keeps waiting with its plan as it was.
- rejecting, cancelling and retrying a run: :mod:`pgferry.jobs.lifecycle`.

Approvals, rejections and token changes are journaled in the control database's
journal, with who and from where.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgferry import policy
from pgferry.commands import base
from pgferry.config import Config
from pgferry.errors import BadInput, ConfigError, PgferryError, Refused
from pgferry.jobs import queue, runner, runs
from pgferry.jobs.control import Control
from pgferry.jobs.operations import KINDS, Args, RunKind, needs_approval


class PlanChanged(PgferryError):
    """The plan is not the one approved or shown (HTTP 409): it needs a new approval."""

    exit_code = 4
    http_status = 409


class PlanHashMismatch(PgferryError):
    """The ``plan_hash`` an approver sent is not the hash of the run's plan, which has not
    changed since it was shown (HTTP 409): check the hash or look at the plan again."""

    exit_code = 4
    http_status = 409


class Conflict(PgferryError):
    """The run is not in a state that allows this (HTTP 409)."""

    exit_code = 2
    http_status = 409


class NotFound(BadInput):
    http_status = 404


@dataclass(frozen=True)
class Caller:
    """Who asks: a token's name and role, and the address the request came from."""

    name: str
    role: str
    address: str | None = None


def audit(
    ctl: Control,
    command: str,
    caller: Caller,
    *,
    outcome: str = "ok",
    details: Mapping[str, Any] | None = None,
    exit_code: int = 0,
) -> None:
    """One row in the control journal (who, from where, what)."""
    from pgferry import journal

    try:
        journal.append(
            ctl.target,
            command,
            outcome=outcome,  # type: ignore[arg-type]
            exit_code=exit_code,
            arguments={"caller": caller.name, "role": caller.role, "address": caller.address},
            details=dict(details or {}),
            retry_for=1,
        )
    except PgferryError as e:
        journal.warn(ctl.target, e)


def validate(cfg: Config, kind: str, arguments: Mapping[str, Any]) -> tuple[RunKind, Args]:
    """The operation and its arguments; pydantic's ValidationError, or ConfigError naming
    the field that names an unknown environment."""
    op = KINDS.get(kind)
    if op is None:
        raise ConfigError(f"unknown run kind {kind!r} (kinds: {', '.join(KINDS)})", field="kind")
    a = op.args.model_validate(dict(arguments))
    for fld, name in a.named_envs().items():
        if name not in cfg.environments:
            known = ", ".join(sorted(cfg.environments)) or "none"
            raise ConfigError(
                f"{fld}: unknown environment {name!r} (configured: {known})", field=fld
            )
    return op, a


def plan_of(cfg: Config, op: RunKind, a: Args) -> tuple[dict[str, Any], str]:
    assert op.plan is not None
    plan = op.plan(cfg, a)
    return plan, runs.digest(plan.get("hashed", plan))


def submit(
    cfg: Config,
    ctl: Control,
    kind: str,
    arguments: Mapping[str, Any],
    caller: Caller,
    *,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> tuple[runs.ServiceRun, bool]:
    """Start a run (or find the one this Idempotency-Key started); (run, created)."""
    if idempotency_key and idempotency_key.startswith("schedule:"):
        # the schedules' own (pgferry.jobs.queue): taken first, a tick would find them used
        raise BadInput(
            f"Idempotency-Key {idempotency_key!r}: keys beginning 'schedule:' are the "
            "schedules' own; use another key",
            field="Idempotency-Key",
        )
    op, a = validate(cfg, kind, arguments)
    args = a.model_dump()
    request_hash = runs.digest([kind, args])
    if idempotency_key:
        old = runs.by_key(ctl, idempotency_key)
        if old is not None:  # the same key again: no new plan, no new run
            if old.request_hash != request_hash:
                raise runs.IdempotencyConflict(
                    f"Idempotency-Key {idempotency_key!r} was used for another request "
                    f"(run {old.id}); use a new key for a new request",
                    field="Idempotency-Key",
                    run=old.id,
                )
            return old, False
    env = op.env(a)
    state: runs.State = "queued"
    plan: dict[str, Any] | None = None
    plan_hash: str | None = None
    if op.writes(cfg, a):
        when = now or datetime.now(UTC)
        tgt = base.target(cfg, env)
        req = policy.WriteRequest(
            op.command,
            env,
            tgt.protected,
            yes=True,
            action=f"{kind} on {env} (via the service, by {caller.name})",
        )
        base.authorize(
            cfg,
            tgt,
            req,
            now=when,
            rules=("input", "blackout"),
            arguments={"run_kind": kind, "requested_by": caller.name},
        )
    if needs_approval(cfg, op, a):
        when = now or datetime.now(UTC)
        tgt = base.target(cfg, env)
        plan, plan_hash = plan_of(cfg, op, a)
        d = policy.decide(
            cfg,
            policy.WriteRequest(
                op.command,
                env,
                tgt.protected,
                yes=True,
                requires_approval=True,
                plan_hash=plan_hash,
                requested_by=caller.name,
            ),
            when,
            ("approval",),
        )
        if d.verdict is policy.Verdict.NEEDS_APPROVAL:
            state = "awaiting_approval"
    run, created = runs.create(
        ctl,
        kind=kind,
        env=env,
        arguments=args,
        requested_by=caller.name,
        requested_from=caller.address,
        state=state,
        plan=plan,
        plan_hash=plan_hash,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    if created:
        if state == "queued":
            runner.announce(ctl, run.id, f"queued by {caller.name}", "queue", "queued")
            queue.defer(ctl, run)
        else:
            runner.announce(
                ctl,
                run.id,
                f"{kind} on protected {env} waits for a second "
                f"person's approval (plan {plan_hash and plan_hash[:12]})",
                "approval",
                "awaiting_approval",
            )
    return runs.get(ctl, run.id) or run, created


def get_run(ctl: Control, run_id: str) -> runs.ServiceRun:
    """Run ``run_id`` (:class:`NotFound` when there is none)."""
    run = runs.get(ctl, run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}", field="id")
    return run


def journal_refusal(
    ctl: Control, caller: Caller, run_id: str, e: PgferryError, command: str = "approve"
) -> None:
    """A refused approval (cancel, retry) in the control journal, as a refusal of any other
    kind is."""
    audit(
        ctl,
        command,
        caller,
        outcome="refused",
        exit_code=e.exit_code,
        details={"run": run_id, "error": e.message},
    )


def approve(
    cfg: Config, ctl: Control, run_id: str, caller: Caller, *, plan_hash: str | None = None
) -> runs.ServiceRun:
    """Approve the run's plan (see the module docstring)."""
    run = get_run(ctl, run_id)
    if run.state != "awaiting_approval":
        raise Conflict(f"run {run_id} is {run.state}, not awaiting approval", state=run.state)
    op, a = validate(cfg, run.kind, run.arguments)
    seen = plan_hash or run.plan_hash or ""
    plan, now_hash = plan_of(cfg, op, a)
    d = policy.decide(
        cfg,
        policy.WriteRequest(
            op.command,
            run.env,
            True,
            yes=True,
            action=f"{run.kind} on {run.env}",
            requires_approval=True,
            approval=policy.Approval(caller.name, seen),
            plan_hash=now_hash,
            requested_by=run.requested_by,
        ),
        datetime.now(UTC),
        ("approval",),
    )
    if d.verdict is policy.Verdict.REFUSE:
        refusal = Refused(d.message, run=run_id)
        journal_refusal(ctl, caller, run_id, refusal)
        raise refusal
    if d.verdict is policy.Verdict.NEEDS_APPROVAL and run.plan_hash == now_hash:
        # the plan is the one shown: it is the approver's hash that is not its hash
        runner.announce(
            ctl,
            run_id,
            f"approval by {caller.name} refused: the plan_hash sent is not that of the "
            f"plan shown ({now_hash[:12]}), which has not changed",
            "approval",
            "awaiting_approval",
        )
        # whole hashes: a typo may be anywhere in them (what was sent, up to a hash's length)
        sent = seen if len(seen) <= len(now_hash) else seen[: len(now_hash)] + "..."
        mismatch = PlanHashMismatch(
            f"the plan_hash sent ({sent}) is not the hash of the plan of run {run_id} "
            f"({now_hash}), which has not changed since it was shown: check the hash, "
            "or look at the plan again and approve it with its plan_hash",
            plan_hash=now_hash,
            sent_plan_hash=seen,
        )
        journal_refusal(ctl, caller, run_id, mismatch)
        raise mismatch
    if d.verdict is policy.Verdict.NEEDS_APPROVAL or run.plan_hash != now_hash:
        # only while it waits: a run approved meanwhile keeps the hash its approver saw
        # (the runner sends it back for approval, the plan being another now)
        if (
            runs.update(ctl, run_id, expect=["awaiting_approval"], plan=plan, plan_hash=now_hash)
            is None
        ):
            now = get_run(ctl, run_id)
            raise Conflict(f"run {run_id} is {now.state}, not awaiting approval", state=now.state)
        runner.announce(
            ctl,
            run_id,
            f"approval by {caller.name} refused: the plan changed "
            f"(now {now_hash[:12]}); approve the new plan",
            "approval",
            "awaiting_approval",
        )
        changed = PlanChanged(
            f"the plan of run {run_id} changed since it was shown "
            f"(shown {(run.plan_hash or '')[:12]}, now {now_hash[:12]}): look at the new "
            "plan and approve it",
            plan_hash=now_hash,
            approved_plan_hash=seen,
        )
        journal_refusal(ctl, caller, run_id, changed)
        raise changed
    done = runs.update(
        ctl,
        run_id,
        expect=["awaiting_approval"],
        state="queued",
        approved_by=caller.name,
        approved_at="now()",
    )
    if done is None:
        raise Conflict(f"run {run_id} is no longer awaiting approval")
    audit(
        ctl,
        "approve",
        caller,
        details={"run": run_id, "plan_hash": now_hash, "requested_by": run.requested_by},
    )
    runner.announce(
        ctl, run_id, f"approved by {caller.name} (plan {now_hash[:12]})", "approval", "queued"
    )
    queue.defer(ctl, done)
    return runs.get(ctl, run_id) or done

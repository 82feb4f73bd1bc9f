"""One policy: may command C write to environment E now, with these flags and this plan?

Contract: :func:`decide` is pure — config, clock and a :class:`WriteRequest` in, a
:class:`Decision` out; no connection, no file, no journal (the command layer,
:mod:`pgferry.commands`, journals what it decides and asks the person when the
decision is :attr:`Verdict.CONFIRM`). Every writer asks it: ``migrate
up|undo|baseline|repair``, ``sync``, ``sync revert``, ``backup restore``.

The rules, in the order they are judged (the first that does not allow wins):

1. ``input``: ``--allow-unsafe`` and ``--override-blackout`` need a non-empty
   reason → :attr:`Verdict.BAD_INPUT` (exit 2).
2. ``blackout``: inside an active ``[[blackout]]`` window of the environment
   (:mod:`pgferry.windows`) → :attr:`Verdict.REFUSE` (exit 4, naming the
   window), unless overridden with a reason; then the decision carries the
   :attr:`Decision.window` it let through, for the journal. It is judged before
   ``protected``, so nobody is asked to confirm a write the window refuses; a
   request that would need ``--yes`` too is told so in the same refusal.
3. ``protected``: a protected environment (or, for a history rewrite such as
   ``migrate repair``, any environment) without ``--yes`` →
   :attr:`Verdict.CONFIRM`: a front end that can ask a person asks
   :attr:`Decision.prompt`; one that cannot refuses with :attr:`Decision.message`.
4. ``lint_gate``: error-level lint findings of the plan on a protected
   environment → :attr:`Verdict.REFUSE`, unless ``--allow-unsafe`` (with a
   reason): then allowed, the findings in :attr:`Decision.unsafe` for the journal.
   Judged only once the plan is known (:attr:`WriteRequest.lint_errors` is not None).
5. ``approval`` (the admin service's four-eyes rule, issue 14): a request marked
   :attr:`WriteRequest.requires_approval` (the service marks every run that writes to
   a protected environment; the command line never does) without an
   :attr:`WriteRequest.approval`, or with one for another plan than
   :attr:`WriteRequest.plan_hash` (the plan changed since it was approved) →
   :attr:`Verdict.NEEDS_APPROVAL`; an approval by the person who asked
   (:attr:`WriteRequest.requested_by`, whatever its case or surrounding blanks:
   :func:`same_person`) → :attr:`Verdict.REFUSE`.

A command that learns things in stages (the plan needs the database, which is
only read once the window allows it) judges a subset with ``rules=``: the
rules always keep the order above. :meth:`Decision.error` is the exception a
refusal or bad input becomes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pgferry.config import Blackout, Config
from pgferry.errors import BadInput, PgferryError, Refused
from pgferry.windows import active_window, describe

PolicyRule = Literal["input", "blackout", "protected", "lint_gate", "approval"]
RULES: tuple[PolicyRule, ...] = ("input", "blackout", "protected", "lint_gate", "approval")


class Verdict(StrEnum):
    ALLOW = "allow"
    #: allowed once a person confirms (the front end asks), else refused
    CONFIRM = "confirm"
    REFUSE = "refuse"
    BAD_INPUT = "bad_input"
    #: allowed once a second person approves (the admin service; issue 14)
    NEEDS_APPROVAL = "needs_approval"


@dataclass(frozen=True)
class GateFinding:
    """An error-level lint finding of the plan, as the gate judges it."""

    script: str
    line: int
    rule: str
    message: str
    #: the finding as ``--json`` and the journal show it
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Approval:
    """A second person's approval of a plan (the slot the admin service fills)."""

    approver: str
    plan_hash: str


@dataclass(frozen=True)
class WriteRequest:
    """What a command asks to do."""

    #: the command as the journal names it: ``migrate up``, ``sync``, ``backup restore``
    command: str
    env: str
    protected: bool
    #: how a refusal names what was asked (``sync full from dev into prod``); default command
    action: str = ""
    yes: bool = False
    override_blackout: bool = False
    #: --reason: why the blackout is overridden
    reason: str | None = None
    #: a rewrite of the migration history (``migrate repair``): needs --yes everywhere
    rewrites_history: bool = False
    allow_unsafe: bool = False
    unsafe_reason: str | None = None
    #: the plan's error-level lint findings; None: the plan is not known yet
    lint_errors: tuple[GateFinding, ...] | None = None
    requires_approval: bool = False
    approval: Approval | None = None
    #: the hash of the plan as it is now (the approval must be for this one)
    plan_hash: str | None = None
    #: who asked for the write (an approval must come from someone else)
    requested_by: str | None = None

    @property
    def what(self) -> str:
        return self.action or self.command


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    #: why, in one sentence for a person (empty when allowed)
    message: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    #: the question a front end asks for :attr:`Verdict.CONFIRM`
    prompt: str = ""
    #: the active blackout window an override let through (journal it)
    window: Blackout | None = None
    #: gate findings --allow-unsafe let through (journal them)
    unsafe: tuple[GateFinding, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    def error(self) -> PgferryError | None:
        """The exception a refusal (exit 4) or bad input (exit 2) becomes; None otherwise.

        A :attr:`Verdict.CONFIRM` nobody answered is a refusal too."""
        if self.verdict is Verdict.BAD_INPUT:
            return BadInput(self.message, **self.details)
        if self.verdict in (Verdict.REFUSE, Verdict.CONFIRM, Verdict.NEEDS_APPROVAL):
            return Refused(self.message, **self.details)
        return None

    @property
    def window_text(self) -> str | None:
        return describe(self.window) if self.window is not None else None


def _blank(text: str | None) -> bool:
    return not (text or "").strip()


def _input(req: WriteRequest) -> Decision | None:
    if req.allow_unsafe and _blank(req.unsafe_reason):
        return Decision(Verdict.BAD_INPUT, '--allow-unsafe needs --reason "why this is safe here"')
    if req.override_blackout and _blank(req.reason):
        return Decision(
            Verdict.BAD_INPUT, '--override-blackout needs --reason "why this cannot wait"'
        )
    return None


def _blackout(
    cfg: Config, req: WriteRequest, now: datetime
) -> tuple[Decision | None, Blackout | None]:
    w = active_window(cfg.blackout, req.env, now)
    if w is None:
        return None, None
    if req.override_blackout and not _blank(req.reason):
        return None, w
    # what the protected rule would ask next, said now: one refusal names all it takes
    yes = ""
    if not req.yes and req.protected:
        yes = f" and --yes ({req.env!r} is protected)"
    elif not req.yes and req.rewrites_history:
        yes = f" and --yes ({req.what} rewrites the migration history)"
    return Decision(
        Verdict.REFUSE,
        f"environment {req.env!r} is in a blackout window ({describe(w)}); "
        f'wait, or pass --override-blackout --reason "..."{yes}',
        {"env": req.env, "blackout": describe(w)},
    ), None


def _protected(req: WriteRequest) -> Decision | None:
    if req.yes:
        return None
    if req.protected:
        return Decision(
            Verdict.CONFIRM,
            f"environment {req.env!r} is protected: {req.what} needs --yes",
            {"env": req.env},
            prompt=f"{req.env} is protected. {req.what}?",
        )
    if req.rewrites_history:
        return Decision(
            Verdict.CONFIRM,
            f"{req.what} rewrites the migration history of {req.env!r}: run again with --yes",
            {"env": req.env},
            prompt=f"{req.what} in {req.env}?",
        )
    return None


def _lint_gate(req: WriteRequest) -> tuple[Decision | None, tuple[GateFinding, ...]]:
    errors = req.lint_errors or ()
    if not errors or not req.protected:
        return None, ()
    if req.allow_unsafe and not _blank(req.unsafe_reason):
        return None, errors
    first = "; ".join(f"{f.script}:{f.line} {f.rule}: {f.message}" for f in errors[:3])
    return Decision(
        Verdict.REFUSE,
        f"lint gate: {len(errors)} error finding(s) on protected {req.env}: {first}"
        + ("; ..." if len(errors) > 3 else "")
        + '. Fix them, or pass --allow-unsafe --reason "..."',
        {"findings": [dict(f.detail) for f in errors]},
    ), ()


def same_person(a: str, b: str) -> bool:
    """Whether two names (of tokens, OS users) are one person's: "Alice", "alice " and
    "alice" are."""
    return a.strip().casefold() == b.strip().casefold()


def _approval(req: WriteRequest) -> Decision | None:
    if not req.requires_approval:
        return None
    a = req.approval
    if a is None:
        return Decision(
            Verdict.NEEDS_APPROVAL,
            f"{req.what} on {req.env} needs a second person's approval",
            {"env": req.env, "plan_hash": req.plan_hash},
        )
    if req.requested_by is not None and same_person(a.approver, req.requested_by):
        return Decision(
            Verdict.REFUSE,
            f"{a.approver} asked for {req.what} and cannot approve it too: a second person must",
            {"env": req.env, "approver": a.approver},
        )
    if req.plan_hash is not None and a.plan_hash != req.plan_hash:
        return Decision(
            Verdict.NEEDS_APPROVAL,
            f"the plan of {req.what} on {req.env} changed since it was approved "
            f"(approved {a.plan_hash[:12]}, now {req.plan_hash[:12]}); "
            "it needs a new approval",
            {"env": req.env, "plan_hash": req.plan_hash, "approved_plan_hash": a.plan_hash},
        )
    return None


def decide(
    cfg: Config, req: WriteRequest, now: datetime, rules: Collection[str] = RULES
) -> Decision:
    """Judge ``req`` at ``now`` by ``rules`` (names of :data:`PolicyRule`; see the module
    docstring); pure."""
    unknown = set(rules) - set(RULES)
    if unknown:
        raise ValueError(f"no policy rule {', '.join(sorted(unknown))}")
    window: Blackout | None = None
    unsafe: tuple[GateFinding, ...] = ()
    found: Decision | None = None
    for rule in RULES:
        if rule not in rules:
            continue
        if rule == "input":
            found = _input(req)
        elif rule == "blackout":
            found, window = _blackout(cfg, req, now)
        elif rule == "protected":
            found = _protected(req)
        elif rule == "lint_gate":
            found, unsafe = _lint_gate(req)
        else:
            found = _approval(req)
        if found is not None:
            break
    if found is None:
        return Decision(Verdict.ALLOW, window=window, unsafe=unsafe)
    return Decision(found.verdict, found.message, found.details, found.prompt, window, unsafe)

"""What every command shares: the environment default, asking a person, applying policy.

Contract:

- :func:`pick_env` is the one default of every command that takes an
  environment: the one given; else the only one configured, else ``dev``;
  else :class:`~pgferry.errors.BadInput`. :func:`target` resolves it.
- A front end that can ask a person supplies a :data:`Confirm` callback; it
  gets a :class:`Question` and answers True to go on. Without one (``--json``,
  a pipe, the HTTP service) a decision that needs a confirmation is a refusal.
- :func:`authorize` asks :func:`pgferry.policy.decide` and does what the
  decision says, journaling it in the target (where its journal exists): the
  blackout override it let through (a ``blackout override`` row, once every rule it
  judged allows the write: an override refused for ``--yes`` is not journaled as
  one), a refusal (a ``refused`` row, exit 4) — then returns the decision, or raises.
- :func:`blackout_warning` is what a dry run says instead of a blackout refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgferry.errors import BadInput, PgferryError, Refused

if TYPE_CHECKING:  # imported where used: a command loads only what it needs
    from pgferry.config import Config
    from pgferry.pg.connect import Target
    from pgferry.policy import Decision, WriteRequest


@dataclass(frozen=True)
class Question:
    """What a front end asks a person before a command writes."""

    env: str
    #: the question itself: ``prod is protected. migrate up?``
    prompt: str
    #: what would change, for the front end to show first (``sync``: the dry run's result)
    preview: Any = None
    #: False: only show the preview (it did not complete); the answer is no
    ask: bool = True


Confirm = Callable[[Question], bool]


def now_or(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def pick_env(cfg: Config, env: str | None) -> str:
    """``env`` if given; else the only environment, else ``dev``; else BadInput."""
    if env:
        cfg.env(env)
        return env
    names = list(cfg.environments)
    if len(names) == 1:
        return names[0]
    if "dev" in cfg.environments:
        return "dev"
    raise BadInput(f"name an environment with --env (configured: {', '.join(names) or 'none'})")


def target(cfg: Config, env: str | None) -> Target:
    """The environment ``env`` (default: :func:`pick_env`), resolved."""
    from pgferry.pg.connect import resolve_env

    return resolve_env(cfg, pick_env(cfg, env))


def refuse(
    target: Target, command: str, error: PgferryError, arguments: Mapping[str, Any] | None = None
) -> PgferryError:
    """``error``, journaled in ``target`` where its journal exists (then raise it)."""
    from pgferry import journal

    journal.refused(target, command, error, arguments)
    return error


def _journal_override(
    target: Target, req: WriteRequest, decision: Decision, arguments: Mapping[str, Any] | None
) -> None:
    import psycopg

    from pgferry import journal

    try:
        journal.append(
            target,
            "blackout override",
            outcome="ok",
            create=False,
            arguments=arguments,
            details={"command": req.command, "window": decision.window_text, "reason": req.reason},
        )
    except (PgferryError, psycopg.Error) as e:  # the override stands all the same
        journal.warn(target, e)


def blackout_warning(cfg: Config, req: WriteRequest, now: datetime) -> str | None:
    """A dry run's first warning when ``req.env`` is in a blackout window; else None.

    A dry run changes nothing, so no window refuses it (``migrate up|undo --dry-run``,
    ``sync --dry-run``); it says instead that the real run would be refused (not when
    ``req`` overrides the window with a reason)."""
    from pgferry import policy

    d = policy.decide(cfg, req, now, ("blackout",))
    if d.error() is None:
        return None
    return (
        f"environment {req.env!r} is in a blackout window ({d.details['blackout']}): this"
        " dry run changes nothing; a real run is refused (wait, or pass"
        ' --override-blackout --reason "...")'
    )


def blackout_again(cfg: Config, req: WriteRequest, now: datetime | None) -> Callable[[], None]:
    """A check that judges ``req``'s blackout window again when it is called: under a lock
    the command waited for (or after a question), a window may have begun meanwhile.
    ``now``: the command's own (tests); None reads the clock at the call."""
    from pgferry import policy

    def check() -> None:
        err = policy.decide(cfg, req, now_or(now), ("blackout",)).error()
        if err is not None:
            raise err

    return check


def authorize(
    cfg: Config,
    target: Target,
    req: WriteRequest,
    *,
    now: datetime,
    rules: Collection[str] | None = None,
    confirm: Confirm | None = None,
    ask: Callable[[Decision], bool] | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> Decision:
    """Decide ``req`` and act on it (see the module docstring).

    ``ask`` replaces the plain question to ``confirm`` (``sync`` shows a preview
    first); it returns True to go on and may raise a refusal of its own.
    """
    from pgferry import policy

    chosen = policy.RULES if rules is None else rules
    d = policy.decide(cfg, req, now, chosen)
    if d.verdict is policy.Verdict.CONFIRM and (ask is not None or confirm is not None):
        agreed = (
            ask(d)
            if ask is not None
            else (confirm is not None and confirm(Question(req.env, d.prompt)))
        )
        if agreed:
            rest = [r for r in chosen if r not in ("input", "blackout")]
            d = replace(policy.decide(cfg, replace(req, yes=True), now, rest), window=d.window)
    if d.allowed:
        if d.window is not None:  # journaled once the write may go ahead, not before
            _journal_override(target, req, d, arguments)
        return d
    err = d.error()
    assert err is not None
    if isinstance(err, Refused):
        raise refuse(target, req.command, err, arguments)
    raise err

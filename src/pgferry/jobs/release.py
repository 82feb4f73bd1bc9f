"""``pgferry release``: the release saga run in the calling process.

Contract: :func:`run_here` asks the policy as every command line write does (the
blackout window, then ``--yes`` or the ``confirm`` callback for a protected
environment: the command line's consent; the four-eyes approval is the service's),
records the run in the control database (``requested_by`` the OS user) and executes
it with :func:`pgferry.jobs.runner.execute`, so its steps, compensations and events
are kept exactly as a service run's; ``resume`` carries on a run that was
interrupted (a finished step is not repeated).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pgferry import policy
from pgferry.commands import base
from pgferry.config import Config
from pgferry.errors import BadInput
from pgferry.events import Subscriber
from pgferry.jobs import claim, runner, runs
from pgferry.jobs.control import Control


def _production(cfg: Config) -> str:
    if cfg.service.production:
        return cfg.service.production
    protected = [n for n, e in cfg.environments.items() if e.protected]
    if len(protected) == 1:
        return protected[0]
    raise BadInput("name the environment with --env (no single production configured)")


def run_here(
    cfg: Config,
    *,
    env: str | None,
    source: str | None,
    tables: list[str],
    resume: str | None,
    yes: bool,
    confirm: base.Confirm | None,
    who: str,
    progress: Subscriber | None = None,
) -> runs.ServiceRun:
    """Run (or resume) a release in this process; the run as it ended."""
    ctl = Control(cfg).ensure()
    try:
        if resume is not None:
            run = runs.get(ctl, resume)
            if run is None or run.kind != "release":
                raise BadInput(f"no release run {resume!r}")
            if claim.held_elsewhere(ctl, run.id):  # said before touching it (runner checks)
                raise claim.elsewhere(run.id)
            if not run.final:
                runs.update(ctl, run.id, state="queued")
        else:
            name = env or _production(cfg)
            from pgferry.jobs.service import validate

            validate(cfg, "release", {"env": name, "source": source, "tables": tables})
            tgt = base.target(cfg, name)
            req = policy.WriteRequest(
                "release", name, tgt.protected, yes=yes, action=f"release from {source} into {name}"
            )
            base.authorize(
                cfg,
                tgt,
                req,
                now=datetime.now(UTC),
                confirm=confirm,
                rules=("input", "blackout", "protected"),
            )
            run, _ = runs.create(
                ctl,
                kind="release",
                env=name,
                arguments={"env": name, "source": source, "tables": tables},
                # the command line's --yes is the consent (runner)
                requested_by=who,
                requested_from="cli",
                state="queued",
            )
        done = runner.execute(cfg, ctl, run.id, also=progress)
        assert done is not None
        return done
    finally:
        ctl.close()

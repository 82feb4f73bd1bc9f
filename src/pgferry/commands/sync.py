"""``sync``, ``verify`` and ``sync revert``.

Contract: :func:`sync` checks its options (``--no-mask`` needs a reason, SOURCE
and TARGET differ, a known mode, a writable report), then — for anything that
writes (not ``verify``, not ``--dry-run``) — asks the policy: the target's
blackout window, then ``--yes`` for a protected target (a front end that can
ask gets the read-only preview, a dry run's result, in its :class:`Question`).
A ``--dry-run`` changes nothing, so a blackout window does not refuse it (as it
does not refuse ``migrate up --dry-run``); its first warning says a real run is.
It runs the engine (:mod:`pgferry.sync.engine`) publishing
:mod:`pgferry.sync.events` to ``progress``, journals the run in the target (a
sync always; ``verify`` where a journal exists; a dry run never), writes the
Markdown report when asked, and returns the :class:`~pgferry.sync.result.SyncResult`
(its ``exit_code``: 0 ok, 1 differences or dead letters, 3 failed).
:func:`revert` undoes one sync from its before-images, by the same policy;
:func:`runs_with_images` says which runs hold before-images in an environment and
:func:`keeps_before_images` whether a sync into it keeps them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pgferry.commands import base
from pgferry.config import Config
from pgferry.errors import BadInput, Refused
from pgferry.events import Subscriber
from pgferry.pg.connect import Target
from pgferry.policy import Decision, WriteRequest
from pgferry.sync import engine
from pgferry.sync.result import SyncResult

MODES = ("incremental", "full", "verify")
ON_CONFLICT = ("stop", "source", "target")


@dataclass(frozen=True)
class SyncOptions:
    """``sync SOURCE TARGET`` (and ``verify``) as the command line (or a request) says it."""

    source: str
    target: str
    mode: str = "incremental"
    tables: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    batch_size: int | None = None
    jobs: int | None = None
    dry_run: bool = False
    yes: bool = False
    atomic: bool = False
    no_mask: bool = False
    #: why --no-mask and/or --override-blackout (one reason serves both; journaled)
    reason: str | None = None
    override_blackout: bool = False
    on_conflict: str | None = None
    rebase: bool = False
    verify_after: bool = False
    #: write the Markdown report here (it carries the checksums after: verify_after is on)
    report: Path | None = None
    #: the run's id, chosen before it starts (:func:`pgferry.sync.engine.new_run_id`), so
    #: the caller knows it even when the sync raises; default: a new one
    run_id: str | None = None


def _check(opts: SyncOptions) -> None:
    if opts.no_mask and not (opts.reason and opts.reason.strip()):
        raise BadInput("--no-mask needs --reason TEXT (it is recorded in the journal)")
    if opts.reason and not (opts.no_mask or opts.override_blackout):
        raise BadInput("--reason goes with --no-mask or --override-blackout")
    if opts.on_conflict is not None and opts.on_conflict not in ON_CONFLICT:
        raise BadInput(f"--on-conflict {opts.on_conflict!r}: use stop, source or target")
    if opts.source == opts.target:
        raise BadInput("SOURCE and TARGET are the same environment")
    if opts.mode not in MODES:
        raise BadInput(f"--mode {opts.mode!r}: use incremental, full or verify")
    if opts.run_id is not None and not re.fullmatch(r"[0-9a-f]{12}", opts.run_id):
        raise BadInput(f"run id {opts.run_id!r}: a sync run id is 12 lowercase hex digits")


def _engine_options(opts: SyncOptions) -> engine.Options:
    mode: Literal["incremental", "full", "verify"] = (
        "full" if opts.mode == "full" else "verify" if opts.mode == "verify" else "incremental"
    )
    return engine.Options(
        mode=mode,
        tables=list(opts.tables),
        exclude=list(opts.exclude),
        batch_size=opts.batch_size,
        jobs=opts.jobs,
        dry_run=opts.dry_run,
        atomic=opts.atomic,
        on_conflict=opts.on_conflict,
        rebase=opts.rebase,
        no_mask_reason=opts.reason if opts.no_mask else None,
        # a report is the proof: it carries the checksums after
        verify_after=opts.verify_after or opts.report is not None,
        run_id=opts.run_id,
    )


def sync(
    cfg: Config,
    opts: SyncOptions,
    *,
    now: datetime | None = None,
    progress: Subscriber | None = None,
    confirm: base.Confirm | None = None,
) -> SyncResult:
    """Make TARGET hold what SOURCE holds (incremental, full) or compare them (verify)."""
    return _sync(cfg, opts, _engine_options(opts), now=now, progress=progress, confirm=confirm)


def _sync(
    cfg: Config,
    opts: SyncOptions,
    eopts: engine.Options,
    *,
    now: datetime | None,
    progress: Subscriber | None,
    confirm: base.Confirm | None,
) -> SyncResult:
    from pgferry.sync import report as sync_report

    _check(opts)
    when = base.now_or(now)
    writes = opts.mode != "verify" and not opts.dry_run
    tgt = base.target(cfg, opts.target)
    window = WriteRequest(
        "sync",
        tgt.name,
        tgt.protected,
        yes=opts.yes,
        override_blackout=opts.override_blackout,
        reason=opts.reason,
    )
    if writes:  # a freeze covers every write (exit 4, journaled)
        # nobody to ask: --yes is judged here too, so that an override is journaled only
        # for a sync that goes ahead (with someone to ask, after the preview, below)
        rules = ("input", "blackout") + (("protected",) if confirm is None else ())
        base.authorize(cfg, tgt, window, now=when, rules=rules)
    src = base.target(cfg, opts.source)
    if opts.report is not None:
        sync_report.check_writable(opts.report)
    in_window: str | None = None
    if opts.dry_run and opts.mode != "verify":  # not refused: it says what a run would meet
        in_window = base.blackout_warning(cfg, window, when)
    if writes:
        action = f"sync {opts.mode} from {opts.source} into {opts.target}"
        req = WriteRequest("sync", tgt.name, tgt.protected, action=action, yes=opts.yes)

        def ask(d: Decision) -> bool:  # noqa: ARG001 - show what would change, then ask
            assert confirm is not None
            preview = engine.run(cfg, src, tgt, replace(eopts, dry_run=True))
            agreed = confirm(
                base.Question(
                    tgt.name,
                    f"{opts.target} is protected. Apply these changes ({action})?",
                    preview,
                    # exit 1: a table the plan stops (the others are still written)
                    ask=preview.exit_code in (0, 1),
                )
            )
            if preview.exit_code not in (0, 1):
                raise Refused(
                    f"the preview of {action} did not complete (exit "
                    f"{preview.exit_code}); nothing was written",
                    env=opts.target,
                )
            if not agreed:
                raise Refused(
                    f"environment {opts.target!r} is protected: {action} was not "
                    "confirmed; nothing was written",
                    env=opts.target,
                )
            return True

        base.authorize(
            cfg, tgt, req, now=when, rules=("protected",), ask=ask if confirm is not None else None
        )
    result = _run(cfg, src, tgt, eopts, progress)
    if in_window is not None:
        result.warnings.insert(0, in_window)
    if opts.report is not None:
        sync_report.write(opts.report, result)
    return result


def _run(
    cfg: Config, src: Target, tgt: Target, opts: engine.Options, progress: Subscriber | None
) -> SyncResult:
    """The engine's run, journaled (a dry run is not)."""
    from pgferry import journal
    from pgferry.events import Channel

    channel = Channel()
    if progress is not None:
        channel.subscribe(progress)
    with engine.start(cfg, src, tgt, opts, channel) as run:
        if opts.dry_run:
            engine.execute(run)
            return run.result
        verify = opts.mode == "verify"
        result = run.result
        # verify is read-only on both sides: it journals only where a journal exists
        with journal.operation(
            tgt, "verify" if verify else "sync", run.arguments, create=not verify
        ) as op:
            try:
                engine.execute(run)
            finally:
                op.details.update(result.to_dict())
                op.outcome, op.exit_code = result.derive_outcome(), result.exit_code
        return result


@dataclass(frozen=True)
class VerifyOptions:
    source: str
    target: str
    tables: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    jobs: int | None = None
    report: Path | None = None


def verify(cfg: Config, opts: VerifyOptions, *, progress: Subscriber | None = None) -> SyncResult:
    """Compare SOURCE and TARGET table by table (chunked checksums); exit 1 when they differ."""
    sopts = SyncOptions(
        opts.source,
        opts.target,
        "verify",
        opts.tables,
        opts.exclude,
        jobs=opts.jobs,
        report=opts.report,
    )
    eopts = engine.Options(
        mode="verify", tables=list(opts.tables), exclude=list(opts.exclude), jobs=opts.jobs
    )
    return _sync(cfg, sopts, eopts, now=None, progress=progress, confirm=None)


@dataclass(frozen=True)
class RevertOptions:
    run_id: str
    #: the environment the run wrote to (default: the one whose before-images hold it)
    env: str | None = None
    yes: bool = False
    dry_run: bool = False
    override_blackout: bool = False
    reason: str | None = None


def revert(
    cfg: Config,
    opts: RevertOptions,
    *,
    now: datetime | None = None,
    confirm: base.Confirm | None = None,
) -> Any:
    """``sync revert``: put back every row one sync changed (its before-images), unless one
    changed since. Returns :class:`pgferry.sync.revert.RevertResult`."""
    from pgferry import journal
    from pgferry.sync import revert as revert_mod

    tgt = base.target(cfg, opts.env) if opts.env else find_run(cfg, opts.run_id)
    if opts.reason and not opts.override_blackout:
        raise BadInput("--reason goes with --override-blackout")
    req = WriteRequest(
        "sync revert",
        tgt.name,
        tgt.protected,
        action=f"sync revert {opts.run_id} in {tgt.name}",
        yes=opts.yes,
        override_blackout=opts.override_blackout,
        reason=opts.reason,
    )
    if not opts.dry_run:
        base.authorize(
            cfg,
            tgt,
            req,
            now=base.now_or(now),
            confirm=confirm,
            rules=("input", "blackout", "protected"),
        )
    wait = cfg.sync.lock_wait.total_seconds()
    if opts.dry_run:  # not refused in a blackout window: it says a real revert would be
        res = revert_mod.revert(tgt, opts.run_id, lock_wait_s=wait, dry_run=True)
        window = base.blackout_warning(cfg, req, base.now_or(now))
        res.warnings += [window] if window is not None else []
        return res
    with journal.operation(tgt, "sync revert", {"run_id": opts.run_id}) as op:
        res = revert_mod.revert(tgt, opts.run_id, lock_wait_s=wait)
        op.details.update(res.to_dict())
    return res


def find_run(cfg: Config, run_id: str) -> Target:
    """The environment whose before-images hold ``run_id`` (BadInput when none or several)."""
    import psycopg

    from pgferry.errors import PgferryError
    from pgferry.pg.connect import connect, resolve_env

    hits = []
    for name in cfg.environments:
        try:
            t = resolve_env(cfg, name)
            with connect(t.dsn, autocommit=True, retry_for=0) as c:
                if c.execute("SELECT to_regclass('pgferry.before_images')").fetchone() == (None,):
                    continue
                if c.execute(
                    "SELECT 1 FROM pgferry.before_images WHERE run_id = %s LIMIT 1", [run_id]
                ).fetchone():
                    hits.append(t)
        except (PgferryError, psycopg.Error):
            continue  # an environment that cannot be reached cannot hold it for us either
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise BadInput(
            f"no environment holds before-images of sync run {run_id!r}; check the "
            "run id (the report, --json or pgferry journal) or name it with --env"
        )
    raise BadInput(
        f"sync run {run_id!r} is in {', '.join(t.name for t in hits)}; name one with --env"
    )


def keeps_before_images(cfg: Config, env: str) -> bool:
    """Does a sync into ``env`` keep before-images of every row it changes (``[sync]
    keep_before_images``, by default on a protected target)? Then a run's before-images,
    written in the transaction of the rows they describe, are exactly what it committed."""
    keep = cfg.sync.keep_before_images
    return keep if keep is not None else base.target(cfg, env).protected


def runs_with_images(cfg: Config, env: str, run_ids: list[str]) -> list[str]:
    """Those of ``run_ids`` that hold before-images in ``env`` (in the order given)."""
    from pgferry.sync import revert as revert_mod

    return revert_mod.runs_with_images(base.target(cfg, env), run_ids)

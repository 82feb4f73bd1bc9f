"""``backfill run``, ``backfill revert`` and ``backfill status``: batched backfills.

Contract: :func:`run` and :func:`revert` decide by policy first (bad input, the blackout
window, the protected environment: the ``confirm`` callback may ask a person), journal
the run (``backfill run``/``backfill revert``: batches, rows, rows/s, retries, pauses, the
gates' last readings, and for a gate that fired, the gate and what was put back) and
publish :mod:`pgferry.backfill.events` to ``progress``. The gates that apply (``during``
includes ``backfill``) are read once before the first batch: a query its source rejects is
exit 2. A gate with action ``abort`` stops the run (exit 3, the checkpoint kept: run it
again to resume); ``rollback`` reverts every batch of the backfill from its before-images
(:mod:`pgferry.backfill.images`) and exits 3 naming the gate and what was put back.
:func:`status` is read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pgferry.backfill import files
from pgferry.backfill.images import Reverted
from pgferry.backfill.runner import BackfillResult, GateStop, Run
from pgferry.backfill.session import BackfillOptions
from pgferry.commands import base
from pgferry.config import Config, parse_duration
from pgferry.errors import BadInput, OperationFailed
from pgferry.events import Subscriber
from pgferry.gates.runtime import GateSet
from pgferry.pg.connect import Target
from pgferry.policy import WriteRequest, decide


@dataclass(frozen=True)
class BackfillRunOptions:
    """``backfill run NAME`` as the command line (or a request) says it."""

    name: str
    env: str | None = None
    #: only rows matching this condition; its own checkpoint
    where: str | None = None
    #: keys in the first batch (default ``[backfill] batch_size``)
    batch_size: int | None = None
    #: grow or shrink batches toward this (default ``[backfill] target_duration``)
    target_duration: str | None = None
    restart: bool = False
    yes: bool = False
    override_blackout: bool = False
    reason: str | None = None


@dataclass
class BackfillRunResult:
    env: str
    result: BackfillResult

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "env": self.env, **self.result.to_dict()}


def runner_options(cfg: Config, opts: BackfillRunOptions) -> BackfillOptions:
    """The runner's options; BadInput for a ``--where`` or duration that does not parse."""
    if opts.where is not None:
        files.where_node(opts.where)
    try:
        td = (
            parse_duration(opts.target_duration)
            if opts.target_duration is not None
            else cfg.backfill.target_duration
        )
    except ValueError as e:
        raise BadInput(f"--target-duration: {e}") from None
    return BackfillOptions(
        where=opts.where or None,
        batch_size=opts.batch_size or cfg.backfill.batch_size,
        target_duration=td.total_seconds(),
        restart=opts.restart,
        keep_images=cfg.backfill.keep_before_images,
    )


def _authorize(
    cfg: Config,
    command: str,
    env: str | None,
    yes: bool,
    override: bool,
    reason: str | None,
    now: datetime | None,
    confirm: base.Confirm | None,
    arguments: dict[str, Any],
) -> Target:
    req = WriteRequest(command, "", False, yes=yes, override_blackout=override, reason=reason)
    early = decide(cfg, req, base.now_or(now), ("input",)).error()
    if early is not None:
        raise early
    target = base.target(cfg, env)
    arguments["env"] = target.name
    base.authorize(
        cfg,
        target,
        replace(req, env=target.name, protected=target.protected),
        now=base.now_or(now),
        confirm=confirm,
        arguments=arguments,
        rules=("input", "blackout", "protected"),
    )
    return target


def reverted_text(done: Reverted, env: str) -> str:
    """What a revert did, in words (it may have stopped at a batch it could not put back)."""
    text = f"reverted in {env}: {done.batches} batch(es), {done.rows} row(s) put back" + (
        f", {done.kept} changed since and kept" if done.kept else ""
    )
    if done.stopped_at is not None:
        text += (
            f"; batch {done.stopped_at} and the ones before it stay as the backfill left "
            f"them: their old values break constraint {done.constraint} (a NOT VALID "
            "check of the expand forbids putting NULLs back; nothing reads those values "
            "yet, and the checkpoint is kept)"
        )
    return text


def run(
    cfg: Config,
    opts: BackfillRunOptions,
    *,
    now: datetime | None = None,
    progress: Subscriber | None = None,
    confirm: base.Confirm | None = None,
) -> BackfillRunResult:
    """``backfill run``: run (or resume) backfills/NAME.sql (see the module docstring)."""
    from pgferry import journal

    bf = files.load(cfg, opts.name)
    ropts = runner_options(cfg, opts)
    arguments: dict[str, Any] = {
        "name": opts.name,
        "where": opts.where,
        "batch_size": opts.batch_size,
        "target_duration": opts.target_duration,
        "restart": opts.restart,
        "yes": opts.yes,
        "override_blackout": opts.override_blackout,
        "reason": opts.reason,
    }
    target = _authorize(
        cfg,
        "backfill run",
        opts.env,
        opts.yes,
        opts.override_blackout,
        opts.reason,
        now,
        confirm,
        arguments,
    )

    def gates(conn: Any) -> GateSet:
        g = GateSet(cfg, target.name, "backfill", conn)
        if g.rollback_gates and not (ropts.keep_images and bf.kind in ("update", "insert")):
            why = (
                "[backfill] keep_before_images is false"
                if not ropts.keep_images
                else "a DELETE backfill keeps no before-images"
            )
            raise OperationFailed(
                f"gate {g.rollback_gates[0].name!r} would roll back backfill "
                f"{opts.name}, but {why}: nothing could be put back; change "
                "the gate's action to abort for this environment, or keep "
                "images"
            )
        g.check()
        return g

    with journal.operation(target, "backfill run", arguments) as op:
        op.details.update(
            {"backfill": opts.name, "file": bf.rel, "kind": bf.kind, "where": ropts.where}
        )
        with Run(cfg, target, bf, ropts, publish=progress, gates=gates) as r:
            try:
                res = r.run()
            except GateStop as stop:
                f = stop.firing
                op.details["gate"] = f.to_dict()
                if f.action != "rollback":
                    raise OperationFailed(
                        f"{f.describe()}; backfill {opts.name} stopped in {target.name} with "
                        "its checkpoint (run it again to resume once the gate is clear)",
                        gate=f.to_dict(),
                    ) from None
                done = r.revert(f.describe())
                op.details["reverted"] = done.to_dict()
                raise OperationFailed(
                    f"{f.describe()}; backfill {opts.name} " + reverted_text(done, target.name),
                    gate=f.to_dict(),
                    reverted=done.to_dict(),
                ) from None
            finally:
                if r.gates:
                    op.details["gates"] = {k: v.value for k, v in r.gates.last_readings.items()}
        op.details.update({k: v for k, v in res.to_dict().items() if k not in ("gates", "name")})
    return BackfillRunResult(target.name, res)


@dataclass(frozen=True)
class BackfillRevertOptions:
    name: str
    env: str | None = None
    where: str | None = None
    yes: bool = False
    override_blackout: bool = False
    reason: str | None = None


@dataclass
class BackfillRevertResult:
    env: str
    name: str
    scope: str
    reverted: Reverted

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "env": self.env,
            "backfill": self.name,
            "scope": self.scope,
            **self.reverted.to_dict(),
        }


def revert(
    cfg: Config,
    opts: BackfillRevertOptions,
    *,
    now: datetime | None = None,
    progress: Subscriber | None = None,
    confirm: base.Confirm | None = None,
) -> BackfillRevertResult:
    """``backfill revert``: put back every batch of NAME from its before-images."""
    from pgferry import journal

    bf = files.load(cfg, opts.name)
    arguments: dict[str, Any] = {
        "name": opts.name,
        "where": opts.where,
        "yes": opts.yes,
        "override_blackout": opts.override_blackout,
        "reason": opts.reason,
    }
    target = _authorize(
        cfg,
        "backfill revert",
        opts.env,
        opts.yes,
        opts.override_blackout,
        opts.reason,
        now,
        confirm,
        arguments,
    )
    with journal.operation(target, "backfill revert", arguments) as op:
        op.details.update({"backfill": opts.name, "file": bf.rel, "where": opts.where})
        with Run(cfg, target, bf, BackfillOptions(where=opts.where or None), publish=progress) as r:
            done = r.revert()
        op.details["reverted"] = done.to_dict()
        if done.stopped_at is not None:
            raise OperationFailed(
                f"backfill {opts.name} " + reverted_text(done, target.name), reverted=done.to_dict()
            )
    return BackfillRevertResult(target.name, opts.name, opts.where or "", done)


@dataclass
class BackfillStatusResult:
    env: str
    backfills: list[dict[str, Any]]
    never_run: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "env": self.env,
            "backfills": self.backfills,
            "never_run": self.never_run,
        }


def status(cfg: Config, env: str | None = None) -> BackfillStatusResult:
    """``backfill status``: every backfill's state in ``env`` and the files never run there."""
    import psycopg

    from pgferry.backfill import state
    from pgferry.pg.connect import connect, map_db_error

    target = base.target(cfg, env)
    try:
        with connect(target.dsn, autocommit=True) as c:
            rows = state.read_all(c)
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot read the backfills of {target.name}") from None
    names = (
        sorted(p.stem for p in cfg.backfills_dir.glob("*.sql"))
        if cfg.backfills_dir.is_dir()
        else []
    )
    seen = {s.name for s in rows}
    return BackfillStatusResult(
        target.name,
        [s.to_dict() | {"describe": s.describe()} for s in rows],
        [n for n in names if n not in seen],
    )

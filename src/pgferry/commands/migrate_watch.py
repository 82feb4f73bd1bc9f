"""``migrate up --watch``: apply, then watch the gates, and roll back on their word.

Contract: :func:`up` runs before anything is applied: the gates that apply to the
environment and a watch (``during`` includes ``watch``) are read once (a query its source
rejects: exit 2), and when one of them may roll back, every versioned file about to be
applied must have its ``U`` file (else exit 2: a rollback that cannot run is no rollback).
Then ``migrate up`` runs as usual (:func:`pgferry.commands.migrate_run.up`) and, when it
applied something, the gates are read every ``[gates] interval`` for the watch window
(``--watch-for``, default ``[gates] watch``), journaled as a ``migrate watch`` row:

- ``pause``: a warning line (nothing to pause after a migration);
- ``abort``: the watch stops, exit 3, nothing is undone (a person decides);
- ``rollback``: the ``U`` files of exactly the versions this run applied run, newest
  first (``migrate undo`` with ``only``, past the lint gate: it is the way back), journaled
  as ``migrate undo`` with the gate, its value and the reason; exit 3 naming the gate and
  what was undone. Repeatable files have no undo and are named as left in place.

Lines for a person are :class:`~pgferry.events.Notice` events. The clock and sleep are
injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pgferry.commands import base
from pgferry.commands import migrate_run as run_cmd
from pgferry.config import Config, parse_duration
from pgferry.errors import BadInput, OperationFailed
from pgferry.events import Notice, Subscriber
from pgferry.gates.evaluate import Firing
from pgferry.gates.runtime import GateSet
from pgferry.migrate import files
from pgferry.migrate.files import Version
from pgferry.pg.connect import Target, connect, map_db_error


@dataclass
class WatchResult(run_cmd.RunResult):
    """What ``migrate up --watch`` did: the run, and the watch after it."""

    watch: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "watch": self.watch}


def _check_undo(cfg: Config, opts: run_cmd.RunOptions) -> None:
    """Every versioned file ``up`` would apply has an undo file (BadInput otherwise)."""
    ms = files.scan(cfg.migrations_dir)
    planned = run_cmd.plan(
        cfg, run_cmd.PlanOptions(opts.env, opts.target, opts.out_of_order, opts.contract)
    )
    lacking = []
    for step in planned.steps:
        if step["kind"] != "V":
            continue
        v = Version.parse(step["version"])
        if not (v in ms.undo or (step["template"] and step["description"] in ms.undo_templates)):
            lacking.append(step["script"])
    if lacking:
        one = len(lacking) == 1
        raise BadInput(
            "--watch with a rollback gate needs an undo file (U<version>__<desc>.sql) for every "
            f"file it applies, and {', '.join(lacking)} {'has' if one else 'have'} none; "
            f"write {'it' if one else 'them'}, or give the gates action abort",
            files=lacking,
        )


def up(
    cfg: Config,
    opts: run_cmd.RunOptions,
    *,
    watch_for: str | None = None,
    now: datetime | None = None,
    progress: Subscriber | None = None,
    confirm: base.Confirm | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WatchResult:
    """``migrate up`` followed by the watch window (see the module docstring)."""
    import psycopg

    from pgferry import journal

    try:
        window = (
            parse_duration(watch_for).total_seconds()
            if watch_for
            else cfg.gates.watch.total_seconds()
        )
    except ValueError as e:
        raise BadInput(f"--watch-for: {e}") from None
    note: Subscriber = progress or (lambda _e: None)
    target = base.target(cfg, opts.env)
    try:
        mon = connect(target.dsn, autocommit=True, application_name="pgferry migrate watch")
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot watch {target.name}") from None
    with mon:
        gates = GateSet(cfg, target.name, "watch", mon, clock=clock)
        if gates:
            gates.check()
            if gates.rollback_gates and not opts.dry_run:
                _check_undo(cfg, opts)
        ran = run_cmd.up(cfg, opts, now=now, progress=progress, confirm=confirm)
        res = WatchResult(**{k: getattr(ran, k) for k in ran.__dataclass_fields__})
        res.watch = {"seconds": window, "gates": [g.name for g in gates.gates]}
        if opts.dry_run or not ran.applied:
            res.watch["skipped"] = "dry run" if opts.dry_run else "nothing was applied"
            return res
        if not gates:
            note(
                Notice(
                    "warning: --watch, but no [[gate]] applies to this environment during "
                    "a watch; nothing to watch"
                )
            )
            res.watch["skipped"] = "no gate"
            return res
        applied = [a.script for a in ran.applied]
        watch_args = {"env": target.name, "seconds": window, "applied": applied}
        with journal.operation(target, "migrate watch", watch_args) as op:
            firing = _watch(gates, window, note, clock, sleep)
            op.details["readings"] = res.watch["readings"] = {
                k: v.value for k, v in gates.last_readings.items()
            }
            res.watch["fired"] = firing.to_dict() if firing is not None else None
            if firing is None:
                op.details["outcome"] = "no gate fired"
                return res
            op.details["gate"] = firing.to_dict()
            _act(cfg, opts, target, ran, firing, op.details, note, now, progress)
    return res  # (not reached: _act raises)


def _act(
    cfg: Config,
    opts: run_cmd.RunOptions,
    target: Target,
    ran: run_cmd.RunResult,
    firing: Firing,
    details: dict[str, Any],
    note: Subscriber,
    now: datetime | None,
    progress: Subscriber | None,
) -> None:
    """Abort or roll back after a firing; raises OperationFailed (exit 3) either way."""
    if firing.action == "abort":
        raise OperationFailed(
            f"{firing.describe()} during the watch of {target.name}; the applied migrations "
            "stay (nothing was undone): decide, and `pgferry migrate undo` if they must go",
            gate=firing.to_dict(),
        )
    versions = tuple(a.version for a in ran.applied if a.version)
    note(Notice(f"rolling back: {firing.describe()}"))
    undo_opts = replace(
        opts,
        yes=True,
        dry_run=False,
        allow_unsafe=True,
        reason=f"automatic rollback: {firing.describe()}",
        only=versions,
        contract=False,
        override_guards=False,
        target=None,
        to=None,
    )
    undone = run_cmd.run(
        cfg,
        undo_opts,
        undo=True,
        now=now,
        progress=progress,
        journal_arguments={
            "rollback_of": [a.script for a in ran.applied],
            "gate": firing.gate.name,
            "value": firing.value,
        },
    )
    details["rolled_back"] = [u.script for u in undone.applied]
    left = [a.script for a in ran.applied if not a.version]
    raise OperationFailed(
        f"{firing.describe()} during the watch of {target.name}: rolled back "
        + ", ".join(details["rolled_back"])
        + f"; {target.name} is at version {undone.current_version or 'none'}"
        + (f" ({', '.join(left)} has no undo and stays)" if left else ""),
        gate=firing.to_dict(),
        rolled_back=details["rolled_back"],
        current_version=undone.current_version,
    )


def _watch(
    gates: GateSet,
    window: float,
    note: Subscriber,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Firing | None:
    """Read the gates until the window ends or one fires abort/rollback; that firing."""
    start = clock()
    note(
        Notice(
            f"watching {len(gates.gates)} gate(s) for {_fmt(window)}: "
            + ", ".join(g.name for g in gates.gates)
        )
    )
    last_line = start
    breaching: set[str] = set()
    first = True
    while True:
        poll = gates.poll(force=first)
        first = False
        for f in poll.firings:
            if f.action == "pause":
                note(Notice(f"warning: {f.describe()} (nothing to pause after a migration)"))
        worst = poll.worst()
        if worst is not None and worst.action in ("abort", "rollback"):
            return worst
        now_breaching = {g.name for g in gates.gates if gates.evaluator.breaching(g)}
        for name in sorted(now_breaching - breaching):
            note(Notice(f"gate {name!r} is past its threshold ({gates.summary()})"))
        breaching = now_breaching
        for name, why in poll.unknown.items():
            note(Notice(f"warning: gate {name!r} cannot be read: {why}"))
        elapsed = clock() - start
        if elapsed >= window:
            note(Notice(f"watch over after {_fmt(elapsed)}: no gate fired ({gates.summary()})"))
            return None
        if clock() - last_line >= 60:
            last_line = clock()
            note(Notice(f"watch {_fmt(elapsed)} of {_fmt(window)}: {gates.summary()}"))
        sleep(max(0.05, min(gates.interval, window - elapsed)))


def _fmt(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{seconds:.0f}s"

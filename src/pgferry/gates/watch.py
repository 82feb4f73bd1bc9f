"""``migrate up --watch``: apply, then watch the gates, and roll back on their word.

Contract: :func:`up_and_watch` runs before anything is applied: the gates that apply to
the environment and a watch (``during`` includes ``watch``) are read once (a query its
source rejects: exit 2), and when one of them may roll back, every versioned file about to
be applied must have its ``U`` file (else exit 2: a rollback that cannot run is no
rollback). Then ``migrate up`` runs as usual (:func:`pgferry.migrate.service.run`) and,
when it applied something, the gates are read every ``[gates] interval`` for the watch
window (``--watch-for``, default ``[gates] watch``), journaled as a ``migrate watch`` row:

- ``pause``: a warning line (nothing to pause after a migration);
- ``abort``: the watch stops, exit 3, nothing is undone (a person decides);
- ``rollback``: the ``U`` files of exactly the versions this run applied run, newest
  first (:func:`pgferry.migrate.service.run` with ``undo`` and ``only``), journaled as
  ``migrate undo`` with the gate, its value and the reason; exit 3 naming the gate and
  what was undone. Repeatable files have no undo and are named as left in place.

The clock and sleep are injectable for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg

from pgferry import journal
from pgferry.config import Config, parse_duration
from pgferry.errors import BadInput, OperationFailed
from pgferry.gates.runtime import GateSet
from pgferry.migrate import service
from pgferry.migrate.files import Version
from pgferry.pg.connect import Target, connect, map_db_error


def _check_undo(cfg: Config, target: Target, kw: dict[str, Any]) -> None:
    """Every versioned file ``up`` would apply has an undo file (BadInput otherwise)."""
    from pgferry.migrate import files

    ms = files.scan(cfg.migrations_dir)
    planned = service.plan(cfg, target, version=kw.get("version"),
                           out_of_order=kw.get("out_of_order", False),
                           contract=kw.get("contract", False))
    lacking = []
    for step in planned["steps"]:
        if step["kind"] != "V":
            continue
        v = Version.parse(step["version"])
        has = v in ms.undo or (step["template"] and step["description"] in ms.undo_templates)
        if not has:
            lacking.append(step["script"])
    if lacking:
        raise BadInput(
            "--watch with a rollback gate needs an undo file (U<version>__<desc>.sql) for every "
            f"file it applies, and {', '.join(lacking)} "
            f"{'has' if len(lacking) == 1 else 'have'} none; write "
            f"{'it' if len(lacking) == 1 else 'them'}, or give the gates action abort",
            files=lacking)


def up_and_watch(cfg: Config, target: Target, *, watch_s: float | None, now: datetime,
                 arguments: dict[str, Any], on_note: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, **kw: Any) -> dict[str, Any]:
    """``migrate up`` followed by the watch window (see the module docstring)."""
    window = watch_s if watch_s is not None else \
        parse_duration(cfg.gates.watch).total_seconds()
    try:
        mon = connect(target.dsn, autocommit=True, application_name="pgferry migrate watch")
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot watch {target.name}") from None
    with mon:
        gates = GateSet(cfg, target.name, "watch", mon, clock=clock)
        if gates:
            gates.check()
            if gates.rollback_gates and not kw.get("dry_run"):
                _check_undo(cfg, target, kw)
        res = service.run(cfg, target, now=now, arguments=arguments, **kw)
        applied = [a for a in res.get("applied", []) if a.get("version")]
        res["watch"] = {"seconds": window, "gates": [g.name for g in gates.gates]}
        if kw.get("dry_run") or not res.get("applied"):
            res["watch"]["skipped"] = "dry run" if kw.get("dry_run") else "nothing was applied"
            return res
        if not gates:
            on_note("warning: --watch, but no [[gate]] applies to this environment during a "
                    "watch; nothing to watch")
            res["watch"]["skipped"] = "no gate"
            return res
        watch_args = {"env": target.name, "seconds": window,
                      "applied": [a["script"] for a in res["applied"]]}
        with journal.operation(target, "migrate watch", watch_args) as op:
            firing = _watch(gates, window, on_note, clock, sleep)
            op.details["readings"] = {k: v.value for k, v in gates.last_readings.items()}
            res["watch"]["readings"] = op.details["readings"]
            if firing is None:
                op.details["outcome"] = "no gate fired"
                res["watch"]["fired"] = None
                return res
            op.details["gate"] = firing.to_dict()
            res["watch"]["fired"] = firing.to_dict()
            if firing.action == "abort":
                raise OperationFailed(
                    f"{firing.describe()} during the watch of {target.name}; the applied "
                    "migrations stay (nothing was undone): decide, and `pgferry migrate undo` "
                    "if they must go", gate=firing.to_dict(), applied=res["applied"])
            versions = {Version.parse(a["version"]) for a in applied}
            on_note(f"rolling back: {firing.describe()}")
            undo_args = {"env": target.name, "rollback_of": watch_args["applied"],
                         "gate": firing.gate.name, "reason": firing.describe(),
                         "value": firing.value}
            undone = service.run(cfg, target, undo=True, now=now, only=versions,
                                 arguments=undo_args, allow_unsafe=True,
                                 unsafe_reason=f"automatic rollback: {firing.describe()}",
                                 override_blackout=kw.get("override_blackout", False),
                                 reason=kw.get("reason"), on_event=kw.get("on_event"))
            op.details["rolled_back"] = [u["script"] for u in undone["applied"]]
            left = [a["script"] for a in res["applied"] if not a.get("version")]
            raise OperationFailed(
                f"{firing.describe()} during the watch of {target.name}: rolled back "
                + ", ".join(u["script"] for u in undone["applied"])
                + f"; {target.name} is at version {undone['current_version'] or 'none'}"
                + (f" ({', '.join(left)} has no undo and stays)" if left else ""),
                gate=firing.to_dict(), rolled_back=op.details["rolled_back"],
                current_version=undone["current_version"])


def _watch(gates: GateSet, window: float, on_note: Callable[[str], None],
           clock: Callable[[], float], sleep: Callable[[float], None]) -> Any:
    """Read the gates until the window ends or one fires abort/rollback; that firing."""
    start = clock()
    on_note(f"watching {len(gates.gates)} gate(s) for {_fmt(window)}: "
            + ", ".join(g.name for g in gates.gates))
    last_line = start
    breaching: set[str] = set()
    first = True
    while True:
        poll = gates.poll(force=first)
        first = False
        for f in poll.firings:
            if f.action == "pause":
                on_note(f"warning: {f.describe()} (nothing to pause after a migration)")
        worst = poll.worst()
        if worst is not None and worst.action in ("abort", "rollback"):
            return worst
        now_breaching = {g.name for g in gates.gates if gates.evaluator.breaching(g)}
        for name in sorted(now_breaching - breaching):
            on_note(f"gate {name!r} is past its threshold ({gates.summary()})")
        breaching = now_breaching
        for name, why in poll.unknown.items():
            on_note(f"warning: gate {name!r} cannot be read: {why}")
        elapsed = clock() - start
        if elapsed >= window:
            on_note(f"watch over after {_fmt(elapsed)}: no gate fired ({gates.summary()})")
            return None
        if clock() - last_line >= 60:
            last_line = clock()
            on_note(f"watch {_fmt(elapsed)} of {_fmt(window)}: {gates.summary()}")
        sleep(max(0.05, min(gates.interval, window - elapsed)))


def _fmt(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{seconds:.0f}s"

"""``pgferry backfill run|revert|status`` as service functions (the CLI calls these).

Contract: each function takes the config, a resolved target and options and returns a
JSON-ready dict; anything wrong is a :class:`~pgferry.errors.PgferryError`. The caller
runs the blackout guard (:func:`pgferry.policy.blackout_guard`) and ``--yes`` first.

- :func:`run` journals a ``backfill run`` row (batches, rows, rows/s, pauses, retries,
  gate readings). The gates that apply (``during`` includes ``backfill``) are read once
  before the first batch (a rejected query: exit 2). A gate with action ``abort`` stops
  the run (exit 3, the checkpoint kept: run it again to resume); ``rollback`` reverts
  every batch of the backfill from its before-images, marks it ``reverted``, journals the
  firing and what was put back, and exits 3.
- :func:`revert` does the same revert by hand (journaled ``backfill revert``).
- :func:`status` lists every backfill's state here (read-only).
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgferry import journal
from pgferry.backfill import files, state
from pgferry.backfill.runner import Event, GateStop, Options, Run
from pgferry.config import Config, parse_duration
from pgferry.errors import OperationFailed
from pgferry.gates.runtime import GateSet
from pgferry.pg.connect import Target, connect, map_db_error


def options(cfg: Config, *, where: str | None = None, batch_size: int | None = None,
            target_duration: str | None = None, restart: bool = False) -> Options:
    if where is not None:
        files.where_node(where)  # BadInput before anything connects
    td = target_duration if target_duration is not None else cfg.backfill.target_duration
    return Options(where=where or None, batch_size=batch_size or cfg.backfill.batch_size,
                   target_duration=parse_duration(td).total_seconds(), restart=restart,
                   keep_images=cfg.backfill.keep_before_images)


def run(cfg: Config, target: Target, name: str, opts: Options, *,
        arguments: dict[str, Any] | None = None, on_event: Event | None = None
        ) -> dict[str, Any]:
    """Run (or resume) backfill ``name`` in ``target``; see the module docstring."""
    bf = files.load(cfg, name)

    def gates(conn: psycopg.Connection[Any]) -> GateSet:
        g = GateSet(cfg, target.name, "backfill", conn)
        if g.rollback_gates and not (opts.keep_images and bf.kind in ("update", "insert")):
            why = ("[backfill] keep_before_images is false" if not opts.keep_images
                   else "a DELETE backfill keeps no before-images")
            raise OperationFailed(f"gate {g.rollback_gates[0].name!r} would roll back backfill "
                                  f"{name}, but {why}: nothing could be put back; change the "
                                  "gate's action to abort for this environment, or keep images")
        g.check()
        return g

    with journal.operation(target, "backfill run", arguments) as op:
        op.details.update({"backfill": name, "file": bf.rel, "kind": bf.kind,
                           "where": opts.where})
        with Run(cfg, target, bf, opts, on_event=on_event, gates=gates) as r:
            try:
                res = r.run()
            except GateStop as stop:
                op.details["gate"] = stop.firing.to_dict()
                if stop.firing.action != "rollback":
                    raise OperationFailed(
                        f"{stop.firing.describe()}; backfill {name} stopped in {target.name} "
                        "with its checkpoint (run it again to resume once the gate is clear)",
                        gate=stop.firing.to_dict()) from None
                if on_event is not None:
                    on_event("revert", {"reason": stop.firing.describe()})
                done = r.revert(on_batch=_revert_event(on_event))
                op.details["reverted"] = done.to_dict()
                raise OperationFailed(
                    f"{stop.firing.describe()}; backfill {name} " + reverted_text(done, target),
                    gate=stop.firing.to_dict(), reverted=done.to_dict()) from None
            finally:
                if r.gates:
                    op.details["gates"] = {k: v.value for k, v in r.gates.last_readings.items()}
        op.details.update({k: v for k, v in res.to_dict().items()
                           if k not in ("gates", "name")})
    return {"env": target.name, **res.to_dict()}


def reverted_text(done: Any, target: Target) -> str:
    """What a revert did, in words (it may have stopped at a batch it could not put back)."""
    text = (f"reverted in {target.name}: {done.batches} batch(es), {done.rows} row(s) put back"
            + (f", {done.kept} changed since and kept" if done.kept else ""))
    if done.stopped_at is not None:
        text += (f"; batch {done.stopped_at} and the ones before it stay as the backfill left "
                 f"them: their old values break constraint {done.constraint} (a NOT VALID "
                 "check of the expand forbids putting NULLs back; nothing reads those values "
                 "yet, and the checkpoint is kept)")
    return text


def _revert_event(on_event: Event | None) -> Any:
    if on_event is None:
        return None

    def cb(batch: int, rows: int, kept: int) -> None:
        on_event("reverted", {"batch": batch, "rows": rows, "kept": kept})

    return cb


def revert(cfg: Config, target: Target, name: str, where: str | None = None, *,
           arguments: dict[str, Any] | None = None, on_event: Event | None = None
           ) -> dict[str, Any]:
    """Put back every batch of backfill ``name`` from its before-images (journaled)."""
    bf = files.load(cfg, name)
    opts = Options(where=where or None)
    with journal.operation(target, "backfill revert", arguments) as op:
        op.details.update({"backfill": name, "file": bf.rel, "where": where})
        with Run(cfg, target, bf, opts) as r:
            done = r.revert(on_batch=_revert_event(on_event))
        op.details["reverted"] = done.to_dict()
        if done.stopped_at is not None:
            raise OperationFailed(f"backfill {name} " + reverted_text(done, target),
                                  reverted=done.to_dict())
    return {"env": target.name, "backfill": name, "scope": where or "", **done.to_dict()}


def status(cfg: Config, target: Target) -> dict[str, Any]:
    """Every backfill's state in ``target`` and the files in ``[backfill] dir``."""
    try:
        with connect(target.dsn, autocommit=True) as c:
            rows = state.read_all(c)
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot read the backfills of {target.name}") from None
    names = sorted(p.stem for p in cfg.backfills_dir.glob("*.sql")) \
        if cfg.backfills_dir.is_dir() else []
    seen = {s.name for s in rows}
    return {"env": target.name, "backfills": [s.to_dict() | {"describe": s.describe()}
                                              for s in rows],
            "never_run": [n for n in names if n not in seen]}

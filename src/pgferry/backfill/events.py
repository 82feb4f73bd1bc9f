"""Progress events of ``backfill run`` and ``backfill revert`` (the protocol:
:mod:`pgferry.events`).

Contract: :class:`~pgferry.backfill.runner.Run` publishes :class:`BackfillStarted` once,
:class:`BatchDone` after each committed batch, :class:`BatchRetry` each time a batch rolls
back on a lock timeout, deadlock or statement timeout, :class:`Paused` and
:class:`Resumed` around a pause, :class:`GateFired` when a gate fires, and, for a revert,
:class:`Reverting` and :class:`BatchReverted` per batch put back. ``batch`` is always the
backfill's batch number (all runs); ``keys_done`` and ``rows_per_s`` are this run's. Pure
data.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgferry.events import Event


@dataclass(frozen=True)
class BackfillStarted(Event):
    name: str
    table: str
    key: str
    #: keys left to cover (exact up to a million rows, else the catalog's estimate)
    estimate: int | None
    batch_size: int
    #: batches an earlier run committed (0: a fresh start)
    resumed_after: int


@dataclass(frozen=True)
class BatchDone(Event):
    name: str
    batch: int
    keys: int
    rows: int
    duration_ms: int
    next_size: int
    keys_done: int
    estimate: int | None
    rows_per_s: float


@dataclass(frozen=True)
class BatchRetry(Event):
    name: str
    #: ``lock timeout``, ``deadlock`` or ``statement timeout``
    reason: str
    attempt: int
    max_attempts: int
    batch_size: int
    #: the lock and who held it, when it was seen
    lock: str | None = None


@dataclass(frozen=True)
class Paused(Event):
    name: str
    reason: str
    pause_s: float


@dataclass(frozen=True)
class Resumed(Event):
    name: str
    seconds: float


@dataclass(frozen=True)
class GateFired(Event):
    gate: str
    action: str
    message: str


@dataclass(frozen=True)
class Reverting(Event):
    name: str
    reason: str


@dataclass(frozen=True)
class BatchReverted(Event):
    name: str
    batch: int
    rows: int
    kept: int

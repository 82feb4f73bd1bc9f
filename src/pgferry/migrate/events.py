"""Progress events of ``migrate up|undo`` (the protocol itself: :mod:`pgferry.events`).

Contract: the :class:`~pgferry.migrate.runner.Runner` publishes, for each file it
runs, :class:`MigrationStarted` (before), :class:`LockRetry` (each time a lock
timeout or deadlock makes it roll back and try the file again) and
:class:`MigrationFinished` (after it committed). Every field means one thing
whatever the event: ``index`` is the file's 1-based place among ``total`` files
of this run; ``attempt`` counts the tries of one file. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pgferry.events import Event


@dataclass(frozen=True)
class MigrationStarted(Event):
    script: str
    #: how a person names the file: ``V3 add email`` (``R`` for a repeatable)
    label: str
    index: int
    total: int
    undo: bool = False


@dataclass(frozen=True)
class LockRetry(Event):
    """The file could not get a lock in time (or met a deadlock); it runs again."""

    script: str
    label: str
    attempt: int
    max_attempts: int


@dataclass(frozen=True)
class MigrationFinished(Event):
    script: str
    label: str
    index: int
    total: int
    #: ``transaction`` or ``autocommit`` (statement by statement)
    mode: Literal["transaction", "autocommit"]
    duration_ms: int
    undo: bool = False
    attempts: int = 1
    #: a non-transactional file resumed after this many completed statements (0: none)
    resumed_after: int = 0
    dropped_invalid_indexes: list[str] = field(default_factory=list)

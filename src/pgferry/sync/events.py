"""Progress events of a sync (the protocol itself: :mod:`pgferry.events`).

Contract: the engine publishes these :class:`~pgferry.events.Event` kinds
(:class:`RunStarted`, :class:`TableStarted`, :class:`BatchWritten`,
:class:`Committing`, :class:`TableFinished`, :class:`Warning`, :class:`RunFinished`) to a
:class:`~pgferry.events.Channel`; ``event.to_dict()`` is what the admin service
streams. The terminal renderer is :class:`pgferry.cli.progress.SyncBars`.
:class:`Channel`, :class:`Collector`, :class:`Queued`, :class:`Event` and
:func:`sse` are :mod:`pgferry.events`' own, named here too for the code that
publishes sync events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pgferry.events import Channel as Channel
from pgferry.events import Collector as Collector
from pgferry.events import Event as Event
from pgferry.events import Queued as Queued
from pgferry.events import sse as sse
from pgferry.sync.plan import Mode, Strategy
from pgferry.sync.result import Outcome, TableStatus


@dataclass(frozen=True)
class RunStarted(Event):
    source: str
    target: str
    mode: Mode
    tables: list[str]


@dataclass(frozen=True)
class TableStarted(Event):
    table: str
    strategy: Strategy | Literal[""] = ""
    #: expected rows to process (estimate; 0 when unknown)
    total_rows: int = 0


@dataclass(frozen=True)
class BatchWritten(Event):
    """``rows`` more rows processed (written or compared) for ``table``."""

    table: str
    rows: int
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class Committing(Event):
    """The tables of one unit are written and about to commit: the last moment a cancel
    leaves them as they were."""

    stop_point = "now"

    tables: list[str]


@dataclass(frozen=True)
class TableFinished(Event):
    stop_point = "never"

    table: str
    status: TableStatus = "ok"
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    dead_lettered: int = 0
    duration_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - the event's name in the stream is "warning"
    message: str
    table: str | None = None


@dataclass(frozen=True)
class RunFinished(Event):
    stop_point = "never"

    outcome: Outcome
    exit_code: int
    duration_s: float = 0.0

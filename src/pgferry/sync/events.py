"""Progress events of a sync: a small, transport-neutral publish/subscribe channel.

Contract: the engine publishes :class:`Event` objects (:class:`RunStarted`,
:class:`TableStarted`, :class:`BatchWritten`, :class:`TableFinished`,
:class:`Warning`, :class:`RunFinished`) on a :class:`Channel`; any callable
taking one event is a subscriber. ``event.to_dict()`` is a JSON-serializable
dict with a ``type`` key — the same shape the admin service streams (SSE) and
a job records. Publishing is thread-safe (``--jobs N`` workers publish
concurrently) and never fails because of a subscriber: a subscriber that
raises is dropped and its error kept in :attr:`Channel.errors`.

:class:`RichProgress` is the terminal subscriber: one bar per table with rows
done / total, rows per second and ETA, drawn on stderr (so ``--json`` stdout
stays one object). :class:`Collector` keeps every event (tests, jobs);
:class:`Queued` hands them to another thread (bounded, drops the oldest) and
:func:`sse` formats one as a Server-Sent Events message for the admin service.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from pgferry import jsonio


@dataclass(frozen=True)
class Event:
    """Base of all events; ``at`` is the wall-clock time (epoch seconds)."""

    at: float = field(default_factory=time.time, kw_only=True)

    @property
    def type(self) -> str:
        name = type(self).__name__
        return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class RunStarted(Event):
    source: str
    target: str
    mode: str
    tables: list[str]


@dataclass(frozen=True)
class TableStarted(Event):
    table: str
    strategy: str = ""
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
class TableFinished(Event):
    table: str
    status: str = "ok"
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
    outcome: str
    exit_code: int
    duration_s: float = 0.0


Subscriber = Callable[[Event], None]


class Channel:
    """Publish events to every subscriber, in order, from any thread."""

    def __init__(self) -> None:
        self._subs: list[Subscriber] = []
        self._lock = threading.RLock()
        self.errors: list[str] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add ``fn``; returns a function that removes it again."""
        with self._lock:
            self._subs.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subs:
                    self._subs.remove(fn)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:  # one event at a time: renderers are not thread-safe
            for fn in list(self._subs):
                try:
                    fn(event)
                except Exception as e:  # a broken subscriber must not break the sync
                    self._subs.remove(fn)
                    self.errors.append(f"{getattr(fn, '__name__', fn)!s}: {e}")

    def rows(self, table: str) -> Callable[[int, int], None]:
        """An ``on_progress(rows_done, rows_total)`` callback that publishes BatchWritten.

        For code that reports cumulative progress (e.g. the verifier): the
        difference to the last call becomes the event's ``rows``.
        """
        last = 0

        def on_progress(done: int, total: int) -> None:
            nonlocal last
            if done > last:
                self.publish(BatchWritten(table, done - last))
                last = done

        return on_progress


class Queued:
    """A subscriber that hands events to another thread (an HTTP stream, a job recorder).

    Bounded: when the consumer falls behind, the oldest events are dropped (progress
    is a stream of updates, the final ones matter most) and :attr:`dropped` counts them.
    """

    def __init__(self, maxsize: int = 1000) -> None:
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize)
        self.dropped = 0

    def __call__(self, event: Event) -> None:
        item = event.to_dict()
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:  # pragma: no cover - a consumer emptied it meanwhile
                    pass

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event dict, or None after ``timeout`` seconds without one."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


def sse(event: Event | dict[str, Any]) -> str:
    """One Server-Sent Events message: ``event: <type>`` and the JSON dict as ``data``."""
    d = event.to_dict() if isinstance(event, Event) else event
    return f"event: {d['type']}\ndata: {jsonio.dumps(d, default=str)}\n\n"


class Collector:
    """A subscriber that keeps every event (for tests, jobs and the journal)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class _Rows(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.finished and task.fields.get("status"):
            return Text(f"{int(task.fields.get('rows', task.completed)):,} rows",
                        style="progress.download")
        total = f"{int(task.total):,}" if task.total else "?"
        return Text(f"{int(task.completed):,}/{total} rows", style="progress.download")


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        # rich's own speed needs several samples; a table done in one batch has none
        if task.finished:
            speed = task.fields.get("rate")
        else:
            speed = task.speed
        if speed is None and not task.finished and task.completed and task.elapsed:
            speed = task.completed / task.elapsed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")


class RichProgress:
    """Per-table progress bars (rows, rows/s, ETA) on stderr; use as a context manager."""

    def __init__(self, console: Console | None = None, *, transient: bool = False) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}", justify="left", markup=False),
            BarColumn(bar_width=28),
            _Rows(),
            _Rate(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=transient,
            refresh_per_second=8,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _task(self, table: str, total: int | None = None) -> TaskID:
        if table not in self._tasks:
            self._tasks[table] = self.progress.add_task(table, total=total or None, status="")
        return self._tasks[table]

    def __call__(self, event: Event) -> None:
        if isinstance(event, TableStarted):
            self._task(event.table, event.total_rows)
        elif isinstance(event, BatchWritten):
            tid = self._task(event.table)
            self.progress.advance(tid, event.rows)
            task = self.progress.tasks[tid]
            if task.total is not None and task.completed > task.total:
                self.progress.update(tid, total=task.completed)
        elif isinstance(event, TableFinished):
            tid = self._task(event.table)
            task = self.progress.tasks[tid]
            done = int(task.completed)
            took = event.duration_s or task.elapsed or 0.0
            # the estimate was only an estimate: the bar ends at what was really done
            self.progress.update(tid, total=done or 1, completed=done or 1,
                                 status=event.status, rows=done,
                                 rate=done / took if done and took > 0 else None)
            self.progress.stop_task(tid)
        elif isinstance(event, Warning):
            where = f"{event.table}: " if event.table else ""
            # the message is text, not markup: "[sync.tables...]" must print as it is
            self.progress.console.print(f"[yellow]warning[/]: {escape(where + event.message)}",
                                        markup=True, highlight=False)

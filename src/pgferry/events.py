"""Progress events: one protocol for every long operation (migrate, sync, backup ...).

Contract: an operation publishes :class:`Event` objects (frozen dataclasses, one
class per kind of event, defined beside the operation: :mod:`pgferry.sync.events`,
:mod:`pgferry.migrate.events`) to a :data:`Subscriber`, usually a
:class:`Channel`. ``event.to_dict()`` is a JSON-serializable dict with a ``type``
key (the class name in snake case) — the shape the admin service streams (SSE,
:func:`sse`) and a job records. No event changes the meaning of its fields with
its kind: a field means one thing.

Publishing through a :class:`Channel` is thread-safe (``--jobs N`` workers
publish concurrently) and never fails because of a subscriber: one that raises
is dropped and its error kept in :attr:`Channel.errors`. Renderers (rich
progress bars) belong to the front ends (:mod:`pgferry.cli.progress`);
:class:`Collector` keeps every event (tests, jobs); :class:`Queued` hands them
to another thread (bounded, drops the oldest).

Pure Python: no I/O, no rich, no driver.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

from pgferry import jsonio

#: where a front end may stop an operation (a cancel asked through the admin service):
#: ``"poll"`` at this event when it last asked a while ago; ``"now"`` ask at this event
#: whatever the last answer's age (the last moment before a commit); ``"never"`` the event
#: reports what already happened (a commit), so stopping there would report a write as
#: not made
StopPoint = Literal["poll", "now", "never"]


@dataclass(frozen=True)
class Event:
    """Base of all events; ``at`` is the wall-clock time (epoch seconds)."""

    stop_point: ClassVar[StopPoint] = "poll"

    at: float = field(default_factory=time.time, kw_only=True)

    @property
    def type(self) -> str:
        name = type(self).__name__
        return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name).lstrip("_")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}


@dataclass(frozen=True)
class Notice(Event):
    """A line an operation wants a person to read (a warning, a step it took)."""

    message: str


Subscriber = Callable[[Event], None]


def ignore(event: Event) -> None:  # noqa: ARG001 - the subscriber that wants nothing
    """A subscriber that drops every event (the default where nobody listens)."""


class Channel:
    """Publish events to every subscriber, in order, from any thread."""

    def __init__(self) -> None:
        self._subs: list[Subscriber] = []
        self._lock = threading.RLock()
        self.errors: list[str] = []

    def __call__(self, event: Event) -> None:
        self.publish(event)

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
                except Exception as e:  # noqa: BLE001 - a broken subscriber must not break the run
                    self._subs.remove(fn)
                    self.errors.append(f"{getattr(fn, '__name__', fn)!s}: {e}")


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

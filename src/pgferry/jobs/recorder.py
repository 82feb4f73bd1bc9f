"""A run's events, stored with it as they come, and where a cancel stops it.

Contract: :class:`Recorder` is the subscriber a run's operation publishes to
(:mod:`pgferry.jobs.runner` makes one per run): it stores every event with the run in
the control database (batched, in order, flushed in the background too) and raises
:class:`RunCancelled` into the operation at its next event once a cancel was asked, as
Ctrl-C does on the command line. :meth:`Recorder.cancel_held` holds that back while a
run must not be stopped part way (a release's compensations), and
:meth:`Recorder.cancel_asked` asks without raising (between a release's steps).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pgferry.config import Config
from pgferry.errors import PgferryError
from pgferry.events import Event, Subscriber
from pgferry.jobs import runs
from pgferry.jobs.control import Control
from pgferry.jobs.progress import Percent


class RunCancelled(KeyboardInterrupt):
    """Raised into the operation at its next event once a cancel was asked (like Ctrl-C)."""


@dataclass(frozen=True)
class RunStep(Event):
    """A line of the run itself (queued, started, retrying, resumed, a saga step)."""

    message: str
    step: str = ""
    state: str = ""


class Recorder:
    """The subscriber a run's operation publishes to: stores every event with the run
    (batched, in order) and raises :class:`RunCancelled` once a cancel was asked."""

    FLUSH_S = 0.25
    CANCEL_POLL_S = 0.25

    def __init__(
        self,
        ctl: Control,
        run_id: str,
        also: Subscriber | None = None,
        *,
        cfg: Config | None = None,
    ) -> None:
        self.ctl, self.run_id, self.also = ctl, run_id, also
        #: where the run's environment is, to journal the run there at its end
        self.cfg = cfg
        self._buf: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flushed = time.monotonic()
        self._polled = time.monotonic()
        self._percent = Percent()
        self.errors: list[str] = []
        # one flush at a time: the events reach the table in the order they came
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        #: while true, no event raises :class:`RunCancelled` (:meth:`cancel_held`)
        self._held = False

    def start(self) -> Recorder:
        """Flush every ``FLUSH_S`` in the background too: an operation that falls silent (a
        long COPY, a wait on a lock) still shows the events it published before."""

        def loop() -> None:
            while not self._stop.wait(self.FLUSH_S):
                if self._buf:
                    self.flush()

        self._timer = threading.Thread(target=loop, name=f"events-{self.run_id}", daemon=True)
        self._timer.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join(5)

    def __call__(self, event: Event) -> None:
        self.add(event.to_dict())
        if self.also is not None:
            self.also(event)
        if event.stop_point != "never":
            self.check_cancel(now=event.stop_point == "now")

    def add(self, item: dict[str, Any]) -> None:
        with self._lock:
            pct = self._percent.update(item)
            if pct is not None:
                item = {**item, "percent": pct}
            self._buf.append(item)
            due = time.monotonic() - self._flushed >= self.FLUSH_S
        if due:
            self.flush()

    def say(self, message: str, step: str = "", state: str = "") -> None:
        self(RunStep(message, step, state))

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                items, self._buf = self._buf, []
                self._flushed = time.monotonic()
            try:
                runs.add_events(self.ctl, self.run_id, items)
            except PgferryError as e:  # the control database hiccuped: the run goes on
                self.errors.append(e.message)

    def check_cancel(self, *, now: bool = False) -> None:
        if self._held or (not now and time.monotonic() - self._polled < self.CANCEL_POLL_S):
            return
        self._polled = time.monotonic()
        if self.cancel_asked():
            raise RunCancelled()

    def cancel_asked(self) -> bool:
        """Was a cancel asked for the run (False when the control database cannot say)?"""
        try:
            r = runs.get(self.ctl, self.run_id)
        except PgferryError:
            return False
        return r is not None and r.cancel_requested

    @contextlib.contextmanager
    def cancel_held(self, held: bool = True) -> Iterator[None]:
        """No event raises :class:`RunCancelled` inside (``held`` false: events may again,
        inside a held part); the cancel stays asked, for whoever looks next."""
        before, self._held = self._held, held
        try:
            yield
        finally:
            self._held = before

"""Progress on a terminal: the rich renderers of the operations' events.

Contract: each renderer is a :data:`~pgferry.events.Subscriber` (call it with an
event) and a context manager (bars start and stop with it); everything is drawn
on the stderr console it is given, so ``--json`` stdout stays one object.

- :class:`SyncBars`: one bar per table with rows done / total, rows per second
  and ETA, and sync warnings (:mod:`pgferry.sync.events`);
- :class:`MigrationLines`: one line per migration file with its duration, a
  bar when there are more than :data:`BAR_AFTER` files, and lock retries
  (:mod:`pgferry.migrate.events`);
- :class:`Notices`: :class:`~pgferry.events.Notice` lines (warnings, steps taken).
"""

from __future__ import annotations

import sys
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
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from pgferry.cli.lines import rows_text
from pgferry.events import Event, Notice
from pgferry.migrate.events import LockRetry, MigrationFinished, MigrationStarted
from pgferry.sync.events import BatchWritten, TableFinished, TableStarted, Warning

BAR_AFTER = 5  # more migration files than this: a progress bar


class Notices:
    """Print each :class:`~pgferry.events.Notice` as it is (text, not rich markup)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: Event) -> None:
        if isinstance(event, Notice):
            self.console.print(event.message, markup=False, highlight=False, soft_wrap=True)


class _Rows(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.finished and task.fields.get("status"):
            return Text(
                rows_text(int(task.fields.get("rows", task.completed))), style="progress.download"
            )
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


class SyncBars:
    """Per-table progress bars (rows, rows/s, ETA) on stderr; use as a context manager (the
    bars show from the first event on)."""

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
        self._started = False

    def __enter__(self) -> SyncBars:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.progress.stop()

    def _start(self) -> None:
        # on the first event: a question asked before the run (a protected target) must
        # not meet a live display on the same terminal
        if not self._started:
            self._started = True
            self.progress.start()

    def _task(self, table: str, total: int | None = None) -> TaskID:
        if table not in self._tasks:
            self._tasks[table] = self.progress.add_task(table, total=total or None, status="")
        return self._tasks[table]

    def __call__(self, event: Event) -> None:
        self._start()
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
            self.progress.update(
                tid,
                total=done or 1,
                completed=done or 1,
                status=event.status,
                rows=done,
                rate=done / took if done and took > 0 else None,
            )
            self.progress.stop_task(tid)
        elif isinstance(event, Warning):
            where = f"{event.table}: " if event.table else ""
            # the message is text, not markup: "[sync.tables...]" must print as it is
            self.progress.console.print(
                f"[yellow]warning[/]: {escape(where + event.message)}", markup=True, highlight=False
            )


class MigrationLines:
    """One stderr line per migration file with its duration; a bar when there are many."""

    def __init__(self, console: Console, verb: str) -> None:
        self.console, self.verb = console, verb
        self.bar: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> MigrationLines:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, event: Event) -> None:
        if isinstance(event, MigrationStarted):
            if self.bar is None and event.total > BAR_AFTER and sys.stderr.isatty():
                self.bar = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(),
                    console=self.console,
                    transient=True,
                )
                self.bar.start()
                self.task = self.bar.add_task(self.verb, total=event.total)
        elif isinstance(event, LockRetry):
            self.console.print(
                f"{event.label}: could not get a lock in time (attempt "
                f"{event.attempt}/{event.max_attempts}); retrying after a "
                "backoff",
                soft_wrap=True,
            )
        elif isinstance(event, MigrationFinished):
            extra = (
                f", resumed after statement {event.resumed_after}" if event.resumed_after else ""
            )
            extra += f", {event.attempts} attempts" if event.attempts > 1 else ""
            if event.dropped_invalid_indexes:
                extra += ", dropped INVALID index " + ", ".join(event.dropped_invalid_indexes)
            line = f"{self.verb} {event.label} ({event.mode}{extra}) in {event.duration_ms} ms"
            if self.bar is not None:
                self.bar.console.print(line)
                self.bar.advance(self.task)
            else:
                self.console.print(line, soft_wrap=True)

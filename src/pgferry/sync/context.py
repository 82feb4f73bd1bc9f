"""The state one sync run shares between its workers.

Contract: a :class:`RunContext` is made once per run by
:func:`pgferry.sync.engine.run` and handed to every worker of
:mod:`pgferry.sync.workers`; its counters of waiting and running units and
of borrowed workers are read and changed under its ``lock``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import sql

from pgferry.config import Config
from pgferry.pg.connect import Target
from pgferry.sync import events
from pgferry.sync.copy import SourceSnapshot
from pgferry.sync.plan import SyncPlan
from pgferry.sync.result import SyncResult

if TYPE_CHECKING:
    from pgferry.sync.engine import Options


@dataclass
class RunContext:
    cfg: Config
    source: Target
    target: Target
    opts: Options
    plan: SyncPlan
    masks: dict[str, dict[str, sql.Composable]]
    snapshot: SourceSnapshot
    result: SyncResult
    run_id: str
    channel: events.Channel
    batch_size: int
    retry_for: float
    overlap_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    abort: str | None = None
    #: checksum strategy: what the delete phase left for the load phase, per table
    pending: dict[str, Any] = field(default_factory=dict)
    jobs: int = 1
    #: units of the current phase not started yet, running, and the extra connection pairs
    #: big tables' comparisons use (see :meth:`spare`)
    waiting: int = 0
    running: int = 0
    helping: int = 0

    def spare(self, most: int) -> int:
        """Reserve up to ``most`` extra workers for one table; 0 while units still wait.

        Workers a table may borrow are the ones idle once no unit waits to start
        (the last tables of a phase); release them with :meth:`give_back`.
        """
        with self.lock:
            if self.waiting:
                return 0
            n = max(0, min(most, self.jobs - self.running - self.helping))
            self.helping += n
            return n

    def give_back(self, n: int) -> None:
        with self.lock:
            self.helping -= n

    def event(self, ev: events.Event) -> None:
        self.channel.publish(ev)

"""Building back what :mod:`pgferry.sync.aside` set aside: after the unit, or after a crash.

Contract: :class:`RebuildGuard` takes over after a unit that set indexes aside: a
connection that queues ``LOCK TABLE ... IN SHARE MODE`` before the unit commits, so
that from the commit on no other session writes to the table until its indexes are back
(readers go on; index builds take the same SHARE lock). :meth:`RebuildGuard.rebuild`
builds the indexes on ``jobs`` connections at once (each ``CREATE INDEX`` takes the
SHARE lock too), the costliest first (:attr:`~pgferry.sync.aside.RebuildStep.cost`),
then completes the constraints and partition attachments on the guard, deletes the
records and commits. The costliest build is the one the others finish before: it may
start ``jobs - 1`` parallel workers (``max_parallel_maintenance_workers``; fewer while
other units of the run still wait to start), which get the cores the smaller builds
leave; every other build runs without (see :func:`_build`).
With ``memory`` (``[sync] maintenance_work_mem``) every build runs with that
``maintenance_work_mem``; by default a btree build with more than the server's and
the others with the server's (:func:`_memory`).

:func:`recover`: a run that died between the drop and the rebuild leaves the
definitions in ``pgferry.set_aside``; the next sync of those tables rebuilds whatever
is missing (steps already done are skipped) before it does anything else. Definitions
run as the server wrote them (``pg_get_indexdef``), as ``pg_restore`` runs a dump's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

from pgferry.pg.connect import connect
from pgferry.sync.aside import RebuildStep, pending


def _exists(conn: psycopg.Connection[Any], qualified: str) -> bool:
    """Does the index (or constraint, for a step-2 constraint) ``schema.name`` exist?"""
    schema, name = qualified.split(".", 1)
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s)",
        [schema, name],
    ).fetchone()
    return bool(row and row[0])


def _attached(conn: psycopg.Connection[Any], parent: str, child: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s)"
        " AND inhparent = to_regclass(%s))",
        [
            sql.Identifier(*child.split(".", 1)).as_string(conn),
            sql.Identifier(*parent.split(".", 1)).as_string(conn),
        ],
    ).fetchone()
    return bool(row and row[0])


def _constraint(conn: psycopg.Connection[Any], index: str, qualified: str) -> bool:
    """Does constraint ``schema.name`` exist, completed by ``index`` (on a table or on one
    of a partitioned table's partitions)?"""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = to_regclass(%s)"
        " AND contype IN ('p', 'u') AND conname = %s)",
        [sql.Identifier(*index.split(".", 1)).as_string(conn), qualified.split(".", 1)[1]],
    ).fetchone()
    return bool(row and row[0])


def _done(conn: psycopg.Connection[Any], i: RebuildStep) -> bool:
    """Is step ``i`` done already (its index built, its constraint or attachment there)?

    Step 0 (a partitioned table's own index) and 1 (an index build): the index exists;
    2 and 3: the partition's index is attached to the parent's (``ALTER INDEX ...
    ATTACH``), or the constraint exists on the index it was added with (``needs``: a
    partitioned table's own constraint builds it, with the constraint's name).
    """
    if i.step < 2:
        return _exists(conn, i.name)
    if i.definition.startswith("ALTER INDEX"):
        return _attached(conn, i.needs, i.name)
    return _constraint(conn, i.needs, i.name)


class RebuildGuard:
    """The rebuild of one unit's set-aside tables (see the module docstring)."""

    def __init__(
        self,
        dsn: str,
        tables: Sequence[str],
        items: Sequence[RebuildStep],
        jobs: int,
        *,
        queue_before: bool = True,
        memory: str | None = None,
    ) -> None:
        from pgferry.sync import session

        self.dsn, self.tables, self.items, self.jobs = dsn, list(tables), list(items), jobs
        self.memory = memory
        self.conn = connect(dsn, application_name="pgferry sync rebuild")
        session.pin(self.conn)
        self._locked = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if queue_before:
            self._thread = threading.Thread(target=self._lock, daemon=True)
            self._thread.start()
            self._wait_queued()
        else:
            self._lock()

    def _lock(self) -> None:
        try:
            names = sql.SQL(", ").join(sql.Identifier(*t.split(".", 1)) for t in self.tables)
            self.conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(names))
        except BaseException as e:  # noqa: BLE001 - reported by rebuild()
            self._error = e
        finally:
            self._locked.set()

    def _wait_queued(self, timeout: float = 5.0) -> None:
        """Return once the guard's lock request waits in the queue (or holds the lock)."""
        pid = self.conn.info.backend_pid
        deadline = time.monotonic() + timeout
        with connect(self.dsn, autocommit=True, application_name="pgferry sync rebuild") as c:
            while time.monotonic() < deadline and not self._locked.is_set():
                row = c.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted)", [pid]
                ).fetchone()
                if row and row[0]:
                    return
                time.sleep(0.005)

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.cancel_safe(timeout=2)
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(psycopg.Error):
            self.conn.close()

    def rebuild(self, workers: int | None = None) -> list[str]:
        """Build what is missing, complete constraints and attachments, forget the records.

        Returns the names of the indexes built. Runs once the unit committed (or
        rolled back: then nothing is missing, and only the records go). ``workers``: the
        costliest build's parallel workers when several build at once (default ``jobs``
        - 1: the run's other workers are idle).
        """
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        c = self.conn
        todo = [i for i in self.items if not _done(c, i)]
        for i in (i for i in todo if i.step == 0):
            c.execute(sql.SQL(i.definition))
        builds = [i for i in todo if i.step == 1]
        most = self.jobs - 1 if workers is None else workers
        _build(self.dsn, builds, self.jobs, c, self.memory, most)
        # 2: constraints (a partitioned table's own and its partitions'), 3: the
        # attachments of a partitioned key, once both sides of each are there
        for i in sorted((i for i in todo if i.step >= 2), key=lambda i: i.step):
            c.execute(sql.SQL(i.definition))
        c.execute("DELETE FROM pgferry.set_aside WHERE table_name = ANY(%s)", [self.tables])
        c.commit()
        return [i.name.split(".", 1)[1] for i in builds]


#: the most a btree build's session gets by default (see :func:`_memory`)
_BTREE_MEMORY = 256 << 20


def _memory(guard: psycopg.Connection[Any], at_once: int) -> tuple[str, str]:
    """Default ``maintenance_work_mem`` for (btree builds, other builds), in kB.

    A btree build of millions of rows sorts on disk with the usual 64MB (the composite
    shape's three builds: 2.37 s with 64MB, 2.01 s with 256MB); a GIN build got slower
    with more (500k jsonb rows, ``jsonb_path_ops``: 1.5x as long with 512MB as with
    64MB). So btree builds get up to 256MB, never more than an eighth of the server's
    ``effective_cache_size`` (what it was told the machine caches, a share of its
    memory) over the builds running at once, and never less than the server's own
    setting; the others keep the server's.
    """
    row = guard.execute(
        "SELECT pg_size_bytes(current_setting('maintenance_work_mem')),"
        " pg_size_bytes(current_setting('effective_cache_size'))"
    ).fetchone()
    server, cache = (int(row[0]), int(row[1])) if row else (64 << 20, 0)
    btree = max(server, min(_BTREE_MEMORY, cache // (8 * max(at_once, 1))))
    return f"{btree // 1024}kB", f"{server // 1024}kB"


def _build(
    dsn: str,
    builds: list[RebuildStep],
    jobs: int,
    guard: psycopg.Connection[Any],
    memory: str | None = None,
    workers: int = 0,
) -> None:
    """``CREATE INDEX`` each of ``builds``, costliest first, ``jobs`` at a time.

    One build, or ``jobs`` 1: on the guard, one after the other, with the server's
    parallel workers (as ``pg_restore`` builds). Else on ``jobs`` connections: the
    costliest build takes ``workers`` (``jobs`` - 1 unless other units still load), as it
    is the one left running once the smaller ones are done (a GIN build of 500k jsonb
    rows: 4.8 s alone without workers, 3.0 s with); the others take none, since they
    share the cores with it. Each build's ``maintenance_work_mem``: ``memory`` when
    configured, else :func:`_memory`'s.
    """
    if not builds:
        return
    from pgferry.sync import session

    queue = sorted(builds, key=lambda i: -i.cost)
    n = 1 if jobs <= 1 else min(jobs, len(queue))
    btree, other = _memory(guard, n)

    def mem(i: RebuildStep) -> str:
        return memory or (btree if i.method == "btree" else other)

    if n == 1:
        for i in queue:
            guard.execute("SELECT set_config('maintenance_work_mem', %s, false)", [mem(i)])
            guard.execute(sql.SQL(i.definition))
        return

    lock = threading.Lock()
    first = queue[0]

    def work() -> None:
        with connect(dsn, autocommit=True, application_name="pgferry sync rebuild") as b:
            session.pin(b)
            now: dict[str, str] = {}
            while True:
                with lock:
                    if not queue:
                        return
                    i = queue.pop(0)
                want = {
                    "max_parallel_maintenance_workers": str(workers if i is first else 0),
                    "maintenance_work_mem": mem(i),
                }
                if want != now:
                    b.execute(
                        "SELECT " + ", ".join("set_config(%s, %s, false)" for _ in want),
                        [v for k in want for v in (k, want[k])],
                    )
                    now = want
                b.execute(sql.SQL(i.definition))

    with ThreadPoolExecutor(n) as pool:
        for f in [pool.submit(work) for _ in range(n)]:
            f.result()


def recover(
    dsn: str, tables: Sequence[str], jobs: int, memory: str | None = None
) -> tuple[list[str], list[str]]:
    """Rebuild what an interrupted run left set aside for ``tables``; (rebuilt, elsewhere).

    ``elsewhere``: recorded tables this run does not sync (the caller warns).
    """
    with connect(dsn, autocommit=True, application_name="pgferry sync rebuild") as c:
        recorded = pending(c)
    mine = {t: items for t, items in recorded.items() if t in set(tables)}
    rebuilt: list[str] = []
    if mine:
        g = RebuildGuard(
            dsn,
            list(mine),
            [i for items in mine.values() for i in items],
            jobs,
            queue_before=False,
            memory=memory,
        )
        try:
            rebuilt = g.rebuild()
        finally:
            g.close()
    return rebuilt, sorted(set(recorded) - set(mine))

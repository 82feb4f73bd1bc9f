"""Shared by the zero-downtime tests: application load and small helpers (the ``zproj``
fixture, a project with short windows (:data:`EXTRA`), is in ``tests/integration/conftest.py``).

Every test of expand, backfill or contract runs a :class:`Load` — application writes from
their own session while pgferry works — and ends with :meth:`Load.check`: the load ran,
and not one of its queries failed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.helpers import Project

#: short windows and pauses, so the tests take seconds, not minutes
EXTRA = """
[contract]
clients_window = "1s"
clients_interval = "200ms"

[backfill]
pause = "200ms"
max_pause = "20s"
lock_timeout = "100ms"

[gates]
interval = "200ms"
"""

Work = Callable[[psycopg.Connection[Any], random.Random], None]


class Load:
    """Application writes in a thread (its own session, ``application_name`` ``app``) while a
    change runs; every failed query is kept, with its SQLSTATE."""

    def __init__(self, dsn: str, work: Work, app: str = "app-v1", pause: float = 0.004) -> None:
        self.dsn, self.work, self.app, self.pause = dsn, work, app, pause
        self.ops = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._at_start = self._during = 0

    def _run(self) -> None:
        rnd = random.Random(7)
        conn = psycopg.connect(self.dsn, autocommit=True, application_name=self.app)
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    self.work(conn, rnd)
                    self.ops += 1
                except psycopg.Error as e:
                    self.errors.append(f"{e.sqlstate}: {str(e).strip().splitlines()[0]}")
                    if conn.broken or conn.closed:
                        conn = psycopg.connect(self.dsn, autocommit=True, application_name=self.app)
                time.sleep(self.pause)
        finally:
            conn.close()

    def __enter__(self) -> Load:
        self._thread.start()
        self._ready.wait(10)
        # the application is writing before the change starts (its first query is done)
        deadline = time.monotonic() + 10
        while self.ops + len(self.errors) == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        self._at_start = self.ops
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._during = self.ops - self._at_start
        self._stop.set()
        self._thread.join(30)

    def check(self, min_ops: int = 1) -> None:
        """No application query failed, and at least ``min_ops`` of them ran while the
        change did (between entering the block and leaving it)."""
        during = self._during if self._stop.is_set() else self.ops - self._at_start
        assert not self.errors, f"application queries failed: {self.errors[:5]}"
        assert during >= min_ops, f"only {during} application queries ran beside the change"


def sql(dsn: str, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.execute(text, params)
        return cur.fetchall() if cur.description else []


def one(dsn: str, text: str, params: Any = None) -> Any:
    rows = sql(dsn, text, params)
    return rows[0][0] if rows else None


def backfill(p: Project, name: str, text: str) -> Path:
    path = p.root / "backfills" / f"{name}.sql"
    path.write_text(text, encoding="utf-8")
    return path


def state(dsn: str, name: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as c:
        if c.execute("SELECT to_regclass('pgferry.backfill_state')").fetchone() == (None,):
            return {}
        cur = c.execute("SELECT * FROM pgferry.backfill_state WHERE name = %s", [name])
        names = [d.name for d in cur.description or []]
        row = cur.fetchone()
    return dict(zip(names, row, strict=True)) if row else {}


def journal(dsn: str, command: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.execute(
            "SELECT outcome, exit_code, arguments, details, error"
            " FROM pgferry.journal WHERE command = %s ORDER BY id",
            [command],
        )
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

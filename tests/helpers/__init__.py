"""Helpers shared by test modules: the one place they come from.

Contract: test modules import helpers from here (or a submodule: :mod:`tests.helpers.sync`,
:mod:`tests.helpers.health`, :mod:`tests.helpers.backup`), never from another test module
or from a ``conftest.py``; fixtures stay in the ``conftest.py`` files. A unit test
(``tests/unit/test_test_layout.py``) holds that rule.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.sql import SQL, Composed

#: SQL text, or a statement composed with psycopg.sql (identifiers quoted)
Query = str | SQL | Composed

#: the non-superuser role operations under test connect as (owns its databases)
ROLE = "pgferry_test"
ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Result]


@dataclass
class Project:
    """A pgferry project in a temp dir whose environments are fresh test databases."""

    root: Path
    dsns: dict[str, str]

    @property
    def config(self) -> Path:
        return self.root / "pgferry.toml"

    @property
    def migrations(self) -> Path:
        return self.root / "migrations"

    def write(self, name: str, text: str) -> Path:
        p = self.migrations / name
        p.write_text(text, encoding="utf-8")
        return p

    def run(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 120,
        env: dict[str, str] | None = None,
    ) -> Result:
        """Run the real ``pgferry`` command in a subprocess (for exit codes, signals)."""
        p = subprocess.run(
            [sys.executable, "-m", "pgferry", "--config", str(self.config), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        return Result(p.returncode, p.stdout, p.stderr)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pgferry", "--config", str(self.config), *args],
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # a process a test has to stop by force (SIGABRT) prints every thread's stack
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        )


def write_project(
    root: Path, dsns: dict[str, str], protected: tuple[str, ...] = ("prod",), extra: str = ""
) -> Project:
    lines = []
    for name, dsn in dsns.items():
        lines += [f"[environments.{name}]", f"url = {json.dumps(dsn)}"]
        if name in protected:
            lines.append("protected = true")
        lines.append("")
    root.mkdir(parents=True, exist_ok=True)
    (root / "pgferry.toml").write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    (root / "migrations").mkdir(exist_ok=True)
    return Project(root, dsns)


def run(cli: Cli, p: Project, *args: str) -> Result:
    """``pgferry --config <project> ARGS`` in-process."""
    return cli("--config", str(p.config), *args)


def run_json(cli: Cli, p: Project, *args: str) -> Result:
    """``pgferry --config <project> --json ARGS`` in-process."""
    return cli("--config", str(p.config), "--json", *args)


def sql(dsn: str, text: Query, params: Any = None) -> None:
    """Run ``text`` (one or more statements) in autocommit as the DSN's role."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(text, params)


def q(dsn: str, query: Query, params: Any = None) -> list[tuple[Any, ...]]:
    """The rows of ``query`` ([] for a statement that returns none)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.execute(query, params)
        return cur.fetchall() if cur.description else []


def one(dsn: str, query: Query, params: Any = None) -> Any:
    """The first column of the first row of ``query`` (None without a row)."""
    rows = q(dsn, query, params)
    return rows[0][0] if rows else None


def wait_for(
    dsn: str,
    query: str,
    params: Any = None,
    *,
    timeout: float = 60,
    alive: Any = None,
    what: str = "",
) -> None:
    """Poll until the server shows a condition: ``query``'s first value is true.

    ``alive`` (a ``subprocess.Popen``): fail at once, with its output, if it ends first.
    Tests wait for what the server can show (pg_locks, pg_stat_activity ...) instead of
    sleeping a fixed time.
    """
    import time

    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as c:
        while True:
            row = c.execute(query, params).fetchone()
            if row and row[0]:
                return
            if alive is not None and alive.poll() is not None:
                raise AssertionError(f"ended before {what or query}: {alive.communicate()}")
            assert time.monotonic() < deadline, f"timed out waiting for {what or query}"
            time.sleep(0.02)


def statements_seen(
    dsn: str,
    application_name: str,
    pattern: str,
    count: int,
    *,
    alive: Any = None,
    timeout: float = 60,
) -> None:
    """Wait until a session of ``application_name`` has started ``count`` statements
    matching ``pattern`` (distinct ``query_start`` in pg_stat_activity): that many batches
    are under way or done."""
    import time

    seen: set[Any] = set()
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as c:
        while len(seen) < count:
            for (start,) in c.execute(
                "SELECT query_start FROM pg_stat_activity WHERE application_name = %s"
                " AND state = 'active' AND query ~ %s",
                [application_name, pattern],
            ):
                seen.add(start)
            if alive is not None and alive.poll() is not None:
                raise AssertionError(f"ended after {len(seen)} statement(s): {alive.communicate()}")
            assert time.monotonic() < deadline, f"saw {len(seen)} of {count} statements"
            time.sleep(0.01)


class ServerLog:
    """The test server's log from the moment this was made: what the server wrote while an
    operation ran (its warnings go there, not to pgferry). Read as the superuser from the
    data directory's ``log`` file, where the embedded server writes it."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        size = one(admin_dsn, "SELECT size FROM pg_stat_file('log', true)")
        self.start: int | None = None if size is None else int(size)

    def since(self) -> str:
        assert self.start is not None
        size = int(one(self.admin_dsn, "SELECT size FROM pg_stat_file('log')"))
        text = one(
            self.admin_dsn,
            "SELECT convert_from(pg_read_binary_file('log', %s, %s), 'UTF8')",
            [self.start, size - self.start],
        )
        return str(text)

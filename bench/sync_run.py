"""What the sync bench runs with: timed processes and the rounds of changes at the source."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from bench.sync_shapes import Shape


@dataclass
class Run:
    seconds: float
    rss_mb: float
    code: int
    out: str = ""
    err: str = ""


def timed(cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run ``cmd``; wall time and the peak RSS of that process (``os.wait4``)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(
            cmd, stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=cwd, text=True
        )
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return Run(seconds, usage.ru_maxrss / 1024, p.returncode, out.read(), err.read())


def must(r: Run, what: str, codes: tuple[int, ...] = (0,)) -> Run:
    if r.code not in codes:
        raise SystemExit(f"{what} exited {r.code}:\n{r.out[-2000:]}\n{r.err[-2000:]}")
    return r


def change(dsn: str, shape: Shape, strategy: str, rnd: int) -> tuple[int, float]:
    """One round of changes at the source: (rows changed, seconds the writes took).

    Per table: ``g % 125 = r`` updated (0.8%), ``g % 1000 = r + 500`` deleted (0.1%;
    the checksum round only), ``g % 1000 = r + 1`` copied to new keys (0.1%). Each
    table's picked keys go into temp tables first (not timed); then all tables write
    at once, one connection (and transaction) each, found by primary key: the least
    time the target needs for the same writes with one writer per table.
    """
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier, BrokenBarrierError

    ready, done = Barrier(len(shape.tables) + 1), Barrier(len(shape.tables) + 1)

    def one(i: int) -> int:
        try:
            return write(i)
        except BaseException:
            ready.abort()
            done.abort()
            raise

    def write(i: int) -> int:
        t = shape.tables[i]
        keys = sql.SQL(", ").join(map(sql.Identifier, t.key))
        table = sql.Identifier(t.name)
        picks = [("update", f"{t.g} %% 125 = %(r)s"), ("insert", f"{t.g} %% 1000 = %(r)s + 1")]
        if strategy == "checksum":
            picks.append(("delete", f"{t.g} %% 1000 = %(r)s + 500"))
        n = 0
        with psycopg.connect(dsn) as c:
            for kind, where in picks:
                c.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WHERE {}"
                    ).format(sql.Identifier(f"pick_{kind}"), keys, table, sql.SQL(where)),
                    {"r": rnd},
                )
                c.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(f"pick_{kind}")))
            ready.wait()
            for kind, _ in picks:
                picked = sql.SQL("({}) IN (SELECT {} FROM {})").format(
                    keys, keys, sql.Identifier(f"pick_{kind}")
                )
                if kind == "update":
                    q = sql.SQL("UPDATE {} SET {} WHERE {}").format(
                        table, sql.SQL(t.update), picked
                    )
                elif kind == "delete":
                    q = sql.SQL("DELETE FROM {} WHERE {}").format(table, picked)
                else:
                    q = sql.SQL("INSERT INTO {} SELECT {} FROM {} WHERE {}").format(
                        table, sql.SQL(t.insert), table, picked
                    )
                n += c.execute(q, {"r": rnd}).rowcount
            c.commit()
        done.wait()
        return n

    with ThreadPoolExecutor(len(shape.tables)) as pool:
        futures = [pool.submit(one, i) for i in range(len(shape.tables))]
        try:
            ready.wait()
            started = time.perf_counter()
            done.wait()
        except BrokenBarrierError:
            for f in futures:
                f.result()  # raises the writer's error
            raise
        seconds = time.perf_counter() - started
        n = sum(f.result() for f in futures)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ANALYZE")
    return n, seconds

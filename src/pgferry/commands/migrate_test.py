"""``migrate test`` and ``migrate bench``: migrations proven on a scratch database.

Contract: both make a scratch database (on ``env``'s server, whose role needs
``CREATEDB``; by default on the embedded server) and drop it afterwards (unless
``keep``); neither writes to an environment's own database, so no policy applies and
nothing is journaled. Lines for a person are :class:`~pgferry.events.Notice` events.
The work: :mod:`pgferry.migrate.testing` and :mod:`pgferry.migrate.bench`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgferry.commands import base
from pgferry.config import Config
from pgferry.events import Notice, Subscriber
from pgferry.pg.connect import Target

PREFIX = "pgferry_migratetest_"


def scratch(cfg: Config, env: str | None, keep: bool = False) -> AbstractContextManager[Target]:
    """An empty database on ``env``'s server (the role needs CREATEDB; default: the
    embedded server), dropped afterwards unless ``keep``."""
    target = base.target(cfg, env) if env else None

    @contextmanager
    def make() -> Iterator[Target]:
        from pgferry.backup import scratch as bscratch
        from pgferry.pg import embedded

        name = f"{PREFIX}{int(time.time())}_{secrets.token_hex(3)}"
        if target is None:
            idle = cfg.embedded.idle_stop.total_seconds()
            t = Target(
                "scratch",
                embedded.ensure_database(cfg.embedded_dir, name, idle_stop=idle),
                embedded=True,
            )
        else:
            t = Target(
                "scratch", bscratch.create_database(cfg, target, name), embedded=target.embedded
            )
        try:
            yield t
        finally:
            if not keep:
                if target is None:
                    embedded.drop_database(cfg.embedded_dir, name)
                else:
                    bscratch.drop_database(cfg, target, name)

    return make()


def _note(progress: Subscriber | None) -> Any:
    def note(text: str) -> None:
        if progress is not None:
            progress(Notice(text))

    return note


@dataclass
class TestResult:
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data


def test(
    cfg: Config, env: str | None = None, *, keep: bool = False, progress: Subscriber | None = None
) -> TestResult:
    """``migrate test``: up, undo, up of every migration, then ``tests/*.sql``."""
    from pgferry.migrate import testing

    return TestResult(
        testing.run(cfg, lambda: scratch(cfg, env, keep), keep=keep, on_note=_note(progress))
    )


@dataclass(frozen=True)
class BenchOptions:
    script: Path
    env: str | None = None
    p95: str | None = None
    clients: int = 4
    time: str = "10s"
    transactions: int | None = None
    seed: Path | None = None
    keep: bool = False


def bench(cfg: Config, opts: BenchOptions, *, progress: Subscriber | None = None) -> TestResult:
    """``migrate bench``: a pgbench script's p50/p95/p99 on the migrated scratch database."""
    from pgferry.migrate import bench as bench_mod

    return TestResult(
        bench_mod.run(
            cfg,
            lambda: scratch(cfg, opts.env, opts.keep),
            opts.script,
            p95=opts.p95,
            clients=opts.clients,
            seconds=opts.time,
            transactions=opts.transactions,
            seed=opts.seed,
            on_note=_note(progress),
        )
    )

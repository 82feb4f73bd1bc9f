"""One process carries a run at a time (pgferry.jobs.claim), on a real control database.

Another process is played by a connection that holds the run's claim, as a worker or a
``pgferry release --resume`` carrying it would. Then a worker's job for that run, or the
command line's resume, does nothing to the run and says why; once the claim is let go,
the same run is carried out once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pgferry.config import load_config
from pgferry.jobs import claim, runner, runs
from pgferry.jobs.control import Control
from tests.helpers import Project
from tests.helpers.service import make_project


@pytest.fixture
def ctl_project(tmp_path: Path, make_db: Callable[..., str]) -> Iterator[tuple[Project, Control]]:
    p = make_project(tmp_path / "proj", make_db)
    ctl = Control(load_config(p.config)).ensure()
    try:
        yield p, ctl
    finally:
        ctl.close()


def _held(ctl: Control, run_id: str) -> psycopg.Connection:
    """Another process carrying ``run_id``: its claim, held on a connection of its own."""
    c = psycopg.connect(ctl.dsn, autocommit=True)
    assert claim._try(c, run_id)  # the lock a claim takes, taken here
    return c


def _end(ctl: Control, other: psycopg.Connection) -> None:
    """That process ends: close its connection and wait until its server session is gone
    (``close`` returns before the server has ended it and let its locks go)."""
    pid = other.info.backend_pid
    other.close()
    with psycopg.connect(ctl.dsn, autocommit=True) as c:
        for _ in range(500):
            if c.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone() is None:
                return
            time.sleep(0.01)
    raise AssertionError(f"the session {pid} of the closed connection did not end")


def test_a_run_carried_elsewhere_is_not_run_twice(ctl_project: tuple[Project, Control]) -> None:
    p, ctl = ctl_project
    cfg = load_config(p.config)
    run, _ = runs.create(
        ctl, kind="health", env="dev", arguments={"env": "dev"}, requested_by="t", state="queued"
    )
    other = _held(ctl, run.id)
    try:
        assert claim.held_elsewhere(ctl, run.id)
        with pytest.raises(claim.RunElsewhere, match=f"run {run.id} is being carried on by"):
            runner.execute(cfg, ctl, run.id)
        now = runs.get(ctl, run.id)
        assert now is not None and (now.state, now.attempts) == ("queued", 0)
        assert claim.held_elsewhere(ctl, run.id)  # asking let nothing go
    finally:
        _end(ctl, other)  # that process ends: the server lets its claim go
    assert not claim.held_elsewhere(ctl, run.id)
    done = runner.execute(cfg, ctl, run.id)
    assert done is not None and done.final and done.attempts == 1, done


def test_release_resume_of_a_run_carried_elsewhere_says_so_and_touches_nothing(
    ctl_project: tuple[Project, Control],
) -> None:
    p, ctl = ctl_project
    run, _ = runs.create(
        ctl,
        kind="release",
        env="prod",
        arguments={"env": "prod", "source": "dev", "tables": []},
        requested_by="worker",
        state="running",
    )
    other = _held(ctl, run.id)
    try:
        r = p.run("release", "--resume", run.id, "--yes")
    finally:
        other.close()
    assert r.code == 3, r.out + r.err
    assert f"run {run.id} is being carried on by another process" in r.err, r.err
    assert "Traceback" not in r.err
    now = runs.get(ctl, run.id)
    assert now is not None and (now.state, now.attempts) == ("running", 0)

"""The embedded server under a project (issue 10 items 14 and 19): first use under
concurrency, the idle stop, `embedded psql` and `embedded url`.

Each test has its own embedded server in a short /tmp directory (the unix socket path must
stay under 107 bytes) and stops it at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pgferry.pg import embedded

pytestmark = pytest.mark.slow


@pytest.fixture
def project_dir(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A project whose environments live on their own embedded server: (root, server dir)."""
    data = Path("/tmp") / f"pgfe-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "proj"
    (root / "migrations").mkdir(parents=True)
    (root / "pgferry.toml").write_text(
        f"[environments.dev]\n\n[environments.prod]\nprotected = true\n\n"
        f'[embedded]\ndir = "{data}"\n'
    )
    yield root, data
    embedded.stop(data)
    shutil.rmtree(data, ignore_errors=True)


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgferry", "--config", str(root / "pgferry.toml"), *args],
        cwd=root,
        text=True,
        capture_output=True,
        timeout=120,
    )


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def pgferry(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pgferry", "--config", str(root / "pgferry.toml"), *args],
        cwd=root,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_five_parallel_commands_on_a_new_project(project_dir: tuple[Path, Path]) -> None:
    root, _ = project_dir
    (root / "migrations" / "V1__t.sql").write_text("CREATE TABLE t (id int);\n")
    procs = [
        pgferry(root, "migrate", "status", "--env", env, "--json")
        for env in ("dev", "prod", "dev", "prod", "dev")
    ]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    for code, _out, err in results:
        assert code == 0, err
    procs = [pgferry(root, "migrate", "up", "--env", "dev") for _ in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]


def test_not_started_for_a_command_that_fails_first(project_dir: tuple[Path, Path]) -> None:
    root, data = project_dir
    (root / "migrations" / "V1__a.sql").write_text("SELECT 1;\n")
    (root / "migrations" / "V1.0__b.sql").write_text("SELECT 2;\n")  # a duplicate version
    for args in (
        ["migrate", "up"],
        ["migrate", "up", "--target", "x"],
        ["migrate", "up", "--allow-unsafe"],
        ["journal", "--env", "nope"],
    ):
        r = run(root, *args)
        assert r.returncode == 2, (args, r.stderr)
    assert not embedded.is_running(data) and not (data / "pgdata" / "postmaster.pid").exists()


def test_stops_when_idle(project_dir: tuple[Path, Path]) -> None:
    root, data = project_dir
    with (root / "pgferry.toml").open("a") as f:
        f.write('idle_stop = "2s"\n')
    r = run(root, "embedded", "url", "--env", "dev")
    assert r.returncode == 0, r.stderr
    assert embedded.is_running(data)
    mark = data / "last-used"
    with psycopg.connect(r.stdout.strip()) as c:  # a client: not idle
        # the watcher renews the mark each time it sees the client: wait until it has seen
        # it past the idle time (no fixed sleep), and the server is still up
        since = mark.stat().st_mtime
        wait_for(lambda: mark.stat().st_mtime > since + 3, 15, "the watcher to see the client")
        assert embedded.is_running(data)
        assert c.execute("SELECT 1").fetchone() == (1,)
    wait_for(lambda: not embedded.is_running(data), 15, "the idle server to stop")
    wait_for(lambda: not (data / "idle-watch.pid").exists(), 5, "the watcher to end")
    r = run(root, "migrate", "status")  # the next command starts it again
    assert r.returncode == 0 and embedded.is_running(data), r.stderr


def test_embedded_url_and_psql(project_dir: tuple[Path, Path]) -> None:
    root, data = project_dir
    r = run(root, "embedded", "url", "--env", "prod", "--json")
    assert r.returncode == 0, r.stderr
    url = json.loads(r.stdout)["url"]
    assert url.startswith("postgresql://pgferry@/pgferry_prod?host=")
    r = run(
        root,
        "embedded",
        "psql",
        "--env",
        "prod",
        "-At",
        "-c",
        "SELECT current_user || ' ' || current_database()",
    )
    assert r.returncode == 0 and r.stdout.strip() == "pgferry pgferry_prod", r.stderr
    r = run(root, "embedded", "psql", "-c", "SELECT nope")  # psql's own exit code
    assert r.returncode == 1 and "nope" in r.stderr
    r = run(root, "embedded", "status", "--json")
    assert json.loads(r.stdout)["running"] is True
    assert run(root, "embedded", "stop").returncode == 0
    assert not embedded.is_running(data)

"""A real admin service for tests: a project on fresh databases, a control database, tokens,
and ``pgferry serve`` as a real uvicorn process on 127.0.0.1 with a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.helpers import Project, write_project

SECRET = "Sup3rSecretPw42"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVICE = """
[control]
url = "{control}"

[service]
heartbeat = "1s"
stalled_after = "3s"
retries = 1
retry_max_wait = "1s"
auth_failures = 5
auth_window = "60s"

[health]
cache_interval = "60s"
"""


def make_project(
    root: Path, make: Callable[[str], str], extra: str = "", more: tuple[str, ...] = ()
) -> Project:
    # prod's URL carries a password (the embedded server trusts local sockets, so it is
    # never checked): no response, event or log line may show it
    dsns = {
        "dev": make("dev"),
        "prod": make("prod") + f" password={SECRET}",
        **{name: make(name) for name in more},
    }
    control = make("ctl")
    p = write_project(root, dsns, extra=SERVICE.format(control=control) + extra)
    p.write("V1__items.sql", "CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL);\n")
    p.write("U1__items.sql", "DROP TABLE items;\n")
    p.dsns["control"] = control
    return p


def tokens(p: Project, **roles: str) -> dict[str, str]:
    """Tokens by name (``alice="operator"``), made through the command layer's store."""
    from pgferry.config import load_config
    from pgferry.jobs import tokens as tokens_mod
    from pgferry.jobs.control import Control

    ctl = Control(load_config(p.config)).ensure()
    try:
        return {name: tokens_mod.create(ctl, name, role).secret for name, role in roles.items()}
    finally:
        ctl.close()


@dataclass
class Server:
    project: Project
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Server:
        log = open(self.project.root / f"serve-{self.port}.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pgferry",
                "--config",
                str(self.project.config),
                "serve",
                "--port",
                str(self.port),
                *self.args,
            ],
            cwd=self.project.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"pgferry serve exited {self.proc.returncode}: " + self.log()[-2000:]
                )
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("pgferry serve did not answer: " + self.log()[-2000:])

    def log(self) -> str:
        path = self.project.root / f"serve-{self.port}.log"
        return path.read_text() if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def run_events(p: Project, run_id: str) -> list[dict[str, Any]]:
    """Every event of run ``run_id`` as the control database keeps it, in order."""
    with psycopg.connect(p.dsns["control"], autocommit=True) as c:
        return [
            r[0]
            for r in c.execute(
                "SELECT data FROM pgferry_control.run_events WHERE run_id = %s ORDER BY seq",
                [run_id],
            )
        ]


def wait_run(
    c: httpx.Client,
    run_id: str,
    states: tuple[str, ...] = ("succeeded", "problem", "failed", "cancelled", "rejected"),
    timeout: float = 90,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = c.get(f"/api/runs/{run_id}").json()["run"]
        if run["state"] in states:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} is {run.get('state')} after {timeout}s: {run}")


def sse(c: httpx.Client, run_id: str, timeout: float = 60) -> list[tuple[str, dict[str, Any]]]:
    """Every SSE message of a run's stream until it ends: (event name, data)."""
    import json

    out: list[tuple[str, dict[str, Any]]] = []
    name = ""
    with c.stream("GET", f"/api/runs/{run_id}/events", timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[6:])))
    return out


def seed(dsn: str, n: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            "INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, %s) g"
            " ON CONFLICT DO NOTHING",
            [n],
        )


@dataclass
class WorkerProc:
    """``pgferry worker`` as a real process (the server then runs with ``--no-worker``)."""

    project: Project
    proc: subprocess.Popen[str] | None = None

    def start(self) -> WorkerProc:
        log = open(self.project.root / "worker.log", "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgferry", "--config", str(self.project.config), "worker"],
            cwd=self.project.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

"""A real Prometheus for the gate tests: Debian's ``prometheus``, on 127.0.0.1, scraping a
tiny exporter the test controls (:class:`Exporter`). Tests skip, naming the package, where
the binary is missing (``.ci/run`` installs it)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BINARY = os.environ.get("PGFERRY_PROMETHEUS", "/usr/bin/prometheus")


def promtool() -> str:
    """Debian's ``promtool`` (package prometheus); the test skips, naming it, where missing."""
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip(
            "promtool is not installed: apt install prometheus "
            "(.ci/run installs it when it runs as root with apt)"
        )
    return tool


class Exporter:
    """``/metrics`` with the values the test sets (gauges without labels)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = "".join(f"{k} {v}\n" for k, v in sorted(exporter.values.items()))
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set(self, name: str, value: float) -> None:
        self.values[name] = value

    def close(self) -> None:
        self.server.shutdown()


@dataclass
class Prometheus:
    url: str
    exporter: Exporter
    #: (user, password) where it asks for basic auth
    auth: tuple[str, str] | None = None

    def _get(self, path: str) -> urllib.request.Request:
        headers = {}
        if self.auth is not None:
            pair = f"{self.auth[0]}:{self.auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return urllib.request.Request(f"{self.url}{path}", headers=headers)

    def query(self, q: str) -> list[dict[str, object]]:
        with urllib.request.urlopen(self._get(f"/api/v1/query?query={q}"), timeout=5) as r:
            return json.loads(r.read())["data"]["result"]  # type: ignore[no-any-return]

    def wait_for(self, metric: str, value: float, timeout: float = 15) -> None:
        """Until Prometheus has scraped ``metric`` at ``value``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                res = self.query(metric)
                if res and float(res[0]["value"][1]) == value:  # type: ignore[index]
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"Prometheus never saw {metric} = {value}")


def _bcrypt(password: str) -> str:
    """A bcrypt hash (libxcrypt's, through the crypt module: deprecated, gone in 3.13)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    if not hashed or not hashed.startswith("$2"):
        pytest.skip("no bcrypt in this system's crypt(3): basic auth cannot be set up")
    return hashed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(auth: tuple[str, str] | None = None) -> Iterator[Prometheus]:
    """Prometheus and its exporter for as long as the generator runs; skips where it cannot
    be had. ``auth``: the API asks for HTTP basic auth with this user and password."""
    if not (Path(BINARY).is_file() and os.access(BINARY, os.X_OK)) and not shutil.which(
        "prometheus"
    ):
        pytest.skip(
            "Prometheus is not installed: apt install prometheus (Debian's package; "
            ".ci/run installs it when it runs as root)"
        )
    binary = BINARY if Path(BINARY).is_file() else str(shutil.which("prometheus"))
    exporter = Exporter()
    exporter.set("app_p95_seconds", 0.1)
    exporter.set("app_error_ratio", 0.0)
    root = Path(tempfile.mkdtemp(prefix="pgferry-prom-"))
    (root / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: app
    static_configs:
      - targets: ["127.0.0.1:{exporter.port}"]
""")
    port = _free_port()
    web = []
    if auth is not None:  # Prometheus keeps bcrypt hashes of the passwords
        hashed = _bcrypt(auth[1])
        (root / "web.yml").write_text(f"basic_auth_users:\n  {auth[0]}: '{hashed}'\n")
        web = [f"--web.config.file={root / 'web.yml'}"]
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=error",
            *web,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    Prometheus(url, exporter, auth)._get("/-/ready"), timeout=1
                ) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.skip(f"Prometheus did not start: {err[-300:]}")
            time.sleep(0.1)
        p = Prometheus(url, exporter, auth)
        p.wait_for("app_p95_seconds", 0.1)
        yield p
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        exporter.close()
        shutil.rmtree(root, ignore_errors=True)

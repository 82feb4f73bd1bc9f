"""Admin service benchmark: latency of ``GET /api/admin/production-health`` and
``GET /api/runs`` under concurrent clients, against a real ``pgferry serve``.

Run with ``./run bench service`` (or ``python -m bench service``). On a fresh embedded
server in a temp dir: a project with ``dev`` and a protected ``prod`` (migrated, a few
rows), a viewer token, ``--runs`` finished runs in the control database (default 200, so
``/api/runs`` has a page of 50 to read), then ``pgferry serve`` on 127.0.0.1. Each route
in turn gets ``--clients`` keep-alive connections (default 50) asking as fast as they are
answered for ``--seconds`` (default 30). It prints p50/p95/p99 latency per route,
requests per second and errors (non-2xx answers and socket errors); the goal is
p95 < 50 ms and zero errors. A floor row comes first: a bare uvicorn + Starlette app
answering ``{}``, measured by the same generator with the same settings, i.e. what this
machine can do at all. ``--route`` measures only the routes named (after the floor).
``--write-doc`` replaces the "## Service" section of docs/benchmarks.md with the table.

The load generator is wrk (C, ``apt-get install wrk``; ``.ci/run`` installs it) when it
is on PATH, else a lean asyncio client (raw streams, one connection per client) in this
process; the table says which ran. wrk counts an answer of 400 or above as an error
("Non-2xx or 3xx responses"), plus connect, read, write errors and timeouts (2 s); each
route is asked once first and must answer 200. The load average of the machine is
printed before and after (the numbers are only as good as the machine is idle).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench._doc import finish

ROUTES = ("/api/admin/production-health", "/api/runs")
GOAL_P95_MS = 50.0
FLOOR = "floor: bare Starlette `{}`"

#: the floor: the least any route of a uvicorn + Starlette app can cost on this machine
FLOOR_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def empty(request):
    return JSONResponse({})

uvicorn.run(Starlette(routes=[Route("/api/floor", empty)]), host="127.0.0.1",
            port=int(sys.argv[1]), log_level="warning", access_log=False)
"""

#: wrk prints its percentiles through this (the request itself is Lua-free: -H header)
WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %.3f %.3f %.3f %d\\n", summary.requests,
    summary.duration, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass(frozen=True)
class Result:
    name: str
    requests: int
    seconds: float
    p50: float
    p95: float
    p99: float
    errors: int

    def row(self) -> str:
        return (
            f"| {self.name} | {self.requests:,} | {self.requests / self.seconds:,.0f} | "
            f"{self.p50:.1f} | {self.p95:.1f} | {self.p99:.1f} | {self.errors} |"
        )


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def project(work: Path) -> Path:
    root = work / "proj"
    (root / "migrations").mkdir(parents=True)
    (root / "migrations" / "V1__items.sql").write_text(
        "CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL);\n", encoding="utf-8"
    )
    cfg = root / "pgferry.toml"
    cfg.write_text(
        '[environments.dev]\ndatabase = "bs_dev"\n\n'
        '[environments.prod]\ndatabase = "bs_prod"\nprotected = true\n\n'
        f'[embedded]\ndir = "{work / "pg"}"\n\n'
        '[control]\ndatabase = "bs_control"\n\n'
        '[health]\ncache_interval = "30s"\n',
        encoding="utf-8",
    )
    return cfg


def prepare(cfg_path: Path, runs: int) -> str:
    """Migrate, seed, make finished runs; the viewer token."""
    import psycopg

    from pgferry.commands import migrate_run
    from pgferry.config import load_config
    from pgferry.jobs import runs as runs_mod
    from pgferry.jobs import tokens
    from pgferry.jobs.control import Control
    from pgferry.pg.connect import resolve_env

    cfg = load_config(cfg_path)
    for env in ("dev", "prod"):
        migrate_run.up(cfg, migrate_run.RunOptions(env=env, yes=True))
        with psycopg.connect(resolve_env(cfg, env).dsn, autocommit=True) as c:
            c.execute("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
    ctl = Control(cfg).ensure()
    try:
        for i in range(runs):
            runs_mod.create(
                ctl,
                kind="verify",
                env="prod",
                requested_by="bench",
                arguments={"source": "dev", "target": "prod", "tables": []},
                state="succeeded",
                exit_code=0,
                idempotency_key=f"bench-{i}",
                request_hash="bench",
            )
        return tokens.create(ctl, "bench", "viewer").secret
    finally:
        ctl.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def wrk(
    url: str, headers: dict[str, str], clients: int, seconds: float, name: str, tmp: Path
) -> Result:
    script = tmp / "report.lua"
    script.write_text(WRK_REPORT, encoding="utf-8")
    cmd = [
        "wrk",
        "-c",
        str(clients),
        "-t",
        "2",
        "-d",
        f"{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
    ]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    n, dur_us, p50, p95, p99, errors = line.split()[1:]
    return Result(name, int(n), int(dur_us) / 1e6, float(p50), float(p95), float(p99), int(errors))


async def _asyncio_load(
    host: str, port: int, path: str, headers: dict[str, str], clients: int, seconds: float
) -> tuple[list[float], int]:
    """Keep-alive GETs of ``path`` from ``clients`` raw asyncio connections."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode()
    lat: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(request)
        status = int((await reader.readuntil(b"\r\n")).split(b" ", 2)[1])
        length = 0
        for line in (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        return 200 <= status < 300

    async def client() -> None:
        nonlocal errors
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection(host, port)
                ok = await asyncio.wait_for(one(*conn), 30)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                ok, conn = False, None
            lat.append((time.perf_counter() - t) * 1000)
            errors += not ok
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return lat, errors


def python_load(
    url: str, headers: dict[str, str], clients: int, seconds: float, name: str
) -> Result:
    u = httpx.URL(url)
    t0 = time.monotonic()
    lat, errors = asyncio.run(
        _asyncio_load(u.host, u.port or 80, u.raw_path.decode(), headers, clients, seconds)
    )
    took = time.monotonic() - t0
    return Result(name, len(lat), took, pct(lat, 50), pct(lat, 95), pct(lat, 99), errors)


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"{url} did not answer")
        time.sleep(0.2)


@contextmanager
def running(cmd: list[str], cwd: Path, probe: str) -> Iterator[None]:
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ}
    )
    try:
        wait_up(probe, proc)
        yield
    finally:
        proc.terminate()
        proc.wait(30)


def load_avg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(args: argparse.Namespace, tmp: Path, generator: str) -> list[Result]:
    from pgferry.pg import embedded

    def ask(url: str, headers: dict[str, str], name: str) -> Result:
        r = httpx.get(url, headers=headers, timeout=30)  # the first health run fills the cache
        if r.status_code != 200:
            raise SystemExit(f"{url} answered {r.status_code}: {r.text[:300]}")
        if generator == "wrk":
            return wrk(url, headers, args.clients, args.seconds, name, tmp)
        return python_load(url, headers, args.clients, args.seconds, name)

    results = []
    port = _port()
    with running(
        [sys.executable, "-c", FLOOR_APP, str(port)], tmp, f"http://127.0.0.1:{port}/api/floor"
    ):
        results.append(ask(f"http://127.0.0.1:{port}/api/floor", {}, FLOOR))
    cfg = project(tmp)
    try:
        auth = {"Authorization": f"Bearer {prepare(cfg, args.runs)}"}
        port = _port()
        url = f"http://127.0.0.1:{port}"
        with running(
            [sys.executable, "-m", "pgferry", "--config", str(cfg), "serve", "--port", str(port)],
            cfg.parent,
            url + "/api/health",
        ):
            for route in args.route or ROUTES:
                results.append(ask(url + route, auth, f"`GET {route}`"))
    finally:
        embedded.stop(tmp / "pg")
    return results


def markdown(
    results: list[Result], clients: int, seconds: float, generator: str, loads: tuple[str, str]
) -> str:
    lines = [
        "## Service",
        "",
        f"{clients} concurrent keep-alive clients for {seconds:g} s per route against "
        "`pgferry serve` on 127.0.0.1 (in-process worker idle), one route at a time; "
        f"generator: {generator}; goal p95 < 50 ms, zero errors. The floor row is a bare "
        "uvicorn + Starlette app answering `{}`, same generator, same settings. "
        f"Load average (1/5/15 min) before: {loads[0]}, after: {loads[1]} "
        f"({os.cpu_count()} cores).",
        "",
        "| route | requests | req/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [r.row() for r in results]
    lines += [
        "",
        f"With {clients} clients always waiting, the mean latency is {clients} / "
        "(answers per second) (Little's law): p95 < 50 ms needs at least a mean under 50 ms, "
        f"that is more than {clients / 0.05:,.0f} answers a second from the one server "
        "process. What one answer costs here (wall time per answer, one route at a "
        "time):",
        "",
    ]
    lines += [
        f"- {r.name}: {1000 * r.seconds / max(r.requests, 1):.2f} ms, so a mean of "
        f"{clients * 1000 * r.seconds / max(r.requests, 1):.0f} ms"
        for r in results
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench service")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--route", action="append", choices=ROUTES, help="only this route (repeatable)")
    ap.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args(list(argv or []))
    if args.write_doc and args.route:
        ap.error("--write-doc measures every route: leave out --route")
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    label = (
        "wrk (-t 2, Lua only to print p95)"
        if generator == "wrk"
        else "asyncio keep-alive client (raw streams, in the bench's process)"
    )
    before = load_avg()
    print(f"generator: {label}; load average before: {before}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pgfb-", dir="/tmp") as tmp:
        results = measure(args, Path(tmp), generator)
    after = load_avg()
    print(f"load average after: {after}")
    section = markdown(results, args.clients, args.seconds, label, (before, after))
    served = [r for r in results if r.name != FLOOR]
    worst = max(r.p95 for r in served)
    verdict = "met" if worst < GOAL_P95_MS and not any(r.errors for r in served) else "NOT met"
    print(f"goal (p95 < {GOAL_P95_MS:g} ms, zero errors): {verdict}")
    return finish("Service", section, args.write_doc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

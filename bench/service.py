"""Admin service benchmark: latency of ``GET /api/admin/production-health`` and
``GET /api/runs`` under concurrent clients, against a real ``pgferry serve``.

Run with ``./run bench service`` (or ``python -m bench service``). On a fresh embedded
server in a temp dir: a project with ``dev`` and a protected ``prod`` (migrated, a few
rows), a viewer token, ``--runs`` finished runs in the control database (default 200, so
``/api/runs`` has a page to read), then ``pgferry serve`` on 127.0.0.1 and ``--clients``
async httpx clients (default 50) asking both routes in turn, as fast as they are answered,
for ``--seconds`` (default 30). It prints p50/p95/p99 latency per route, requests per
second and errors; the goal is p95 < 50 ms and zero errors. ``--write-doc`` replaces the
"## Service" section of docs/benchmarks.md with the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench._doc import finish

ROUTES = ("/api/admin/production-health", "/api/runs")
GOAL_P95_MS = 50.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def project(work: Path) -> Path:
    root = work / "proj"
    (root / "migrations").mkdir(parents=True)
    (root / "migrations" / "V1__items.sql").write_text(
        "CREATE TABLE items (id bigint PRIMARY KEY, v text NOT NULL);\n", encoding="utf-8")
    cfg = root / "pgferry.toml"
    cfg.write_text(
        '[environments.dev]\ndatabase = "bs_dev"\n\n'
        '[environments.prod]\ndatabase = "bs_prod"\nprotected = true\n\n'
        f'[embedded]\ndir = "{work / "pg"}"\n\n'
        '[control]\ndatabase = "bs_control"\n\n'
        '[health]\ncache_interval = "30s"\n', encoding="utf-8")
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
            runs_mod.create(ctl, kind="verify", env="prod", requested_by="bench",
                            arguments={"source": "dev", "target": "prod", "tables": []},
                            state="succeeded", exit_code=0, idempotency_key=f"bench-{i}",
                            request_hash="bench")
        return tokens.create(ctl, "bench", "viewer").secret
    finally:
        ctl.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def load(url: str, token: str, clients: int, seconds: float
               ) -> tuple[dict[str, list[float]], dict[str, int]]:
    lat: dict[str, list[float]] = {r: [] for r in ROUTES}
    errors: dict[str, int] = {r: 0 for r in ROUTES}
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as ac:

        async def client(n: int) -> None:
            i = n
            while time.monotonic() < stop:
                route = ROUTES[i % 2]
                i += 1
                t = time.perf_counter()
                try:
                    r = await ac.get(route)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                lat[route].append((time.perf_counter() - t) * 1000)
                if not ok:
                    errors[route] += 1

        await asyncio.gather(*(client(n) for n in range(clients)))
    return lat, errors


def markdown(lat: dict[str, list[float]], errors: dict[str, int], clients: int,
             seconds: float) -> str:
    lines = ["## Service", "",
             f"{clients} concurrent clients for {seconds:g} s against `pgferry serve` on "
             "127.0.0.1 (in-process worker idle), both routes in turn; goal p95 < 50 ms, "
             "zero errors.", "",
             "| route | requests | req/s | p50 ms | p95 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|"]
    for r in ROUTES:
        v = lat[r]
        lines.append(f"| `GET {r}` | {len(v):,} | {len(v) / seconds:,.0f} | "
                     f"{pct(v, 50):.1f} | {pct(v, 95):.1f} | {pct(v, 99):.1f} | {errors[r]} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench service")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args(list(argv or []))
    from pgferry.pg import embedded

    with tempfile.TemporaryDirectory(prefix="pgfb-", dir="/tmp") as tmp:
        work = Path(tmp)
        cfg = project(work)
        proc: subprocess.Popen[bytes] | None = None
        try:
            token = prepare(cfg, args.runs)
            port = _port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "pgferry", "--config", str(cfg), "serve", "--port",
                 str(port)], cwd=cfg.parent, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env={**os.environ})
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("pgferry serve did not start")
                time.sleep(0.2)
            httpx.get(url + ROUTES[0], headers={"Authorization": f"Bearer {token}"},
                      timeout=30)  # the first health run fills the cache
            lat, errors = asyncio.run(load(url, token, args.clients, args.seconds))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
            embedded.stop(work / "pg")
    section = markdown(lat, errors, args.clients, args.seconds)
    worst = max(pct(lat[r], 95) for r in ROUTES)
    verdict = "met" if worst < GOAL_P95_MS and not any(errors.values()) else "NOT met"
    print(f"goal (p95 < {GOAL_P95_MS:g} ms, zero errors): {verdict}")
    return finish("Service", section, args.write_doc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

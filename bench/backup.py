"""Backup benchmark: ``pgferry backup create`` and ``verify --restore-test`` against plain
``pg_dump -Fd -j 2`` and ``pg_restore -j 2``, side by side in one run.

Run with ``./run bench backup`` (or ``python -m bench backup``). On a fresh embedded
server in a temp dir, with the sync bench's data (~``--rows`` rows over three tables
with bigint, uuid and composite keys and text, jsonb, numeric, timestamptz and bytea
columns; default 2,000,000, ``PGFERRY_BENCH_ROWS``), each round measures, in
alternating order:

1. ``pgferry backup create --jobs 2`` vs ``pg_dump -Fd -j 2`` of the same database
   with the same pg_dump binary and compression; goal ratio <= 1.1;
2. ``pgferry backup verify ID --restore-test --jobs 2`` vs ``pg_restore -j 2
   --no-owner`` of the plain dump into an empty database (made before the clock
   starts); goal <= 1.2.

Times are wall clock of whole processes (pgferry's interpreter start-up included);
the ratio is of the medians over ``--rounds`` (default 3). ``--write-doc`` replaces
the "## Backup" section of docs/benchmarks.md with the measured table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

from bench._doc import finish
from bench.backup_data import fill, schema
from bench.sync_run import must, timed
from pgferry.pg import binaries, embedded

JOBS = 2


def pgferry(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pgferry", "--config", str(config), *args]


def project(work: Path) -> Path:
    root = work / "proj"
    root.mkdir(parents=True)
    cfg = root / "pgferry.toml"
    cfg.write_text(
        '[environments.bench]\ndatabase = "b_src"\n\n'
        f'[embedded]\ndir = "{work / "pg"}"\n\n'
        f'[backup]\ndir = "{work / "backups"}"\njobs = {JOBS}\n',
        encoding="utf-8",
    )
    return cfg


def wait_for_scratch_drop(pg: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(embedded.superuser_dsn(pg), autocommit=True) as c:
        while time.monotonic() < deadline:
            row = c.execute(
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgferry\\_restoretest\\_%'"
            ).fetchone()
            if row == (0,):
                return
            time.sleep(0.05)
    raise SystemExit("the test restore's scratch database was not dropped")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench(rows: int, rounds: int, work: Path) -> dict[str, object]:
    pg = work / "pg"
    src = embedded.ensure_database(pg, "b_src")
    print(f"generating {rows:,} rows ...", flush=True)
    t = time.perf_counter()
    schema(src)
    fill(src, rows)
    print(f"  generated in {time.perf_counter() - t:.1f}s", flush=True)
    cfg = project(work)
    pg_dump = binaries.find("pg_dump", 18)
    pg_restore = binaries.find("pg_restore", 18)
    conninfo, env = binaries.libpq_args(src)
    comp = "zstd" if binaries.supports_zstd(pg_dump.path) else "gzip"
    times: dict[str, list[float]] = {
        "create": [],
        "pg_dump": [],
        "verify": [],
        "pg_restore": [],
        "drop": [],
    }
    sizes: dict[str, int] = {}

    def one_round(r: int) -> None:
        print(f"round {r + 1} of {rounds}", flush=True)
        plain = work / f"plain{r}"

        def ours() -> None:
            run = must(
                timed(
                    pgferry(
                        cfg, "--json", "backup", "create", "--env", "bench", "--jobs", str(JOBS)
                    )
                ),
                "pgferry backup create",
            )
            times["create"].append(run.seconds)
            print(f"  pgferry backup create: {run.seconds:.2f}s", flush=True)

        def theirs() -> None:
            run = must(
                timed(
                    [
                        str(pg_dump.path),
                        "-Fd",
                        "-j",
                        str(JOBS),
                        "-Z",
                        comp,
                        "-f",
                        str(plain),
                        "-d",
                        conninfo,
                    ],
                    env=env,
                ),
                "pg_dump",
            )
            times["pg_dump"].append(run.seconds)
            print(f"  pg_dump -Fd -j {JOBS}: {run.seconds:.2f}s", flush=True)

        for step in (ours, theirs) if r % 2 == 0 else (theirs, ours):
            step()
        latest = sorted((work / "backups" / "bench").iterdir())[-1]
        sizes.update(pgferry=du(latest), pg_dump=du(plain))

        def verify() -> None:
            run = must(
                timed(
                    pgferry(
                        cfg,
                        "--json",
                        "backup",
                        "verify",
                        latest.name,
                        "--restore-test",
                        "--jobs",
                        str(JOBS),
                    )
                ),
                "pgferry backup verify --restore-test",
            )
            times["verify"].append(run.seconds)
            print(f"  pgferry backup verify --restore-test: {run.seconds:.2f}s", flush=True)
            # its scratch database is dropped by a detached process after the command
            # returns: wait for that (not timed with either side), so the next step does
            # not share the machine with it, and report how long it took
            t = time.perf_counter()
            wait_for_scratch_drop(pg)
            times["drop"].append(time.perf_counter() - t)
            print(f"    (its scratch database gone {times['drop'][-1]:.2f}s later)", flush=True)

        def restore() -> None:
            name = f"b_restore{r}"
            dsn = embedded.ensure_database(pg, name)  # an empty database, before the clock
            ci, env2 = binaries.libpq_args(dsn)
            run = must(
                timed(
                    [str(pg_restore.path), "-j", str(JOBS), "--no-owner", "-d", ci, str(plain)],
                    env=env2,
                ),
                "pg_restore",
            )
            times["pg_restore"].append(run.seconds)
            print(f"  pg_restore -j {JOBS} into an empty database: {run.seconds:.2f}s", flush=True)
            embedded.drop_database(pg, name)

        for step in (verify, restore) if r % 2 == 0 else (restore, verify):
            step()
        shutil.rmtree(plain)

    for r in range(rounds):
        one_round(r)
    # what every pgferry command pays before it does anything: interpreter, imports,
    # config, the embedded server's handle (best of three)
    times["startup"] = [
        must(timed(pgferry(cfg, "backup", "list", "--env", "bench")), "pgferry backup list").seconds
        for _ in range(3)
    ]
    with psycopg.connect(src) as c:
        row = c.execute("SELECT pg_database_size(current_database())").fetchone()
    return {
        "times": times,
        "sizes": sizes,
        "db_bytes": int(row[0]) if row else 0,
        "compression": comp,
        "pg_dump": str(pg_dump),
    }


def markdown(
    res: dict[str, object], rows: int, rounds: int, seconds: float, load: tuple[float, float]
) -> str:
    times: dict[str, list[float]] = res["times"]  # type: ignore[assignment]
    sizes: dict[str, int] = res["sizes"]  # type: ignore[assignment]
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        "## Backup",
        "",
        f"`./run bench backup` (bench/backup.py): {rows:,} generated rows in three tables "
        f"(the sync bench's data; database {res['db_bytes'] / 1e6:.0f} MB), one embedded "
        f"PostgreSQL 18 server, {os.cpu_count()} CPU cores, jobs = {JOBS} on both sides, "
        f"{res['pg_dump']} with {res['compression']} compression for both (this build of "
        f"pg_dump has no zstd). {rounds} rounds in alternating order, one run of "
        f"{seconds:.0f}s; 1-minute load average {load[0]:.1f} before it started and "
        f"{load[1]:.1f} at the end (mostly the bench's own). Times are wall clock of whole "
        "processes, pgferry's interpreter start-up included; ratios are of the medians.",
        "",
        "| measure | pgferry | plain | ratio | goal | |",
        "|---|---|---|---|---|---|",
    ]

    def row(what: str, a: str, b: str, goal: float) -> None:
        ratio = med[a] / med[b]
        each = (
            f"{', '.join(f'{x:.2f}' for x in times[a])} vs "
            f"{', '.join(f'{x:.2f}' for x in times[b])}"
        )
        lines.append(
            f"| {what} | {med[a]:.2f}s | {med[b]:.2f}s | {ratio:.2f} | <= {goal} | "
            f"{'met' if ratio <= goal else 'MISSED'} |"
        )
        print(
            f"{what}: {med[a]:.2f}s vs {med[b]:.2f}s = {ratio:.2f} (goal <= {goal}); "
            f"rounds: {each}",
            flush=True,
        )

    row("`backup create` / `pg_dump -Fd -j 2`", "create", "pg_dump", 1.1)
    row(
        "`backup verify --restore-test` / `pg_restore -j 2` into an empty database",
        "verify",
        "pg_restore",
        1.2,
    )
    drop = statistics.median(times["drop"])
    both = (med["verify"] + drop) / med["pg_restore"]
    lines.append(
        f"| the same, counting the scratch database's drop after the command returned "
        f"(+{drop:.2f}s) | {med['verify'] + drop:.2f}s | {med['pg_restore']:.2f}s | "
        f"{both:.2f} | - | |"
    )
    print(f"verify + scratch drop: {med['verify'] + drop:.2f}s = {both:.2f}", flush=True)
    start = min(times["startup"])
    lines.append(
        f"| pgferry start-up alone (`backup list`: interpreter, imports, config; best "
        f"of 3) | {start:.2f}s | | | | |"
    )
    lines += [
        "",
        f"Every round: create {', '.join(f'{x:.2f}' for x in times['create'])} s, pg_dump "
        f"{', '.join(f'{x:.2f}' for x in times['pg_dump'])} s; verify --restore-test "
        f"{', '.join(f'{x:.2f}' for x in times['verify'])} s, pg_restore "
        f"{', '.join(f'{x:.2f}' for x in times['pg_restore'])} s. Backup size: pgferry "
        f"{sizes['pgferry'] / 1e6:.1f} MB (dump, manifest), pg_dump "
        f"{sizes['pg_dump'] / 1e6:.1f} MB.",
        "",
        "What pgferry does on top: `create` counts every table's rows in the dump's own "
        "snapshot while pg_dump runs, hashes every file (sha256, two threads) and writes the "
        "manifest (fsync, rename); `verify --restore-test` re-hashes every file, reads the "
        "table of contents, creates and drops the scratch database and counts every table "
        "after the restore (two connections). The files are hashed while pg_restore runs. "
        "The scratch database is dropped by a detached process once the result is written "
        "(dropping a database of the dump's size takes the server about a second here); "
        "the bench waits for it between steps, untimed, and the last row adds it.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench backup", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rows", type=int, default=int(os.environ.get("PGFERRY_BENCH_ROWS", "2000000"))
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--write-doc",
        action="store_true",
        help="replace the '## Backup' section of docs/benchmarks.md",
    )
    args = ap.parse_args(list(argv) if argv is not None else None)
    work = Path(tempfile.mkdtemp(prefix="pgfbb-", dir="/tmp"))
    load0 = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        res = bench(args.rows, args.rounds, work)
    finally:
        embedded.stop(work / "pg")
        shutil.rmtree(work, ignore_errors=True)
    section = markdown(
        res, args.rows, args.rounds, time.perf_counter() - started, (load0, os.getloadavg()[0])
    )
    return finish("Backup", section, args.write_doc)


if __name__ == "__main__":
    raise SystemExit(main())

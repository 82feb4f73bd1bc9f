"""Lint benchmark: pgferry lint vs squawk over 1,000 generated migrations, in one run.

Run with ``./run bench lint`` (or ``python -m bench lint``). It

1. writes the corpus (``bench/lint_corpus.py``, seed 42) under ``bench/.work/`` and
   compiles pgferry's bytecode (as an install would; see :func:`compile_bytecode`);
2. times one ``pgferry lint --format json`` command over the whole corpus (it forks
   one worker per CPU) and one
   ``squawk --reporter json`` process over the same files (best of 3 wall times)
   and prints the ratio (goal: pgferry <= 2x squawk);
3. times a single file, start-up included (median of 15 runs; goal < 150 ms);
4. times a project's history (``bench/lint_history.py``: 320 versioned files that
   build on each other, 3 repeatable ones, and the catalog of a target that ran
   all but the last 20): ``pgferry lint --catalog FILE --all DIR`` (the same
   files squawk gets), ``pgferry lint --catalog FILE DIR`` (the CI recipe:
   applied files skipped), and squawk over every file (best of 3 each);
5. compares findings for every rule both tools have: the sets of (file, line)
   must agree, except where pgferry is deliberately more precise; each such
   difference is put in a named category (documented in docs/lint.md) and
   anything left over is printed as unexplained.

Both tools lint with their default rules, plus pgferry's opt-in timeout rules
because squawk reports those by default. ``--write-doc`` replaces the "## Lint"
section of docs/benchmarks.md with the measured table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import lint_corpus, lint_history
from bench._bytecode import compile_bytecode
from bench._doc import write_section

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
DOC = ROOT / "docs" / "benchmarks.md"
BIN = Path(sys.executable).parent
PGFERRY = BIN / "pgferry"
SQUAWK = BIN / "squawk"


def _timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall seconds, CPU seconds user+sys of the child, result)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=WORK)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu, proc


def best_of(cmd: list[str], runs: int) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Best wall and best CPU time over ``runs`` runs, and the last result."""
    walls, cpus, proc = [], [], None
    for _ in range(runs):
        wall, cpu, proc = _timed(cmd)
        walls.append(wall)
        cpus.append(cpu)
    assert proc is not None
    return min(walls), min(cpus), proc


def median_of(cmd: list[str], runs: int) -> tuple[float, float, float]:
    """Median wall, median CPU and best wall time over ``runs`` runs."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, _ = _timed(cmd)
        walls.append(wall)
        cpus.append(cpu)
    return statistics.median(walls), statistics.median(cpus), min(walls)


def squawk_map() -> dict[str, set[str]]:
    """squawk rule name -> the pgferry rules that check the same thing."""
    from pgferry.lint.rules import ALL_RULES

    out: dict[str, set[str]] = defaultdict(set)
    for r in ALL_RULES:
        for s in r.squawk:
            out[s].add(r.name)
    out["require-timeout-settings"] = set()  # an alias squawk reports under the split names
    return out


# -- classification of differences --------------------------------------------


def _facts(text: str) -> dict[str, Any]:
    from pgferry.sqltext.model import split

    return {
        # the runner's own verdict (one SQL front end): CONCURRENTLY & co., or an
        # ADD VALUE whose label the file uses, take a file out of its transaction
        "transactional": split(text, "f.sql").transactional,
        "explicit_tx": "BEGIN;" in text.upper(),
    }


def _retyped_before(line_text: str, file_text: str) -> bool:
    stmt = line_text.strip()
    return (
        "TYPE" in stmt.upper()
        and file_text.count(stmt) > 1
        and file_text.index(stmt) < file_text.rindex(stmt)
    )


def classify(rule: str, side: str, line_text: str, file_text: str) -> str | None:
    """The documented reason pgferry deliberately differs, or None when unexplained."""
    f = _facts(file_text)
    lt = line_text.upper()
    if rule == "prefer-robust-stmts" and side == "squawk" and f["transactional"]:
        return "file runs in pgferry's per-file transaction, so a failure rolls it back"
    if "NEW_T" in lt:
        return "table created earlier in the same file (no rows, nobody uses it yet)"
    if rule == "transaction-nesting" and side == "pgferry" and f["transactional"]:
        return "BEGIN/COMMIT inside the transaction pgferry already runs the file in"
    if (
        rule == "constraint-missing-not-valid"
        and side == "squawk"
        and re.search(r"UNIQUE|PRIMARY KEY|EXCLUDE", lt)
    ):
        return "UNIQUE/PRIMARY KEY cannot be NOT VALID; reported by their own rules"
    if rule == "constraint-missing-not-valid" and side == "squawk" and "FOREIGN KEY" in lt:
        return "a FOREIGN KEY without NOT VALID is reported once, by adding-foreign-key-constraint"
    if (
        rule == "changing-column-type"
        and side == "squawk"
        and _retyped_before(line_text, file_text)
    ):
        return "the column already has that type (changed earlier in the file): no rewrite"
    if rule == "constraint-missing-not-valid" and side == "pgferry" and "VALIDATE" in lt:
        return "VALIDATE in the same (per-file) transaction as ADD ... NOT VALID"
    if rule in ("require-lock-timeout", "require-statement-timeout"):
        return (
            "squawk also counts CREATE DOMAIN / DROP DATABASE as the first lock-taking "
            "statement; pgferry only statements that lock a table"
        )
    return None


def agreement(
    corpus: list[Path], pf: list[dict[str, Any]], sq: list[dict[str, Any]]
) -> dict[str, Any]:
    mapping = squawk_map()
    texts = {p.name: p.read_text(encoding="utf-8") for p in corpus}
    per_rule: dict[str, dict[str, Any]] = {}
    unexplained: list[str] = []
    categories: dict[str, int] = defaultdict(int)
    squawk_only_rules: set[str] = set()
    for sname in sorted({f["rule_name"] for f in sq} | set(mapping)):
        ours = mapping.get(sname)
        if not ours:
            if any(f["rule_name"] == sname for f in sq) and sname != "require-timeout-settings":
                squawk_only_rules.add(sname)
            continue
        s_set = {(Path(f["file"]).name, f["line"] + 1) for f in sq if f["rule_name"] == sname}
        p_set = {(Path(f["path"]).name, f["line"]) for f in pf if f["rule"] in ours}
        both = s_set & p_set
        diffs = [("squawk", x) for x in sorted(s_set - p_set)] + [
            ("pgferry", x) for x in sorted(p_set - s_set)
        ]
        explained = 0
        for side, (fname, line) in diffs:
            text = texts.get(fname, "")
            line_text = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
            why = classify(sname, side, line_text, text)
            if why:
                explained += 1
                categories[f"{sname}: {why}"] += 1
            else:
                unexplained.append(f"{sname} only in {side}: {fname}:{line}: {line_text.strip()}")
        per_rule[sname] = {
            "both": len(both),
            "squawk_only": len(s_set - p_set),
            "pgferry_only": len(p_set - s_set),
            "explained": explained,
        }
    return {
        "rules": per_rule,
        "categories": dict(categories),
        "unexplained": unexplained,
        "squawk_only_rules": sorted(squawk_only_rules),
    }


def run(count: int, runs: int) -> dict[str, Any]:
    compiled = compile_bytecode()
    corpus_dir = WORK / "lint-corpus"
    corpus = lint_corpus.write(corpus_dir, count)
    cfg = WORK / "lint-bench.toml"
    cfg.write_text(
        '[lint]\nenable = ["require-lock-timeout", "require-statement-timeout"]\n'
        '[migrate]\ndir = "lint-corpus"\n',
        encoding="utf-8",
    )
    pf_cmd = [str(PGFERRY), "--config", str(cfg), "lint", "--format", "json", str(corpus_dir)]
    sq_cmd = [str(SQUAWK), "--reporter", "json", *[str(p) for p in corpus]]
    pf_t, pf_cpu, pf_proc = best_of(pf_cmd, runs)
    sq_t, sq_cpu, sq_proc = best_of(sq_cmd, runs)
    if pf_proc.returncode not in (0, 1):
        raise SystemExit(f"pgferry lint failed ({pf_proc.returncode}): {pf_proc.stderr}")
    pf = json.loads(pf_proc.stdout)["findings"]
    sq = json.loads(sq_proc.stdout or "[]")
    hist = history(cfg, runs)
    one = corpus[0]
    one_pf, one_pf_cpu, one_pf_min = median_of(
        [str(PGFERRY), "--config", str(cfg), "lint", str(one)], 15
    )
    one_sq, one_sq_cpu, one_sq_min = median_of([str(SQUAWK), str(one)], 15)
    one_bare, one_bare_cpu, _ = median_of([sys.executable, "-c", "pass"], 15)
    return {
        "files": len(corpus),
        "statements": sum(p.read_text().count(";") for p in corpus),
        "load": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "pgferry_s": pf_t,
        "squawk_s": sq_t,
        "ratio": pf_t / sq_t,
        "pgferry_cpu_s": pf_cpu,
        "squawk_cpu_s": sq_cpu,
        "cpu_ratio": pf_cpu / sq_cpu,
        "pgferry_findings": len(pf),
        "squawk_findings": len(sq),
        "single_pgferry_ms": one_pf * 1000,
        "single_squawk_ms": one_sq * 1000,
        "single_pgferry_cpu_ms": one_pf_cpu * 1000,
        "single_squawk_cpu_ms": one_sq_cpu * 1000,
        "single_pgferry_min_ms": one_pf_min * 1000,
        "single_squawk_min_ms": one_sq_min * 1000,
        "python_startup_ms": one_bare * 1000,
        "python_startup_cpu_ms": one_bare_cpu * 1000,
        "agreement": agreement(corpus, pf, sq),
        "compiled": compiled,
        "history": hist,
    }


def history(cfg: Path, runs: int) -> dict[str, Any]:
    """Step 4 of the module docstring: a history of files that build on each other."""
    files, catalog = lint_history.write(WORK / "lint-history")
    base = [
        str(PGFERRY),
        "--config",
        str(cfg),
        "lint",
        "--catalog",
        str(catalog),
        "--format",
        "json",
    ]
    every_t, every_cpu, every = best_of([*base, "--all", str(WORK / "lint-history")], runs)
    ci_t, ci_cpu, ci = best_of([*base, str(WORK / "lint-history")], runs)
    sq_t, sq_cpu, sq = best_of([str(SQUAWK), "--reporter", "json", *map(str, files)], runs)
    for proc in (every, ci):
        if proc.returncode not in (0, 1):
            raise SystemExit(f"pgferry lint failed ({proc.returncode}): {proc.stderr}")
    every_out, ci_out = json.loads(every.stdout), json.loads(ci.stdout)
    return {
        "files": len(files),
        "statements": sum(p.read_text().count(";") for p in files),
        "pending": ci_out["files"],
        "skipped": ci_out["skipped"],
        "tables": len(json.loads(catalog.read_text())["tables"]),
        "all_s": every_t,
        "all_cpu_s": every_cpu,
        "ci_s": ci_t,
        "ci_cpu_s": ci_cpu,
        "squawk_s": sq_t,
        "squawk_cpu_s": sq_cpu,
        "all_findings": len(every_out["findings"]),
        "ci_findings": len(ci_out["findings"]),
        "squawk_findings": len(json.loads(sq.stdout or "[]")),
    }


def render(res: dict[str, Any]) -> str:
    ag = res["agreement"]
    rows = [
        "## Lint",
        "",
        f"`./run bench lint` on {platform.machine()} ({platform.python_implementation()} "
        f"{platform.python_version()}, squawk-cli from PyPI), "
        f"{res['files']} generated migration files (~{res['statements']} statements, seed 42).",
        "Corpus times are the best of 3 runs, one command per tool over the whole corpus",
        "(squawk runs several threads; pgferry forks one worker per CPU for many files);",
        "single-file times are the median of 15 runs, interpreter start-up included.",
        f"The history rows lint `bench/lint_history.py`'s project: {res['history']['files']} "
        f"files (~{res['history']['statements']} statements) that",
        "build on each other, with the catalog snapshot of a target that ran all but the last",
        f"20 ({res['history']['tables']} tables, sizes and history); `--all` lints every file, "
        "as squawk does, the CI",
        "recipe (`pgferry lint --catalog FILE`) only the files the target has not run.",
        "CPU is user+sys of the command and its workers (getrusage); wall clock depends on",
        f"the machine's load, which was {res['load']:.1f} on {res['cpus']} cores during this run.",
        *(
            [
                "pgferry's bytecode was compiled first, as `pip install` does (the sandbox sets",
                "PYTHONDONTWRITEBYTECODE=1, so an editable "
                "checkout would recompile on every start).",
            ]
            if res.get("compiled")
            else []
        ),
        "",
        "| measure | pgferry | squawk | ratio | goal |",
        "|---|---|---|---|---|",
        f"| 1,000 files, one command, wall | {res['pgferry_s']:.2f} s | {res['squawk_s']:.2f} s "
        f"| {res['ratio']:.2f}x | <= 2x |",
        f"| 1,000 files, one command, CPU | {res['pgferry_cpu_s']:.2f} s | "
        f"{res['squawk_cpu_s']:.2f} s | {res['cpu_ratio']:.2f}x | |",
        f"| one file, start-up included, median wall | {res['single_pgferry_ms']:.0f} ms | "
        f"{res['single_squawk_ms']:.0f} ms | "
        f"{res['single_pgferry_ms'] / res['single_squawk_ms']:.1f}x | < 150 ms |",
        f"| one file, start-up included, best wall | {res['single_pgferry_min_ms']:.0f} ms | "
        f"{res['single_squawk_min_ms']:.0f} ms | | < 150 ms |",
        f"| one file, start-up included, CPU | {res['single_pgferry_cpu_ms']:.0f} ms | "
        f"{res['single_squawk_cpu_ms']:.0f} ms | | |",
        f"| findings | {res['pgferry_findings']} | {res['squawk_findings']} | | |",
        *_history_rows(res["history"]),
        "",
        f"(A bare `python -c pass` takes {res['python_startup_ms']:.0f} ms wall, "
        f"{res['python_startup_cpu_ms']:.0f} ms CPU here.) The history rows are bound by "
        "start-up: squawk's whole run",
        "over those files is shorter than pgferry's start-up (the one-file rows); pgferry's "
        "lint of",
        "the files themselves takes about as long again.",
        "",
        "Agreement on the (file, line) findings of every rule both tools have:",
        "",
        "| squawk rule | both | only squawk | only pgferry | explained |",
        "|---|---|---|---|---|",
    ]
    for name, r in sorted(ag["rules"].items()):
        rows.append(
            f"| {name} | {r['both']} | {r['squawk_only']} | {r['pgferry_only']} | "
            f"{r['explained']} |"
        )
    rows += [
        "",
        "Every difference falls in a deliberate category (see docs/lint.md, "
        '"Where pgferry differs from squawk"):',
        "",
    ]
    for cat, n in sorted(ag["categories"].items()):
        rows.append(f"- {cat}: {n}")
    rows += ["", f"Unexplained differences: {len(ag['unexplained'])}."]
    if ag["squawk_only_rules"]:
        rows.append(
            f"squawk rules pgferry has no counterpart for in this corpus: "
            f"{', '.join(ag['squawk_only_rules'])}."
        )
    return "\n".join(rows) + "\n"


def _history_rows(h: dict[str, Any]) -> list[str]:
    n = h["files"]
    return [
        f"| history of {n} files with a catalog, `--all`, wall | {h['all_s']:.2f} s | "
        f"{h['squawk_s']:.2f} s | {h['all_s'] / h['squawk_s']:.2f}x | |",
        f"| history of {n} files with a catalog, `--all`, CPU | {h['all_cpu_s']:.2f} s | "
        f"{h['squawk_cpu_s']:.2f} s | {h['all_cpu_s'] / h['squawk_cpu_s']:.2f}x | |",
        f"| history, CI recipe ({h['pending']} pending, {h['skipped']} applied skipped), wall "
        f"| {h['ci_s']:.2f} s | {h['squawk_s']:.2f} s (all {n}) | | |",
        f"| history findings (`--all` / CI recipe) | {h['all_findings']} / "
        f"{h['ci_findings']} | {h['squawk_findings']} | | |",
    ]


def write_doc(section: str) -> None:
    write_section("Lint", section, DOC)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench lint", description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--write-doc",
        action="store_true",
        help="replace the '## Lint' section of docs/benchmarks.md",
    )
    ap.add_argument("--show", type=int, default=20, help="unexplained differences to print")
    args = ap.parse_args(list(argv) if argv is not None else None)
    WORK.mkdir(parents=True, exist_ok=True)
    res = run(args.files, args.runs)
    section = render(res)
    print(section)
    for line in res["agreement"]["unexplained"][: args.show]:
        print("unexplained:", line)
    if args.write_doc:
        write_doc(section)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

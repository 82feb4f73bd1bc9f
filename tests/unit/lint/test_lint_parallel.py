"""Linting many files on forked workers gives exactly the serial result: same findings in
the same order, the same first error, also when files depend on tables earlier files
created (the state that crosses files) and when a worker fails."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pgferry.errors import PgferryError, SqlParseError
from pgferry.lint.engine import Linter, Settings
from pgferry.lint.parallel import MIN_FILES, _lint_tracked, _merge, _Plan, _Result, lint_many
from pgferry.lint.snapshot import from_dict

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

STATEMENTS = [
    "CREATE TABLE {a} (id int PRIMARY KEY, email varchar(20), qty int);",
    "CREATE INDEX {a}_email ON {a} (email);",
    "ALTER TABLE {a} ADD COLUMN note text;",
    "ALTER TABLE {a} ALTER COLUMN email TYPE varchar(40);",
    "ALTER TABLE {a} ALTER COLUMN email SET NOT NULL;",
    "ALTER TABLE {a} ADD CONSTRAINT {a}_nn CHECK (qty IS NOT NULL) NOT VALID;",
    "ALTER TABLE {a} VALIDATE CONSTRAINT {a}_nn;",
    "ALTER TABLE {a} ALTER COLUMN qty SET NOT NULL;",
    "ALTER TABLE {a} RENAME TO {b};",
    "DROP TABLE {a};",
    "ALTER TABLE {a} DROP COLUMN note;",
    "CREATE INDEX CONCURRENTLY {a}_qty ON {a} (qty);",
    "DROP INDEX {b}_email;",  # the index's table: from the run's state, else the catalog
    "CREATE TABLE IF NOT EXISTS {a} (id int);",
]
SETTINGS = Settings(enable=["require-lock-timeout", "require-statement-timeout"])
#: a target where t0 and t1 have rows, t2 is empty and the others do not exist yet
CATALOG = from_dict(
    {
        "server_version": 180000,
        "tables": {
            "public.t0": {
                "rows": 5000,
                "heap_bytes": 1 << 20,
                "total_bytes": 2 << 20,
                "columns": {"email": "character varying(20)"},
                "indexes": [
                    {"name": "t0_email", "columns": ["email"], "unique": False, "valid": True}
                ],
            },
            "public.t1": {"rows": 80, "heap_bytes": 8192, "total_bytes": 16384},
            "public.t2": {"rows": 0, "heap_bytes": 0, "total_bytes": 8192},
        },
    }
)
#: files the catalog's history says ran: their tables are not new in later files
APPLIED = frozenset(f"V{i}__f.sql" for i in range(1, 400, 7))
#: without a catalog only the per-file state matters; with one (and an applied history),
#: tables pending files create carry from file to file
MODES = {
    "plain": lambda: Linter(SETTINGS),
    "catalog": lambda: Linter(SETTINGS, catalog=CATALOG, applied=APPLIED),
}


def corpus(n: int, tables: int, seed: int) -> list[tuple[str, str]]:
    """``n`` files over ``tables`` table names: few names make files depend on each other."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        body = [
            rng.choice(STATEMENTS).format(
                a=f"t{rng.randrange(tables)}", b=f"t{rng.randrange(tables)}"
            )
            for _ in range(rng.randint(1, 5))
        ]
        out.append((f"V{i + 1}__f.sql", "\n".join(body) + "\n"))
    return out


def serial(items: list[tuple[str, str]], mode: str = "catalog") -> list[dict[str, Any]]:
    return [f.to_dict() for f in MODES[mode]().lint_files(items)]


def parallel(
    items: list[tuple[str, str]],
    jobs: int,
    load: Callable[[int], tuple[str, str]] | None = None,
    mode: str = "catalog",
) -> list[dict[str, Any]]:
    found = lint_many(MODES[mode](), len(items), load or (lambda i: items[i]), jobs)
    return [f.to_dict() for f in found]


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("jobs", [2, 3, 5])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_files_that_share_tables_lint_as_in_one_process(seed: int, jobs: int, mode: str) -> None:
    items = corpus(MIN_FILES * 3, tables=6, seed=seed)
    want = serial(items, mode)
    # the case is real: linted without the earlier files' state, the later files differ
    half = len(items) // 2
    later = {name for name, _ in items[half:]}
    assert serial(items[half:], mode) != [f for f in want if f["path"] in later]
    assert parallel(items, jobs, mode=mode) == want


def test_with_a_catalog_new_tables_cross_files_and_applied_files_do_not_count() -> None:
    """The state the parallel run must carry exactly: with a catalog, a table a pending
    file created (absent from the catalog) is new in later files; one an applied file
    created is not; without a catalog none is."""
    index = "require-concurrent-index-creation"
    strict = []
    for seed in (1, 2, 3):
        items = corpus(MIN_FILES * 3, tables=6, seed=seed)
        plain = {(f["path"], f["line"]) for f in serial(items, "plain") if f["rule"] == index}
        both = {(f["path"], f["line"]) for f in serial(items, "catalog") if f["rule"] == index}
        everything_pending = {
            (f.path, f.line)
            for f in Linter(SETTINGS, catalog=CATALOG).lint_files(items)
            if f.rule == index
        }
        # (not a subset of plain: CREATE TABLE IF NOT EXISTS of a catalog table is not new)
        assert everything_pending <= both and both != plain
        strict.append(everything_pending < both)
    assert any(strict)


def test_parent_replays_accepted_files_before_taking_over(monkeypatch: pytest.MonkeyPatch) -> None:
    n = MIN_FILES * 2
    items = [("V0__shared.sql", "CREATE TABLE shared (id int);\n")]
    items += [
        (f"V{i}__u.sql", f"CREATE TABLE u{i} (id int);\nCREATE INDEX u{i}_x ON u{i} (id);\n")
        for i in range(1, n)
    ]
    late, later = n - 20, n - 10
    # needs file 0's state: a worker alone would call "shared" an existing table
    items[late] = (f"V{late}__s.sql", "CREATE INDEX shared_x ON shared (id);\n")
    # needs the state of a file the worker linted before the conflict (replayed by the parent)
    items[later] = (f"V{later}__u.sql", f"CREATE INDEX u{late - 5}_y ON u{late - 5} (id);\n")
    replayed: list[str] = []
    replay = Linter.replay_text

    def counting(self: Linter, path: str, text: str) -> None:
        replayed.append(path)
        replay(self, path, text)

    monkeypatch.setattr(Linter, "replay_text", counting)
    want = serial(items)  # (no file of these is applied, and the catalog lacks them)
    assert not [f for f in want if f["rule"] == "require-concurrent-index-creation"]
    assert parallel(items, 2) == want
    assert replayed  # the parent caught up on accepted files before linting one again


def test_independent_files_lint_as_in_one_process() -> None:
    items = corpus(MIN_FILES * 3, tables=100_000, seed=7)
    assert parallel(items, 2) == serial(items)


def test_few_files_or_one_job_stay_serial() -> None:
    items = corpus(MIN_FILES - 1, tables=5, seed=4)
    parent = os.getpid()

    def load(i: int) -> tuple[str, str]:
        assert os.getpid() == parent  # no worker was forked
        return items[i]

    assert parallel(items, 4, load) == serial(items)
    items = corpus(MIN_FILES * 2, tables=5, seed=4)
    assert parallel(items, 1, load) == serial(items)


def test_first_error_in_file_order_wins() -> None:
    items = corpus(MIN_FILES * 2, tables=8, seed=5)
    late = len(items) - 3
    items[late] = (items[late][0], "SELECT 1;\nALTER TABLE t ADDD COLUMN x int;\n")
    with pytest.raises(SqlParseError) as want:
        serial(items)
    with pytest.raises(SqlParseError) as got:
        parallel(items, 2)
    assert str(got.value) == str(want.value) and got.value.details == want.value.details
    assert got.value.details["line"] == 2
    items[3] = (items[3][0], "CREATE TABLE (;\n")  # an earlier bad file, in the parent's slice
    with pytest.raises(SqlParseError) as got:
        parallel(items, 2)
    assert str(got.value).startswith(f"{items[3][0]}:1:")


def test_an_unreadable_file_in_a_worker_fails_as_in_one_process() -> None:
    items = corpus(MIN_FILES * 2, tables=8, seed=6)

    def load(i: int) -> tuple[str, str]:
        if i == len(items) - 5:
            raise PgferryError(f"cannot read {items[i][0]}: Permission denied")
        return items[i]

    with pytest.raises(PgferryError, match="Permission denied"):
        parallel(items, 2, load)


@pytest.mark.parametrize("how", ["raises", "dies"])
def test_a_failing_worker_is_replaced_by_the_parent(how: str) -> None:
    items = corpus(MIN_FILES * 2, tables=4, seed=8)
    parent = os.getpid()

    def load(i: int) -> tuple[str, str]:
        if os.getpid() != parent and i == len(items) - 10:
            if how == "dies":
                os._exit(3)
            raise RuntimeError("a bug that only bites in the worker")
        return items[i]

    assert parallel(items, 2, load) == serial(items)


def test_cli_jobs_give_the_same_output(cli: Callable[..., Any], tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    d.mkdir()
    for name, text in corpus(MIN_FILES + 6, tables=5, seed=9):
        (d / name).write_text(text)
    one = cli("lint", "--format", "json", "-j", "1", str(d), cwd=tmp_path)
    two = cli("lint", "--format", "json", "--jobs", "2", str(d), cwd=tmp_path)
    assert one.code == two.code == 1
    assert one.out == two.out and one.json["summary"]["errors"] > 0
    bad = cli("lint", "--jobs", "0", str(d), cwd=tmp_path)
    assert bad.code == 2 and "--jobs" in bad.err


def merged(
    items: list[tuple[str, str]],
    plan: _Plan,
    owner: dict[int, int],
    workers: int,
    lose: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """What lint_many gives when chunk c was linted by ``owner[c]`` (-1: the parent), as
    the processes would have, and the results of files ``lose`` never arrived."""
    parent = MODES["catalog"]()
    head, first_written = [], set()
    for i in range(plan.first):
        found, _, wrote = _lint_tracked(parent, *items[i])
        head += found
        first_written |= wrote
    at_first = parent.cx.save_state()
    results: dict[int, _Result] = {}
    for n in range(workers):  # a worker: from file 0's state, its chunks in order
        linter = MODES["catalog"]()
        for c in sorted(c for c, o in owner.items() if o == n):
            for i in plan.files(c):
                results[i] = _Result(n, *_lint_tracked(linter, *items[i]))
    for c in (c for c, o in owner.items() if o == -1):  # the parent: each from its slice's end
        parent.cx.restore_state(at_first)
        for i in plan.files(c):
            results[i] = _Result(-1 - c, *_lint_tracked(parent, *items[i]))
    for i in lose:
        results.pop(i, None)
    parent.cx.restore_state(at_first)
    found = head + _merge(parent, lambda i: items[i], plan, results, first_written, workers)
    return [f.to_dict() for f in found]


@pytest.mark.parametrize("seed", range(12))
def test_any_schedule_merges_to_the_serial_result(seed: int) -> None:
    """Whichever process lints which chunk (and whichever results go missing), the merge
    gives the serial findings: the schedule is chosen here, not by the machine's timing."""
    rng = random.Random(seed)
    items = corpus(120, tables=rng.choice([3, 8, 30]), seed=100 + seed)
    plan = _Plan(len(items), rng.randrange(0, 40), rng.choice([1, 3, 7]))
    workers = rng.randint(1, 3)
    owner = {c: rng.randrange(-1, workers) for c in range(plan.chunks)}
    lose = rng.sample(range(plan.first, len(items)), k=len(items) // 10)  # errors, deaths
    assert merged(items, plan, owner, workers, lose) == serial(items)


def test_after_a_stale_file_its_stream_is_not_trusted() -> None:
    """A stream that missed the DROP sees t7 as new, so its RENAME makes t9 new too. The
    truth has no t9, and the index on it needs CONCURRENTLY: once the RENAME is found
    stale, nothing more from that stream may be trusted (t9 is no table the DROP wrote)."""
    items = [
        ("V1.sql", "CREATE TABLE t7 (id bigint);\n"),
        ("V2.sql", "DROP TABLE t7;\n"),
        ("V3.sql", "SELECT 1;\n"),
        ("V4.sql", "ALTER TABLE t7 RENAME TO t9;\n"),
        ("V5.sql", "CREATE INDEX t9_i ON t9 (id);\n"),
    ]
    want = serial(items)
    assert [f["path"] for f in want if f["rule"] == "require-concurrent-index-creation"] == [
        "V5.sql"
    ]
    # the parent's chunk (V4, V5) starts from V1's state and missed the worker's V2
    assert merged(items, _Plan(5, 1, 2), {0: 0, 1: -1}, 1) == want
    # a worker's stream (V1 | V4, V5) missed the parent's chunk (V2, V3)
    items.insert(0, ("V0.sql", "SELECT 0;\n"))
    assert merged(items, _Plan(6, 0, 2), {0: 0, 1: -1, 2: 0}, 1) == serial(items)

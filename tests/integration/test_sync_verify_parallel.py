"""One table compared on several connection pairs at once.

diff_table with ``workers`` must give exactly what one pair gives (counts,
first keys in key order, checksums, the differing ranges), and a verify with
``--jobs`` greater than one reads a big table's whole-table sums on the idle
workers' pairs (physical batches); a sync reads signatures on one pair.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgferry.sync import compare, verify
from pgferry.sync.verify import DiffRange
from pgferry.sync.verify import diff_table as _diff_table
from tests.helpers import Result, write_project
from tests.helpers import sql as run_sql
from tests.helpers.sync import KINDS, Spec, fill, rows

CHANGES = [
    "UPDATE k SET v = v || '!' WHERE g % 37 = 1",
    "DELETE FROM k WHERE g % 53 = 2",
    "UPDATE k SET n = n + 1 WHERE g BETWEEN 2000 AND 2300",  # a dense stretch
]

#: the chunk-sum and signature paths (integer keys are read packed by default)
diff_table = partial(_diff_table, pack=False)


@pytest.fixture
def dsns(make_db: Callable[..., str]) -> tuple[str, str]:
    return make_db("psrc"), make_db("ptgt")


def _appender(out: list[tuple[int, int]]) -> Callable[[int, int], None]:
    """An on_progress callback that keeps each (done, total) in ``out``."""
    return lambda a, b: out.append((a, b))


def _snapshot_pairs(
    dsns: tuple[str, str], n: int, stack: ExitStack
) -> list[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]]:
    """``n`` (source, target) pairs; all sources share one snapshot, all targets another."""
    pairs: list[list[psycopg.Connection[Any]]] = [[], []]
    for side, dsn in enumerate(dsns):
        first = stack.enter_context(psycopg.connect(dsn))
        first.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = first.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        pairs[side].append(first)
        for _ in range(n - 1):
            c = stack.enter_context(psycopg.connect(dsn))
            c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            c.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(row[0])))
            pairs[side].append(c)
    return list(zip(pairs[0], pairs[1], strict=True))


@pytest.mark.parametrize("kind", ["bigint", "composite"])
@pytest.mark.parametrize("dense", [False, True])
def test_parallel_pairs_give_what_one_pair_gives(
    dsns: tuple[str, str], kind: str, dense: bool
) -> None:
    ddl, key, expr, new = KINDS[kind]
    for dsn in dsns:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(ddl)
            fill(c, expr)
    with psycopg.connect(dsns[1], autocommit=True) as c:
        fill(c, new, "g % 41 = 3")  # rows only in the target
        for change in (
            CHANGES if not dense else [*CHANGES, "UPDATE k SET v = v || '?' WHERE g % 11 = 0"]
        ):
            c.execute(change)
    spec = Spec("k", key, [*key, "g", "v", "n"])
    got: list[tuple[Any, ...]] = []
    for n in (1, 3):
        seen: list[DiffRange] = []
        progress: list[tuple[int, int]] = []
        with ExitStack() as stack:
            (src, tgt), *more = _snapshot_pairs(dsns, n, stack)
            # chunk_rows: 20 chunks would exceed the table, so the boundaries are exact keys
            # (not a random sample) and both runs cut the same ranges
            d = diff_table(
                src,
                tgt,
                spec,
                chunk_rows=400,
                batch_rows=1000,
                key_limit=15,
                workers=more,
                on_range=seen.append,
                on_progress=_appender(progress),
            )
        ranges = sorted(
            (
                str(r.range),
                r.source_rows,
                r.target_rows,
                None if r.diffs is None else sorted(map(str, r.diffs)),
            )
            for r in seen
        )
        got.append((d.to_dict() | {"duration_s": 0}, ranges))
        assert d.differing and d.only_in_target and d.only_in_source
        assert d.chunks >= 12
        assert progress[-1][0] == d.source_rows == progress[-1][1]
    assert got[0] == got[1]


def test_verify_reads_a_big_table_on_idle_workers(
    tmp_path: Path,
    make_db: Callable[..., str],
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compare, "PARALLEL_MIN_ROWS", 1000)
    used: list[int] = []
    real = verify.diff_table

    def spy(*args: Any, **kwargs: Any) -> Any:
        used.append(len(kwargs.get("workers", ())))
        return real(*args, **kwargs)

    monkeypatch.setattr(verify, "diff_table", spy)
    p = write_project(
        tmp_path / "p", {"dev": make_db("bdev"), "prod": make_db("bprod")}, protected=()
    )
    ddl = "CREATE TABLE big (id int PRIMARY KEY, v text, n int);"
    fill_sql = "INSERT INTO big SELECT g, 'v' || g, g FROM generate_series(1, 20000) g;"
    for dsn in p.dsns.values():
        run_sql(dsn, ddl)
        run_sql(dsn, fill_sql)
    run_sql(p.dsns["dev"], "ANALYZE big")
    run_sql(
        p.dsns["prod"],
        "UPDATE big SET v = 'old' WHERE id % 97 = 0; DELETE FROM big WHERE "
        "id % 89 = 1; INSERT INTO big VALUES (99999, 'extra', 0);",
    )
    cfg = ("--config", str(p.config))
    r = cli(*cfg, "verify", "dev", "prod", "--jobs", "3", "--json")
    assert r.code == 1, r.err + r.out
    (t,) = r.json["tables"]
    assert (t["differing"], t["only_in_source"], t["only_in_target"]) == (204, 225, 1)
    assert used == [2]  # one table, three workers: two idle ones lend their pairs
    r = cli(*cfg, "sync", "dev", "prod", "--jobs", "3", "--json")
    assert r.code == 0, r.err + r.out
    (t,) = r.json["tables"]
    assert (t["updated"], t["inserted"], t["deleted"]) == (204, 225, 1)
    assert rows(p.dsns["dev"], "big") == rows(p.dsns["prod"], "big")
    # a sync reads every chunk's signature in one streamed scan a side: no helpers
    assert used[1:] == [0]
    assert cli(*cfg, "verify", "dev", "prod", "--jobs", "1").code == 0
    assert used[2:] == [0]

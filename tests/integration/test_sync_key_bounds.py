"""Chunk bounds at a key type's least value are read back as that value (issue 16).

A range's bounds reach the server in two ways: as parameters, and bound on the
client into a ``COPY (SELECT ...)`` (COPY takes no parameters). There
``-2147483648::int4`` would read as ``-(2147483648::int4)``, out of range; the
bounds are cast with ``CAST(... AS type)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.helpers import Result, sql, write_project
from tests.helpers.sync import rows

SCHEMA = "CREATE TABLE pairs (a int, b int, v text, PRIMARY KEY (a, b));"


def test_a_range_bounded_at_the_least_int4_is_copied(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    dev, qa = make_db("kbdev"), make_db("kbqa")
    p = write_project(tmp_path / "p", {"dev": dev, "qa": qa}, protected=())
    for dsn in (dev, qa):
        sql(dsn, SCHEMA)
    # every key's second column is the least int4: every chunk bound is (a, -2147483648)
    sql(
        dev,
        "INSERT INTO pairs SELECT g, -2147483648, 'v' || g FROM generate_series(1, 50000) g;"
        "ANALYZE pairs",
    )
    r = cli("--config", str(p.config), "--json", "sync", "dev", "qa", "--mode", "full")
    assert r.code == 0, r.err + r.out
    # whole chunks missing on the target: their ranges are copied by their bounds
    sql(qa, "DELETE FROM pairs WHERE a BETWEEN 15000 AND 45000")
    r = cli("--config", str(p.config), "--json", "sync", "dev", "qa")
    assert r.code == 0, r.err + r.out
    assert r.json["tables"][0]["inserted"] == 30001
    assert rows(dev, "pairs") == rows(qa, "pairs")

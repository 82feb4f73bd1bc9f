"""A parent of child tables by ``INHERITS`` (not partitions) is refused, not merged.

Reading such a parent reads its children's rows too. Found and fixed here: a sync of
``ev`` (2 rows of its own) and its child ``ev_2025`` (2 rows) wrote the child's rows
into ``ev`` itself, reported both tables ``ok`` and exited 0; the target's ``ev`` then
showed 6 rows, 2 of them twice (the two tables' writes also deadlocked twice on the way).
Now such a parent fails with one sentence and nothing is written to it; its children
are synced as tables of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.helpers import Result, q, run_json, sql, write_project

SCHEMA = """
CREATE TABLE ev (id int PRIMARY KEY, at date NOT NULL, v text);
CREATE TABLE ev_2025 (CHECK (at < '2026-01-01')) INHERITS (ev);
ALTER TABLE ev_2025 ADD PRIMARY KEY (id);
"""


def test_a_parent_by_inherits_is_refused_and_its_child_synced(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(tmp_path, {"dev": make_db("src"), "stage": make_db("stage")})
    for dsn in p.dsns.values():
        sql(dsn, SCHEMA)
    sql(p.dsns["dev"], "INSERT INTO ev VALUES (1, '2026-02-01', 'a'), (2, '2026-03-01', 'b')")
    sql(
        p.dsns["dev"], "INSERT INTO ev_2025 VALUES (10, '2025-02-01', 'c'), (11, '2025-03-01', 'd')"
    )
    sql(p.dsns["stage"], "INSERT INTO ev VALUES (1, '2026-02-01', 'old')")

    for command in ("sync", "verify"):
        r = run_json(cli, p, command, "dev", "stage")
        assert r.code == 3, r.out + r.err
        parent, child = sorted(r.json["tables"], key=lambda t: t["table"])
        assert parent["status"] == "failed"
        assert "has child tables by INHERITS (public.ev_2025" in parent["error"]
        assert child["status"] == "ok"
    assert q(p.dsns["stage"], "SELECT id, v FROM ONLY ev") == [(1, "old")]
    assert q(p.dsns["stage"], "SELECT id, v FROM ev_2025 ORDER BY id") == [(10, "c"), (11, "d")]

    r = run_json(cli, p, "sync", "dev", "stage", "--exclude", "public.ev")
    assert r.code == 0, r.out + r.err

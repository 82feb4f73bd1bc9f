"""Nondeterministic collations (ICU, case-insensitive) on one side or both.

Such a collation calls values equal that differ byte for byte ('A@x' = 'a@x'), and
hashes a text by its sort key. Found and fixed here:

- a unique index over such a column was set aside for a load: it could not be built
  again after the load, the table kept its duplicates without it, and every later sync
  failed on the rebuild. It stays in place; the row it refuses is a dead letter, as when
  nothing is set aside;
- identical rows hashed differently on the two sides: verify reported every row of the
  table as differing, and a sync rewrote them all; a case-only change was reported but
  never written (the upsert compared in the column's collation). Both now go byte for
  byte (``COLLATE "C"``);
- a key column with such a collation on the target only: two source keys can be one
  target key; the table is refused with one sentence, nothing written.

ICU needs a server built with it: Debian's PostgreSQL 15 is, the embedded build is not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Project, Result, q, run_json, sql, write_project

SOURCE = """
CREATE TABLE u (id int PRIMARY KEY, email text, nick text);
CREATE UNIQUE INDEX u_email ON u (email);
CREATE UNIQUE INDEX u_nick ON u (nick);
CREATE INDEX u_email_plain ON u (email);
INSERT INTO u VALUES (1, 'a@x', 'ann'), (2, 'A@x', 'bob'), (3, 'b@x', 'cy');
CREATE TABLE v (id int PRIMARY KEY, email text, nick text);
CREATE UNIQUE INDEX v_email ON v (email);
CREATE UNIQUE INDEX v_nick ON v (nick);
CREATE INDEX v_email_plain ON v (email);
INSERT INTO v SELECT g, 'm' || g || '@x', 'n' || g FROM generate_series(1, 50) g;
"""
TARGET = """
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE u (id int PRIMARY KEY, email text COLLATE ci, nick text);
CREATE UNIQUE INDEX u_email ON u (email);
CREATE UNIQUE INDEX u_nick ON u (nick);
CREATE INDEX u_email_plain ON u (email);
CREATE TABLE v (id int PRIMARY KEY, email text COLLATE ci, nick text);
CREATE UNIQUE INDEX v_email ON v (email);
CREATE UNIQUE INDEX v_nick ON v (nick);
CREATE INDEX v_email_plain ON v (email);
"""


def _indexes(dsn: str, table: str) -> dict[str, bool]:
    return dict(
        q(
            dsn,
            "SELECT indexrelid::regclass::text, indisvalid FROM pg_index"
            " WHERE indrelid = %s::regclass",
            [table],
        )
    )


def test_a_nondeterministic_collation_keeps_the_unique_index_in_place(
    tmp_path: Path, make_db15: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(tmp_path / "v15", {"dev": make_db15("d15"), "stage": make_db15("s15")})
    sql(p.dsns["dev"], SOURCE)
    sql(p.dsns["stage"], TARGET)
    r = run_json(cli, p, "sync", "dev", "stage", "--mode", "full")
    assert r.code == 1, r.out + r.err  # done, with a dead letter
    u, v = sorted(r.json["tables"], key=lambda t: t["table"])
    assert [d["key"] for d in u["dead_letters"]] == [{"id": 2}]
    assert "u_email" in u["dead_letters"][0]["error"]
    assert q(p.dsns["stage"], "SELECT id, email FROM u ORDER BY id") == [(1, "a@x"), (3, "b@x")]
    # v loads without the indexes a byte-wise equality makes sure of; its case-insensitive
    # unique index stayed in place
    assert v["status"] == "ok" and v["inserted"] == 50
    assert sorted(v["rebuilt_indexes"]) == ["v_email_plain", "v_nick", "v_pkey"]
    for table in ("u", "v"):
        valid = _indexes(p.dsns["stage"], table)
        assert len(valid) == 4 and all(valid.values()), valid
    assert q(p.dsns["stage"], "SELECT count(*) FROM pgferry.set_aside") == [(0,)]
    # nothing is left to rebuild: the next run plans and syncs as usual
    r = run_json(cli, p, "sync", "dev", "stage")
    assert r.code == 1, r.out + r.err
    assert r.json["tables"][0]["dead_lettered"] == 1


CI = "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);"
ROWS = """
INSERT INTO p SELECT g, 'user' || g || '@x', ARRAY['t' || g, 'T' || g], 'Note ' || g
FROM generate_series(1, 400) g;
"""


def _pair(make_db15: Callable[..., str], tmp_path: Path, source_ci: bool) -> Project:
    p = write_project(tmp_path / "ci", {"dev": make_db15("d15"), "stage": make_db15("s15")})
    for env, ci in (("dev", source_ci), ("stage", True)):
        coll = " COLLATE ci" if ci else ""
        sql(
            p.dsns[env],
            CI + f"CREATE TABLE p (id int PRIMARY KEY, email text{coll}, tags text[]{coll},"
            f" note varchar(40){coll});",
        )
    sql(p.dsns["dev"], ROWS)
    return p


@pytest.mark.parametrize("source_ci", [False, True], ids=["target-only", "both"])
def test_equal_bytes_compare_equal_and_a_case_change_is_written(
    tmp_path: Path, make_db15: Callable[..., str], cli: Callable[..., Result], source_ci: bool
) -> None:
    p = _pair(make_db15, tmp_path, source_ci)
    r = run_json(cli, p, "sync", "dev", "stage")
    assert r.code == 0, r.out + r.err
    r = run_json(cli, p, "verify", "dev", "stage")
    assert r.code == 0, r.out  # every row reported differing before
    assert r.json["totals"]["matched"] == 400
    sql(
        p.dsns["dev"],
        "UPDATE p SET email = upper(email) WHERE id IN (7, 8);"
        "UPDATE p SET tags[2] = lower(tags[2]), note = lower(note) WHERE id = 9",
    )
    r = run_json(cli, p, "verify", "dev", "stage")
    assert r.code == 1 and r.json["totals"]["differing"] == 3, r.out
    r = run_json(cli, p, "sync", "dev", "stage")
    assert r.code == 0, r.out + r.err
    assert r.json["tables"][0]["updated"] == 3  # 397 rows left alone, 3 case changes written
    assert run_json(cli, p, "verify", "dev", "stage").code == 0
    byte_form = 'SELECT id, email COLLATE "C", tags::text, note::text FROM p ORDER BY id'
    assert q(p.dsns["stage"], byte_form) == q(p.dsns["dev"], byte_form)


def test_a_case_insensitive_key_on_the_target_only_is_refused(
    tmp_path: Path, make_db15: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(tmp_path / "k", {"dev": make_db15("d15"), "stage": make_db15("s15")})
    sql(
        p.dsns["dev"],
        "CREATE TABLE k (k text PRIMARY KEY, v int);INSERT INTO k VALUES ('a', 1), ('A', 2)",
    )
    sql(p.dsns["stage"], CI + "CREATE TABLE k (k text COLLATE ci PRIMARY KEY, v int);")
    r = run_json(cli, p, "sync", "dev", "stage")
    assert r.code == 3, r.out + r.err
    (t,) = r.json["tables"]
    assert t["status"] == "failed" and "nondeterministic collation" in t["error"], t
    assert "key column k" in t["error"]
    assert q(p.dsns["stage"], "SELECT count(*) FROM k") == [(0,)]

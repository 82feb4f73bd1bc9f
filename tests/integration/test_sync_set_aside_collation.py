"""A unique index is set aside only when the source's rows are sure to satisfy it.

On a target whose column has a nondeterministic collation (ICU, case-insensitive), two
values the source keeps apart are equal: set aside, the unique index could not be built
again after the load, the table kept its duplicates without it, and every later sync
failed on the rebuild. Such an index stays in place; the row it refuses is a dead letter,
as it is when nothing is set aside. ICU needs a server built with it: Debian's
PostgreSQL 15 is, the embedded build is not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.helpers import Result, q, run_json, sql, write_project

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

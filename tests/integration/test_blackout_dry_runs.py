"""Dry runs inside a blackout window, on a real server: ``migrate up --dry-run`` and
``sync --dry-run`` change nothing, so the window does not refuse them (exit 0); both say,
in the same first warning, that the real run would be refused, and the real runs still are
(exit 4). Outside a window no such warning is given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.helpers import Cli, q, run, run_json, sql, write_project

BLACKOUT = '[[blackout]]\nfrom = 2020-01-01\nenvs = ["prod"]\nreason = "year-end freeze"\n'
REFUSED = "this dry run changes nothing; a real run is refused"


def test_dry_runs_in_a_blackout_window_are_not_refused_and_say_a_real_run_is(
    tmp_path: Path, make_db: Callable[..., str], cli: Cli
) -> None:
    p = write_project(
        tmp_path / "p", {n: make_db(n) for n in ("dev", "qa", "prod")}, extra=BLACKOUT
    )
    dev, prod = p.dsns["dev"], p.dsns["prod"]
    for dsn in p.dsns.values():
        sql(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    sql(dev, "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5) g")
    p.write("V1__a.sql", "CREATE TABLE a (id int);")

    # sync: the plan is shown (5 rows to insert), its first warning names the window
    r = run_json(cli, p, "sync", "dev", "prod", "--dry-run")
    assert r.code == 0, r.err
    assert r.json["dry_run"] is True and r.json["totals"]["would_insert"] == 5
    synced = r.json["warnings"][0]
    assert synced.startswith("environment 'prod' is in a blackout window (") and REFUSED in synced
    assert "year-end freeze" in synced
    r = run(cli, p, "sync", "dev", "prod", "--dry-run")
    assert r.code == 0 and REFUSED in r.out + r.err, r.out + r.err

    # migrate up: the same, in the same words
    r = run_json(cli, p, "migrate", "up", "--env", "prod", "--dry-run")
    assert r.code == 0, r.err
    assert [s["version"] for s in r.json["steps"]] == ["1"]
    assert r.json["warnings"][0] == synced

    # the real runs are still refused by the window, --yes or not
    assert run(cli, p, "sync", "dev", "prod", "--yes").code == 4
    r = run(cli, p, "migrate", "up", "--env", "prod", "--yes")
    assert r.code == 4 and "blackout window" in r.err
    assert q(prod, "SELECT count(*) FROM t") == [(0,)]
    assert q(prod, "SELECT to_regclass('public.a'), to_regclass('pgferry.journal')") == [
        (None, None)
    ]  # nothing written, not even a journal: a dry run is not journaled

    # outside a window: no such warning
    r = run_json(cli, p, "sync", "dev", "qa", "--dry-run")
    assert r.code == 0 and not any("blackout" in w for w in r.json["warnings"]), r.json
    r = run_json(cli, p, "migrate", "up", "--env", "qa", "--dry-run")
    assert r.code == 0 and not any("blackout" in w for w in r.json["warnings"]), r.json


def test_a_revert_dry_run_in_a_blackout_window_says_a_real_revert_is_refused(
    tmp_path: Path, make_db: Callable[..., str], cli: Cli
) -> None:
    p = write_project(tmp_path / "p", {n: make_db(n) for n in ("dev", "prod")}, extra=BLACKOUT)
    dev, prod = p.dsns["dev"], p.dsns["prod"]
    for dsn in p.dsns.values():
        sql(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    sql(dev, "INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5) g")
    sql(prod, "INSERT INTO t VALUES (9, 'x')")
    r = run_json(
        cli, p, "sync", "dev", "prod", "--yes", "--override-blackout", "--reason", "hotfix"
    )
    assert r.code == 0, r.err
    run_id = r.json["run_id"]
    r = run_json(cli, p, "sync", "revert", run_id, "--dry-run")
    assert r.code == 0, r.err
    assert r.json["dry_run"] is True
    assert (r.json["totals"]["removed"], r.json["totals"]["reinserted"]) == (5, 1)
    assert r.json["warnings"][0].startswith("environment 'prod' is in a blackout window (")
    assert REFUSED in r.json["warnings"][0]
    r = run(cli, p, "sync", "revert", run_id, "--dry-run")
    assert r.code == 0 and REFUSED in r.out + r.err, r.out + r.err
    # the real revert is refused by the window; the rows stay as the sync wrote them
    r = run(cli, p, "sync", "revert", run_id, "--yes")
    assert r.code == 4 and "blackout window" in r.err
    assert q(prod, "SELECT count(*), min(id) FROM t") == [(5, 1)]

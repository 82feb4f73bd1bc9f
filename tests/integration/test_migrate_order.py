"""History ahead of the files (issue 10 item 16): a version below the current one that is not
applied fails like Flyway's validate (exit 1) until `--out-of-order` applies it."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from tests.helpers import Project, Result

Cli = Callable[..., Result]


def test_history_ahead_of_the_files(project: Project, cli: Cli) -> None:
    dev = project.dsns["dev"]

    def m(*args: str) -> Result:
        return cli("--config", str(project.config), "migrate", *args)

    project.write("V1__a.sql", "CREATE TABLE a ();")
    assert m("up").code == 0
    with psycopg.connect(dev, autocommit=True) as c:  # another branch applied V99 here
        c.execute(
            "INSERT INTO flyway_schema_history (installed_rank, version, description,"
            " type, script, checksum, installed_by, execution_time, success)"
            " VALUES (2, '99', 'later', 'SQL', 'V99__later.sql', 1, 'x', 1, true)"
        )
    project.write("V5__new.sql", "CREATE TABLE new ();")
    r = m("up", "--json")
    assert r.code == 1, r.err
    assert r.err.strip() == (
        "error: the history of dev is ahead of the files: 5 (V5__new.sql) is not applied and "
        "below its current version 99, so nothing was run; apply it anyway with "
        "--out-of-order (Flyway's outOfOrder), or renumber above 99"
    )
    assert r.json["details"]["versions"] == ["5"]
    r = m("validate")
    assert r.code == 1 and "5 V5__new.sql: not applied and below the current version 99" in r.out
    r = m("plan")
    assert r.code == 0 and "-- warning: the history of dev is ahead of the files" in r.out
    assert "-- nothing to apply" in r.out
    r = m("plan", "--out-of-order", "--json")
    assert [s["script"] for s in r.json["steps"]] == ["V5__new.sql"]
    r = m("up", "--out-of-order", "--json")
    assert r.code == 0, r.err
    assert [a["script"] for a in r.json["applied"]] == ["V5__new.sql"]
    assert r.json["current_version"] == "99"
    assert m("validate").code == 0
    assert m("up").code == 0


def test_global_options_after_the_command(project: Project, cli: Cli) -> None:
    project.write("V1__a.sql", "CREATE TABLE a ();")
    cfg = str(project.config)
    r = cli("migrate", "up", "--config", cfg, "--json")
    assert r.code == 0 and r.json["current_version"] == "1", r.err
    r = cli("migrate", "--json", "status", f"--config={cfg}")
    assert r.code == 0 and r.json["current_version"] == "1", r.err
    r = cli("journal", "--config", cfg, "--debug", "--json")
    assert r.code == 0 and r.json["entries"][0]["command"] == "migrate up", r.err
    r = cli("env", "check", "--config", cfg)
    assert r.code == 0, r.err


def test_undo_after_out_of_order_takes_back_the_last_applied(project: Project, cli: Cli) -> None:
    """V2 applied out of order after V3: `migrate undo` runs U2 (Flyway's undo: the most
    recently applied), not U3; V3's table stays."""
    dev = project.dsns["dev"]

    def m(*args: str) -> Result:
        return cli("--config", str(project.config), "migrate", *args)

    for v, t in ((1, "a"), (3, "c")):
        project.write(f"V{v}__{t}.sql", f"CREATE TABLE {t} ();")
        project.write(f"U{v}__{t}.sql", f"DROP TABLE {t};")
    assert m("up").code == 0
    project.write("V2__b.sql", "CREATE TABLE b ();")
    project.write("U2__b.sql", "DROP TABLE b;")
    assert m("up", "--out-of-order").code == 0
    r = m("undo", "--json")
    assert r.code == 0, r.err
    assert [u["script"] for u in r.json["applied"]] == ["U2__b.sql"], r.json
    with psycopg.connect(dev) as c:
        tables = c.execute(
            "SELECT array_agg(relname ORDER BY relname) FROM pg_class"
            " WHERE relname IN ('a', 'b', 'c') AND relkind = 'r'"
        ).fetchone()
    assert tables == (["a", "c"],)

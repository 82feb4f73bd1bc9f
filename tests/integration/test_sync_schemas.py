"""A sync or verify whose configured schemas hold none of the source's tables says so.

Before, a project whose tables live in schema ``app`` (``[sync] schemas`` defaults to
``public``) synced and verified nothing and said "ok", exit 0: a false match.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.helpers import Project, Result, run_json, sql, write_project

APP = """
CREATE SCHEMA app;
CREATE TABLE app.users (id int PRIMARY KEY, email text);
INSERT INTO app.users SELECT g, 'u' || g FROM generate_series(1, 20) g;
"""


def pair(tmp_path: Path, make_db: Callable[..., str], extra: str = "") -> Project:
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=(), extra=extra
    )
    sql(p.dsns["dev"], APP)
    sql(p.dsns["prod"], APP.replace("'u' || g", "'old' || g"))
    return p


def prod_emails(p: Project) -> list[str]:
    with psycopg.connect(p.dsns["prod"]) as c:
        return [r[0] for r in c.execute("SELECT email FROM app.users ORDER BY id")]


def test_schemas_holding_no_source_table_are_bad_input_not_ok(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = pair(tmp_path, make_db)
    before = prod_emails(p)
    for cmd in (["sync", "dev", "prod"], ["verify", "dev", "prod"]):
        r = run_json(cli, p, *cmd)
        assert r.code == 2, r.out + r.err
        assert r.json["message"] == (
            "nothing to compare: no table of dev is in [sync] schemas (public); its tables "
            'are in app: set [sync] schemas = ["public", "app"] in pgferry.toml'
        )
    assert prod_emails(p) == before


def test_with_the_schema_configured_the_same_sync_runs(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = pair(tmp_path, make_db, '[sync]\nschemas = ["app"]\n')
    r = run_json(cli, p, "sync", "dev", "prod")
    assert r.code == 0, r.out + r.err
    assert [(t["table"], t["updated"]) for t in r.json["tables"]] == [("app.users", 20)]
    assert prod_emails(p) == [f"u{g}" for g in range(1, 21)]
    assert run_json(cli, p, "verify", "dev", "prod").code == 0


def test_tables_naming_a_schema_not_synced_says_where_to_add_it(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = pair(tmp_path, make_db)
    for dsn in p.dsns.values():
        sql(dsn, "CREATE TABLE public.t (id int PRIMARY KEY)")
    r = run_json(cli, p, "sync", "dev", "prod", "--tables", "app.users")
    assert r.code == 2, r.out + r.err
    assert r.json["message"] == (
        "--tables names table 'app.users', whose schema app is not synced: "
        '[sync] schemas = ["public"] in pgferry.toml; add it there'
    )


def test_an_empty_source_still_syncs_nothing_and_says_ok(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """No table in any schema: nothing to compare is the truth, not a misconfiguration."""
    p = write_project(
        tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")}, protected=()
    )
    r = run_json(cli, p, "verify", "dev", "prod")
    assert r.code == 0, r.out + r.err
    assert r.json["tables"] == []

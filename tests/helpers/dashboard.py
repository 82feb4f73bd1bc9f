"""A project worth looking at, for the dashboard's tests: dev and staging with the same rows,
a protected prod one migration behind (its pending file has a lint finding) and empty, row
thresholds, a backup, tokens of every role, and ``pgferry serve`` over it (one process per
test module)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg

from tests.helpers import Project
from tests.helpers.service import Server, make_project, seed, tokens

THRESHOLDS = """
[health.tables."public.items"]
degraded_below = {degraded}
critical_below = {critical}
"""
ROLES = {
    "vera": "viewer",
    "olga": "operator",
    "alice": "approver",
    "bob": "approver",
    "root": "admin",
}


def dashboard_project(root: Path, make: Callable[[str], str], rows: int = 500) -> Project:
    from pgferry.commands import backup, migrate_run
    from pgferry.config import load_config

    p = make_project(
        root,
        make,
        extra=THRESHOLDS.format(degraded=rows * 5 // 6, critical=rows // 6),
        more=("staging",),
    )
    cfg = load_config(p.config)
    migrate_run.up(cfg, migrate_run.RunOptions(env="prod", yes=True))
    # prod stays one behind; int (not bigint) is a lint warning the migrations page shows
    p.write(
        "V2__items_weight.sql",
        "ALTER TABLE items ADD COLUMN weight int;\n"
        "CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL);\n",
    )
    cfg = load_config(p.config)
    for env in ("dev", "staging"):
        migrate_run.up(cfg, migrate_run.RunOptions(env=env, yes=True))
        seed(p.dsns[env], rows)
        with psycopg.connect(p.dsns[env], autocommit=True) as c:
            c.execute(
                "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, %s) g",
                [rows // 10],
            )
    backup.create(cfg, backup.CreateOptions(env="dev"))
    return p


def serve(p: Project) -> Iterator[tuple[Server, dict[str, str]]]:
    toks = tokens(p, **ROLES)
    srv = Server(p).start()
    try:
        yield srv, toks
    finally:
        srv.stop()


def login(srv: Server, token: str) -> httpx.Client:
    """A browser-like client logged in through the form (cookies kept, no bearer header)."""
    c = httpx.Client(base_url=srv.url, timeout=60, follow_redirects=False)
    r = c.get("/login")
    assert r.status_code == 200, r.text
    r = c.post("/login", data={"csrf": form_csrf(r.text), "token": token, "next": "/"})
    assert r.status_code == 303, r.text
    return c


def form_csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, "no CSRF field in the page"
    return m.group(1)

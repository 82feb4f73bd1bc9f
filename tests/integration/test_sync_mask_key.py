"""The masking key never appears in SQL text: not in pg_stat_activity, not in the server log
of a failing query (issue 9, item 10)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.helpers import Project, Result, sql, write_project

KEY = "leaky-mask-key-Zq7Xw3Vt9"


def _server_log(admin_dsn: str) -> Path | None:
    """The embedded test server's log file (None when the suite runs elsewhere)."""
    if os.environ.get("PGFERRY_TEST_DSN"):
        return None
    host = psycopg.conninfo.conninfo_to_dict(admin_dsn).get("host") or ""
    log = Path(str(host)) / "log"
    return log if log.is_file() else None


def test_the_key_is_never_in_sql_text(
    tmp_path: Path,
    make_db: Callable[..., str],
    pg_admin_dsn: str,
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p: Project = write_project(
        tmp_path / "p",
        {"prod": make_db("prod"), "staging": make_db("staging")},
        protected=("prod",),
        extra='[sync.mask]\n"public.people.email" = "email"\n'
        '"public.people.note" = "sql:CASE WHEN {col} = \'boom\' '
        'THEN (1 / (length({col}) - 4))::text ELSE md5({key} || {col}) END"\n',
    )
    ddl = (
        "CREATE TABLE people (id int PRIMARY KEY, email text, note text);"
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$;"
        "CREATE TRIGGER slow BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION slow();"
    )
    for dsn in p.dsns.values():
        sql(dsn, ddl)
    sql(
        p.dsns["prod"],
        "INSERT INTO people SELECT g, 'p' || g || '@x.org', 'n' || g FROM generate_series(1, 30) g",
    )
    monkeypatch.setenv("PGFERRY_MASK_KEY", KEY)
    # while a sync runs, every query any session shows
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
            while not stop.is_set():
                seen.extend(
                    r[0] or ""
                    for r in c.execute(
                        "SELECT query FROM pg_stat_activity WHERE application_name LIKE 'pgferry%'"
                    )
                )
                time.sleep(0.01)

    th = threading.Thread(target=watch)
    th.start()
    try:
        r = cli("--config", str(p.config), "sync", "prod", "staging")
    finally:
        stop.set()
        th.join()
    assert r.code == 0, r.out + r.err
    assert any("current_setting('pgferry.mask_key')" in q for q in seen)  # the watch saw them
    assert not any(KEY in q or KEY.encode().hex() in q for q in seen)
    # a query that fails with the masking expression in it goes to the server log
    log = _server_log(pg_admin_dsn)
    assert log is not None or os.environ.get("PGFERRY_TEST_DSN")
    before = log.stat().st_size if log else 0
    sql(p.dsns["prod"], "UPDATE people SET note = 'boom' WHERE id = 3")
    r = cli("--config", str(p.config), "sync", "prod", "staging")
    assert r.code == 3 and "division by zero" in r.out + r.err
    assert KEY not in r.out + r.err
    if log is not None:
        text = log.read_text(errors="replace")[before:]
        # the failing statement is logged: the masking expression itself, or the FETCH
        # from the cursor whose declaration held it (the comparison streams signatures)
        assert "division by zero" in text
        assert "pgferry.mask_key" in text or 'FROM "pgferry_signatures"' in text
        assert KEY not in text and KEY.encode().hex() not in text

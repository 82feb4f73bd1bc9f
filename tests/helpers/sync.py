"""Data and small readers the sync and verify tests share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql as psql

from tests.helpers import Project

SCHEMA = """
CREATE TABLE customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
    email text, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id serial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
    amount numeric(12,2) NOT NULL, doc jsonb, blob bytea,
    total numeric GENERATED ALWAYS AS (amount * 2) STORED);
CREATE TABLE order_lines (order_id int REFERENCES orders ON DELETE CASCADE, line int,
    sku text NOT NULL, PRIMARY KEY (order_id, line));
CREATE TABLE nokey (a int, b text);
"""

DATA = """
INSERT INTO customers (name, email) SELECT 'c' || g, 'c' || g || '@x.org'
    FROM generate_series(1, 300) g;
INSERT INTO orders (customer_id, amount, doc, blob)
    SELECT 1 + g % 300, g, jsonb_build_object('g', g), '\\x00ff'::bytea
    FROM generate_series(1, 1200) g;
INSERT INTO order_lines SELECT o, l, 'sku' || l FROM generate_series(1, 1200) o,
    generate_series(1, 2) l;
INSERT INTO nokey SELECT g, 'n' || g FROM generate_series(1, 50) g;
"""

TABLES = ("customers", "orders", "order_lines", "nokey")

#: the sync's writer sessions (``application_name``)
WRITER = "pgferry sync writer"


def active_backend(c: psycopg.Connection[Any], pattern: str, app: str = "pgferry%") -> int | None:
    """The pid of a session whose ``application_name`` is LIKE ``app``, active on a query
    matching the regex ``pattern``; None when there is none."""
    row = c.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s"
        " AND state = 'active' AND query ~ %s",
        [app, pattern],
    ).fetchone()
    return int(row[0]) if row else None


def wait_for_backend(dsn: str, proc: Any, pattern: str, app: str = "pgferry%") -> int:
    """Wait (up to 60 s) until :func:`active_backend` finds one, while ``proc`` runs; its
    pid. On timeout the error says what pgferry's sessions were doing."""
    deadline = time.monotonic() + 60
    with psycopg.connect(dsn, autocommit=True) as c:
        while (pid := active_backend(c, pattern, app)) is None:
            assert proc.poll() is None, proc.communicate()
            if time.monotonic() > deadline:
                seen = c.execute(
                    "SELECT application_name, state, left(query, 120) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'pgferry%%'"
                ).fetchall()
                raise AssertionError(f"no {app} session ran {pattern!r} within 60 s: {seen}")
            time.sleep(0.02)
    return pid


#: application_name of a sync's source sessions (pgferry.sync.copy.SourceSnapshot): the
#: coordinator that holds the run's snapshot, and the workers that import it
SOURCE_SESSIONS = ("pgferry sync coordinator", "pgferry sync worker")


def end_source_sessions(dsn: str) -> int:
    """End every source session of a running sync in ``dsn``'s database (as a failover or
    an admin's ``pg_terminate_backend`` would); how many were ended."""
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000))"
            " FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = ANY(%s)",
            [list(SOURCE_SESSIONS)],
        ).fetchone()
    return int(row[0]) if row else 0


def ddl_pair(
    tmp_path: Any, make_db: Any, ddl: str, make_target: Any = None
) -> tuple[Any, str, str]:
    """A project of two fresh databases, dev and an unprotected prod, both with ``ddl``:
    (its config path, dev's DSN, prod's DSN). ``make_target``: prod's maker (another
    server), when not ``make_db``."""
    from tests.helpers import write_project

    dev, prod = make_db("dev"), (make_target or make_db)("prod")
    for dsn in (dev, prod):
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(ddl)
    p = write_project(tmp_path / "p", {"dev": dev, "prod": prod}, protected=())
    return p.config, dev, prod


def rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()  # noqa: S608


def same(p: Project, tables: tuple[str, ...] = TABLES) -> None:
    for t in tables:
        assert rows(p.dsns["dev"], t) == rows(p.dsns["prod"], t), t


@dataclass
class Spec:
    """A TableSpec for tests (same attributes as sync.plan.TablePlan)."""

    name: str
    key: tuple[str, ...]
    columns: list[str]
    schema: str = "public"
    where: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def qualname(self) -> str:
        return f"{self.schema}.{self.name}"


#: rows :func:`fill` writes
SCATTERED_ROWS = 6000

# (DDL, key columns, key expressions of g: the rows, and a new row's key)
KINDS = {
    "bigint": (
        "CREATE TABLE k (id bigint PRIMARY KEY, g int, v text, n numeric)",
        ("id",),
        "g::bigint * 1000003",
        "g::bigint * 1000003 + 1",
    ),
    "uuid": (
        "CREATE TABLE k (id uuid PRIMARY KEY, g int, v text, n numeric)",
        ("id",),
        "md5(g::text)::uuid",
        "md5('new' || g)::uuid",
    ),
    "text": (
        "CREATE TABLE k (id text PRIMARY KEY, g int, v text, n numeric)",
        ("id",),
        "'key-' || g",
        "'key-' || g || '-new'",
    ),
    "composite": (
        "CREATE TABLE k (tenant int, code text, g int, v text, n numeric, "
        "PRIMARY KEY (tenant, code))",
        ("tenant", "code"),
        "g % 7, 'c' || g",
        "g % 7 + 100, 'c' || g",
    ),
}
FILL = "INSERT INTO k SELECT {}, g, 'v' || g, g / 7.0 FROM generate_series(1, %s) g WHERE {}"


def fill(c: psycopg.Connection[Any], key: str, where: str = "TRUE") -> None:
    # the fragments go into a query with a parameter: their % must be doubled
    frags = (psql.SQL(f.replace("%", "%%")) for f in (key, where))
    c.execute(psql.SQL(FILL).format(*frags), [SCATTERED_ROWS])


#: a table with a watermark column, and the [sync] settings that sync it by watermark
WATERMARK_DDL = """CREATE TABLE events (id int PRIMARY KEY, v text,
                              updated_at timestamptz NOT NULL DEFAULT now());"""
WATERMARK_CONF = """[sync]
overlap = "0s"
[sync.tables."public.events"]
watermark = "updated_at"
"""


# -- the target's catalog, as the set-aside tests compare it ----------------------------------


def indexes(dsn: str) -> dict[str, tuple[int, str]]:
    """Every index of the public schema: name -> (OID, definition)."""
    with psycopg.connect(dsn) as c:
        return {
            r[0]: (r[1], r[2])
            for r in c.execute(
                "SELECT c.relname, c.oid::int, pg_get_indexdef(c.oid) "
                "FROM pg_index i JOIN pg_class c"
                " ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public'"
            )
        }


def definitions(dsn: str) -> dict[str, str]:
    """Every index of the public schema: name -> definition."""
    return {n: d for n, (_, d) in indexes(dsn).items()}


def constraints(dsn: str) -> list[str]:
    """Every constraint of the public schema: "name definition", sorted."""
    with psycopg.connect(dsn) as c:
        return sorted(
            f"{r[0]} {r[1]}"
            for r in c.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE connamespace = 'public'::regnamespace"
            )
        )


def recorded(dsn: str) -> list[str]:
    """The names pgferry.set_aside holds (what an interrupted sync left to rebuild)."""
    with psycopg.connect(dsn) as c:
        if c.execute("SELECT to_regclass('pgferry.set_aside')").fetchone() == (None,):
            return []
        return sorted(r[0] for r in c.execute("SELECT name FROM pgferry.set_aside"))


def results_of(monkeypatch: Any, module: Any, name: str) -> list[Any]:
    """Every result ``module.name`` returns from now on (it still runs, as it is)."""
    seen: list[Any] = []
    real = getattr(module, name)

    def spy(*args: Any, **kw: Any) -> Any:
        got = real(*args, **kw)
        seen.append(got)
        return got

    monkeypatch.setattr(module, name, spy)
    return seen


def slow_len(dsn: str, seconds_a_row: float, index: str | None = None) -> None:
    """(Re)define ``slow_len(text)``: ``length``, after a sleep of that many seconds a row.

    ``index`` (DDL that uses ``slow_len``: an index or a check), when given, runs after it.
    A test builds its index with the function fast (0) and makes it slow afterwards, so
    that it waits for the one slow build it kills, not for every build before it (an
    index's or a check's definition does not hold the function's body).
    """
    body = (
        psql.SQL("BEGIN PERFORM pg_sleep({}); RETURN length($1); END").format(seconds_a_row)
        if seconds_a_row
        else psql.SQL("BEGIN RETURN length($1); END")
    )
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(
            psql.SQL(
                "CREATE OR REPLACE FUNCTION slow_len(text) RETURNS int IMMUTABLE "
                "LANGUAGE plpgsql AS {}"
            ).format(psql.Literal(body.as_string(c)))
        )
        if index:
            c.execute(index.encode())

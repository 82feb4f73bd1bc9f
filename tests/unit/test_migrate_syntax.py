"""Syntax a newer server needs, found in the parse tree (issue 10 item 9), and the preflight's
sentences (item 6), without a database."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgferry.migrate.files import parse_name
from pgferry.migrate.plan import Step
from pgferry.migrate.preflight import Facts, notes, problems
from pgferry.migrate.statements import ParsedFile, parse_sql
from pgferry.pg.connect import Target


@pytest.mark.parametrize(
    ("sql", "feature", "major"),
    [
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", "MERGE", 15),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING *",
            "MERGE ... RETURNING",
            17,
        ),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED BY SOURCE THEN DELETE",
            "MERGE ... WHEN NOT MATCHED BY SOURCE",
            17,
        ),
        ("CREATE UNIQUE INDEX ON t (a) NULLS NOT DISTINCT", "UNIQUE NULLS NOT DISTINCT", 15),
        (
            "ALTER TABLE t ADD CONSTRAINT u UNIQUE NULLS NOT DISTINCT (a)",
            "UNIQUE NULLS NOT DISTINCT",
            15,
        ),
        (
            "CREATE VIEW v WITH (security_invoker = true) AS SELECT 1",
            "CREATE VIEW ... WITH (security_invoker)",
            15,
        ),
        (
            "SELECT '1' IS JSON",
            "SQL/JSON predicates and constructors (IS JSON, JSON_OBJECT, JSON_ARRAY)",
            16,
        ),
        (
            "SELECT * FROM JSON_TABLE('[1]'::jsonb, '$[*]' COLUMNS (x int PATH '$'))",
            "JSON_TABLE",
            17,
        ),
        (
            "SELECT JSON_VALUE('{}'::jsonb, '$.a')",
            "SQL/JSON query functions (JSON_EXISTS, JSON_QUERY, JSON_VALUE)",
            17,
        ),
        (
            "ALTER TABLE t ADD CONSTRAINT t_a_nn NOT NULL a",
            "a named NOT NULL constraint (CONSTRAINT name NOT NULL column)",
            18,
        ),
        (
            "CREATE TABLE t (a int, CONSTRAINT a_nn NOT NULL a)",
            "a named NOT NULL constraint (CONSTRAINT name NOT NULL column)",
            18,
        ),
        (
            "CREATE TABLE t (a int, b int GENERATED ALWAYS AS (a * 2))",
            "a virtual generated column (GENERATED ALWAYS AS (...) without STORED)",
            18,
        ),
        (
            "CREATE TABLE t (id int, p tstzrange, PRIMARY KEY (id, p WITHOUT OVERLAPS))",
            "WITHOUT OVERLAPS / PERIOD in a key",
            18,
        ),
        ("UPDATE t SET a = 1 RETURNING old.a, new.a", "RETURNING old.* / new.*", 18),
    ],
)
def test_newer_syntax_is_found(sql: str, feature: str, major: int) -> None:
    (st,) = parse_sql(sql, "x.sql")
    assert (feature, major) in st.needs


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (a int CONSTRAINT a_nn NOT NULL, b int NOT NULL)",  # column NOT NULL: old
        "CREATE TABLE t (a int, b int GENERATED ALWAYS AS (a * 2) STORED)",
        "UPDATE t SET a = 1 RETURNING a, t.a",
        "CREATE UNIQUE INDEX ON t (a)",
        "INSERT INTO t SELECT * FROM s",
    ],
)
def test_old_syntax_needs_nothing(sql: str) -> None:
    (st,) = parse_sql(sql, "x.sql")
    assert st.needs == ()


def _steps(sql: str) -> list[tuple[Step, ParsedFile]]:
    mf = parse_name(Path("V1__x.sql"))
    assert mf is not None
    pf = ParsedFile(mf, parse_sql(sql, "V1__x.sql"))
    return [(Step("V", mf, None, "x", "V1__x.sql", 0), pf)]


def test_problem_sentences() -> None:
    steps = _steps(
        "CREATE EXTENSION pgcrypto;\nSELECT * FROM JSON_TABLE('[1]'::jsonb, '$[*]'"
        " COLUMNS (x int PATH '$'));\n"
    )
    facts = Facts(150004, "15.4", frozenset({"plpgsql"}))
    embedded = problems(Target("dev", "", embedded=True), facts, steps)
    assert embedded == [
        "V1__x.sql:1 creates extension 'pgcrypto', which the server of dev (PostgreSQL 15.4) "
        "does not have; the embedded server ships without pgcrypto and uuid-ossp: drop the "
        "extension (for UUIDs use gen_random_uuid(), built into PostgreSQL since 13), or point "
        "environments.dev.url at a server that has it",
        "V1__x.sql:2 uses JSON_TABLE, which needs PostgreSQL 17, but dev runs PostgreSQL 15.4; "
        "rewrite it for PostgreSQL 15 or upgrade the server",
    ]
    hosted = problems(Target("prod", "postgresql://h/db"), facts, steps)
    assert "install it on that server or ask its provider to enable it" in hosted[0]
    assert problems(Target("dev", ""), Facts(180001, "18.1", frozenset({"pgcrypto"})), steps) == []


def test_notes_for_empty_files() -> None:
    assert notes(_steps("-- nothing\n")) == [
        "V1__x.sql has no SQL statement (empty, or only comments): it would be recorded as "
        "applied, and editing it afterwards is a checksum mismatch; write its SQL first"
    ]

"""migrate/statements.py: splitting with pglast, lines, non-transactional detection."""

from __future__ import annotations

import pytest

from pgferry.errors import BadInput, SqlParseError
from pgferry.migrate.statements import parse_sql


def test_split_keeps_text_and_lines() -> None:
    text = (
        "-- header\nCREATE TABLE t (a text);\n\n/* note */\n"
        "INSERT INTO t VALUES ('a;b', 'é');\nDO $$ BEGIN PERFORM 1; END $$;\nSELECT '100%'"
    )
    st = parse_sql(text, "V1__x.sql")
    assert [(s.index, s.line, s.text) for s in st] == [
        (0, 2, "CREATE TABLE t (a text)"),
        (1, 5, "INSERT INTO t VALUES ('a;b', 'é')"),
        (2, 6, "DO $$ BEGIN PERFORM 1; END $$"),
        (3, 7, "SELECT '100%'"),
    ]
    assert all(s.non_tx is None for s in st)
    assert st[0].digest == parse_sql("CREATE   TABLE t\n(a text);", "x")[0].digest


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("CREATE INDEX CONCURRENTLY i ON t (a)", "CREATE INDEX CONCURRENTLY"),
        (
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON s.t (a)",
            "CREATE INDEX CONCURRENTLY",
        ),
        ("DROP INDEX CONCURRENTLY IF EXISTS i", "DROP INDEX CONCURRENTLY"),
        ("REINDEX INDEX CONCURRENTLY i", "REINDEX CONCURRENTLY"),
        ("REINDEX (CONCURRENTLY) TABLE t", "REINDEX CONCURRENTLY"),
        ("REINDEX DATABASE app", "REINDEX DATABASE/SYSTEM"),
        ("VACUUM (ANALYZE) t", "VACUUM"),
        ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", "DETACH PARTITION CONCURRENTLY"),
        ("CREATE DATABASE x", "CREATE DATABASE"),
        ("DROP DATABASE x", "DROP DATABASE"),
        ("ALTER SYSTEM SET work_mem = '64MB'", "ALTER SYSTEM"),
        ("CLUSTER", "CLUSTER (all tables)"),
        # these are fine inside a transaction
        ("CREATE INDEX i ON t (a)", None),
        ("ANALYZE t", None),
        ("REINDEX INDEX i", None),
        ("ALTER TYPE mood RENAME VALUE 'a' TO 'b'", None),
        ("ALTER TYPE mood ADD VALUE IF NOT EXISTS 'meh' BEFORE 'ok'", None),  # since PostgreSQL 12
        ("ALTER TABLE p DETACH PARTITION c", None),
        ("CLUSTER t USING i", None),
    ],
)
def test_non_transactional_detection(sql: str, why: str | None) -> None:
    assert parse_sql(sql + ";", "f.sql")[0].non_tx == why


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        (
            "ALTER TYPE mood ADD VALUE 'meh';\nINSERT INTO t VALUES ('meh');",
            "ALTER TYPE ... ADD VALUE 'meh' used at line 2",
        ),
        (
            "ALTER TYPE mood ADD VALUE 'meh';\nALTER TABLE t ALTER m SET DEFAULT 'meh'::mood;",
            "ALTER TYPE ... ADD VALUE 'meh' used at line 2",
        ),
        (
            "ALTER TYPE mood ADD VALUE 'meh';\nCREATE INDEX i ON t (a) WHERE m <> 'meh';",
            "ALTER TYPE ... ADD VALUE 'meh' used at line 2",
        ),
        ("ALTER TYPE mood ADD VALUE 'meh';\nINSERT INTO t VALUES ('other');", None),
        ("INSERT INTO t VALUES ('meh');\nALTER TYPE mood ADD VALUE 'meh';", None),  # used before
    ],
)
def test_add_value_leaves_the_transaction_only_when_the_file_uses_it(
    sql: str, why: str | None
) -> None:
    first = [s for s in parse_sql(sql, "f.sql") if "ADD VALUE" in s.text][0]
    assert first.non_tx == why


def test_index_name_for_invalid_index_cleanup() -> None:
    s = parse_sql("CREATE INDEX CONCURRENTLY i ON app.t (a);", "f")[0]
    assert s.index_name == ("app", "i", "app.t")
    assert parse_sql("CREATE INDEX CONCURRENTLY ON t (a);", "f")[0].index_name is None


def test_parse_error_names_file_line_and_message() -> None:
    with pytest.raises(SqlParseError) as e:
        parse_sql("SELECT 'é';\n\nSELECT * FORM t;\n", "V2__bad.sql")
    assert e.value.message == 'V2__bad.sql:3: syntax error at or near "FORM"'
    assert e.value.exit_code == 2 and e.value.details["line"] == 3


def test_transaction_control_refused() -> None:
    with pytest.raises(BadInput, match=r"f.sql:2: transaction control \(COMMIT\)"):
        parse_sql("CREATE TABLE t ();\nCOMMIT;", "f.sql")

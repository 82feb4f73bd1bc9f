"""Properties of the engine over generated migrations (hypothesis).

Whatever mix of statements a file holds: linting does not crash, every finding
points inside the file at a real statement, ``ignore-file`` of every reported
rule silences all of them without an ``unused-ignore``, and the result does not
depend on blank lines and comments between statements.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pgferry.lint.engine import Linter, Settings

STATEMENTS = [
    "ALTER TABLE t ADD COLUMN c uuid DEFAULT gen_random_uuid();",
    "ALTER TABLE t ADD COLUMN d bigint NOT NULL;",
    "ALTER TABLE t ALTER COLUMN e SET NOT NULL;",
    "ALTER TABLE t ALTER COLUMN f TYPE bigint;",
    "ALTER TABLE t\n  ADD COLUMN g text,\n  DROP COLUMN h;",
    "ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0);",
    "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id);",
    "ALTER TABLE t ADD CONSTRAINT uq UNIQUE (a);",
    "CREATE INDEX i ON t (a);",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS j ON t (b);",
    "DROP INDEX i;",
    "DROP TABLE t;",
    "CREATE TABLE n (id serial, name varchar(10), at timestamp, c char(2), j json);",
    "CREATE INDEX ni ON n (name);",
    "TRUNCATE t CASCADE;",
    "BEGIN;",
    "COMMIT;",
    "UPDATE t SET a = 1;",
    "ALTER TYPE e ADD VALUE 'x';",
    "VACUUM FULL t;",
    "SELECT 1;",
    "SET lock_timeout = '1s';",
]

files = st.lists(st.sampled_from(STATEMENTS), min_size=1, max_size=12)
ALL = Settings(enable=["require-lock-timeout", "require-statement-timeout", "require-table-schema"])


@settings(max_examples=150, deadline=None)
@given(files)
def test_findings_point_into_the_file(stmts: list[str]) -> None:
    sql = "\n".join(stmts) + "\n"
    lines = sql.count("\n")
    for f in Linter(ALL).lint_text("x.sql", sql):
        assert 1 <= f.line <= lines
        assert f.column >= 1
        assert f.severity in ("error", "warning")
        assert f.statement or f.rule in ("unused-ignore",)


@settings(max_examples=100, deadline=None)
@given(files)
def test_ignore_file_of_every_rule_silences_everything(stmts: list[str]) -> None:
    sql = "\n".join(stmts) + "\n"
    rules = sorted({f.rule for f in Linter(ALL).lint_text("x.sql", sql)})
    if not rules:
        return
    head = f"-- pgferry:ignore-file {', '.join(rules)} -- accepted\n"
    found = Linter(ALL).lint_text("x.sql", head + sql)
    assert all(f.suppressed == "accepted" for f in found), [
        (f.rule, f.line) for f in found if f.suppressed is None
    ]


@settings(max_examples=100, deadline=None)
@given(files, st.lists(st.sampled_from(["", "-- note", "/* block */"]), min_size=12, max_size=12))
def test_comments_and_blank_lines_do_not_change_what_is_found(
    stmts: list[str], fillers: list[str]
) -> None:
    plain = "\n".join(stmts) + "\n"
    padded = "\n".join(f"{fill}\n{s}" for s, fill in zip(stmts, fillers, strict=False)) + "\n"
    a = sorted((f.rule, f.statement) for f in Linter(ALL).lint_text("x.sql", plain))
    b = sorted((f.rule, f.statement) for f in Linter(ALL).lint_text("x.sql", padded))
    assert a == b

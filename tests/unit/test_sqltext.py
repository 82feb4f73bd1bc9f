"""The one SQL front end (pgferry.sqltext): the runner and the lint engine read the same
statements, lines and transaction verdict; ADD VALUE; the lock a statement takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgferry.lint.engine import Linter, Settings
from pgferry.lint.snapshot import from_dict
from pgferry.migrate.files import MigrationFile
from pgferry.migrate.statements import parse_file
from pgferry.sqltext.classify import stronger, table_lock
from pgferry.sqltext.model import SqlFile, split
from pgferry.sqltext.nodes import Node

FILES = [
    "CREATE TABLE t (a int);\nALTER TYPE mood ADD VALUE 'meh';\n",
    "ALTER TYPE mood ADD VALUE 'meh';\nINSERT INTO t VALUES ('meh');\n",
    "-- x\nCREATE INDEX CONCURRENTLY i ON t (a);\n/* y */ ANALYZE t;\n",
    "CREATE TABLE t (a int);\nVACUUM t;\nSELECT 'é';\n",
    "ALTER TABLE p DETACH PARTITION c CONCURRENTLY;\nUPDATE t SET a = 1;\n",
]


def _migration(tmp_path: Path, text: str) -> MigrationFile:
    p = tmp_path / "V1__x.sql"
    p.write_text(text, encoding="utf-8")
    return MigrationFile(p, "V", None, "x").read()


@pytest.mark.parametrize("text", FILES)
def test_runner_and_linter_see_the_same_statements(tmp_path: Path, text: str) -> None:
    pf = parse_file(_migration(tmp_path, text))
    linter = Linter(Settings())
    linter.lint_text("V1__x.sql", text)
    seen = linter.cx.file
    assert isinstance(seen, SqlFile)
    assert [
        (s.kind, s.start, s.end, s.line, s.text, s.non_tx, s.in_tx) for s in seen.statements
    ] == [(s.kind, s.start, s.end, s.line, s.text, s.non_tx, s.in_tx) for s in pf.statements]
    assert seen.transactional == pf.transactional
    assert seen.notes == pf.notes


def test_add_value_runs_in_the_transaction_unless_the_file_uses_the_label() -> None:
    alone = split("ALTER TYPE mood ADD VALUE 'meh';\nCREATE TABLE t (a int);\n", "f.sql")
    assert alone.transactional and all(s.in_tx for s in alone.statements)
    assert alone.notes == []
    used = split("ALTER TYPE mood ADD VALUE 'meh';\nSELECT 'meh'::mood;\n", "f.sql")
    assert not used.transactional
    assert used.statements[0].non_tx == "ALTER TYPE ... ADD VALUE 'meh' used at line 2"
    assert [s.in_tx for s in used.statements] == [False, False]
    assert len(used.notes) == 1 and "line 1 adds enum value 'meh'" in used.notes[0]
    # before PostgreSQL 12 it cannot run in a transaction block at all
    old = split("ALTER TYPE mood ADD VALUE 'meh';\n", "f.sql", pg_major=11)
    assert old.statements[0].non_tx == "ALTER TYPE ... ADD VALUE (PostgreSQL 11 and older)"


def test_the_gate_judges_add_value_as_the_runner_runs_it() -> None:
    """prefer-robust-stmts reports only files that run outside a transaction: a file that
    adds a label (and does not use it) runs in one, for the runner and the linter."""
    text = "ALTER TYPE mood ADD VALUE 'meh';\nCREATE TABLE t (a int);\n"
    rules = [f.rule for f in Linter(Settings()).lint_text("V1__x.sql", text)]
    assert "prefer-robust-stmts" not in rules
    rules11 = [
        (f.rule, f.line) for f in Linter(Settings(), pg_version=11).lint_text("V1__x.sql", text)
    ]
    assert ("prefer-robust-stmts", 2) in rules11


def _lock(sql: str) -> tuple[str, str] | None:
    st = split(sql, "f.sql").statements[0]
    node: Node = st.node
    return table_lock(st.kind, node)


@pytest.mark.parametrize(
    ("sql", "lock"),
    [
        ("ALTER TABLE t ADD COLUMN a int", "ACCESS EXCLUSIVE"),
        (
            "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES p NOT VALID",
            "SHARE ROW EXCLUSIVE",
        ),
        ("ALTER TABLE t VALIDATE CONSTRAINT f", "SHARE UPDATE EXCLUSIVE"),
        ("ALTER TABLE t VALIDATE CONSTRAINT f, ADD COLUMN b int", "ACCESS EXCLUSIVE"),
        ("ALTER TABLE t ALTER COLUMN a SET STATISTICS 100", "SHARE UPDATE EXCLUSIVE"),
        ("ALTER TABLE t DISABLE TRIGGER x", "SHARE ROW EXCLUSIVE"),
        ("ALTER TABLE p DETACH PARTITION c CONCURRENTLY", "SHARE UPDATE EXCLUSIVE"),
        ("CREATE INDEX i ON s.t (a)", "SHARE"),
        ("CREATE INDEX CONCURRENTLY i ON t (a)", "SHARE UPDATE EXCLUSIVE"),
        (
            "CREATE TRIGGER x BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
            "SHARE ROW EXCLUSIVE",
        ),
        ("UPDATE t SET a = 1", "ROW EXCLUSIVE"),
        ("REINDEX TABLE t", "SHARE"),
        ("REINDEX TABLE CONCURRENTLY t", "SHARE UPDATE EXCLUSIVE"),
    ],
)
def test_table_lock(sql: str, lock: str) -> None:
    table = (
        "s.t"
        if " s.t " in sql
        else "public.p"
        if sql.startswith("ALTER TABLE p ")
        else ("public.t")
    )
    assert _lock(sql) == (table, lock)


def test_stronger() -> None:
    assert stronger("SHARE", "ACCESS EXCLUSIVE") == "ACCESS EXCLUSIVE"
    assert stronger("SHARE UPDATE EXCLUSIVE", "SHARE") == "SHARE"
    assert stronger("", "ROW EXCLUSIVE") == "ROW EXCLUSIVE"


def test_impact_names_the_lock_the_statement_holds() -> None:
    """A foreign key added in an ALTER TABLE that also adds a column scans under the
    statement's ACCESS EXCLUSIVE, not the SHARE ROW EXCLUSIVE a lone FK takes."""
    cat = from_dict(
        {
            "server_version": 180000,
            "tables": {
                "public.t": {"rows": 10_000_000, "total_bytes": 2 << 30, "heap_bytes": 2 << 30},
                "public.p": {"rows": 10, "total_bytes": 8192, "heap_bytes": 8192},
            },
        }
    )

    def impact(sql: str) -> str:
        found = Linter(Settings(), catalog=cat).lint_text("f.sql", sql)
        return next(
            f.impact
            for f in found
            if f.rule == "adding-foreign-key-constraint" and f.impact.startswith("scans public.t")
        )

    lone = impact("ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES p;")
    assert "under SHARE ROW EXCLUSIVE: blocks writes" in lone
    both = impact("ALTER TABLE t ADD COLUMN b int, ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES p;")
    assert "under ACCESS EXCLUSIVE: blocks reads and writes" in both

"""docs/lint.md's table of squawk's rules is true of the squawk the project installs (the
bench extra): every rule it names exists, is on or opt-in by default as the table says,
and every pgferry rule that claims a squawk counterpart is listed beside it.

Each squawk rule gets a statement that triggers it; the test runs the real binary."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pgferry.lint.rules import ALL_RULES

SQUAWK = Path(sys.executable).parent / "squawk"
DOC = Path(__file__).resolve().parents[3] / "docs" / "lint.md"
pytestmark = pytest.mark.skipif(not SQUAWK.exists(), reason="squawk-cli is not installed")

#: squawk rule -> a statement that triggers it
PROBES: dict[str, str] = {
    "adding-field-with-default": "ALTER TABLE t ADD COLUMN c uuid DEFAULT gen_random_uuid();",
    "adding-foreign-key-constraint": (
        "ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id);"
    ),
    "adding-not-nullable-field": "ALTER TABLE t ALTER COLUMN a SET NOT NULL;",
    "adding-required-field": "ALTER TABLE t ADD COLUMN b bigint NOT NULL;",
    "adding-serial-primary-key-field": "ALTER TABLE t ADD PRIMARY KEY (id);",
    "ban-add-column": "ALTER TABLE t ADD COLUMN IF NOT EXISTS b text;",
    "ban-add-composite-attribute": "ALTER TYPE ct ADD ATTRIBUTE z bigint;",
    "ban-add-enum-value": "ALTER TYPE e ADD VALUE 'x' AFTER 'y';",
    "ban-alter-database-options": "ALTER DATABASE d SET work_mem = '1MB';",
    "ban-alter-domain-with-add-constraint": "ALTER DOMAIN d ADD CONSTRAINT c CHECK (VALUE > 0);",
    "ban-alter-extension": "ALTER EXTENSION hstore UPDATE;",
    "ban-alter-function-options": "ALTER FUNCTION f() SECURITY DEFINER;",
    "ban-alter-generated-expression": "ALTER TABLE t ALTER COLUMN g SET EXPRESSION AS (a + 1);",
    "ban-alter-identity": "ALTER TABLE t ALTER COLUMN id DROP IDENTITY;",
    "ban-alter-policy-condition": "ALTER POLICY p ON t USING (true);",
    "ban-alter-policy-roles": "ALTER POLICY p ON t TO r;",
    "ban-alter-role-options": "ALTER ROLE r NOLOGIN;",
    "ban-alter-row-level-security": "ALTER TABLE t ENABLE ROW LEVEL SECURITY;",
    "ban-alter-sequence-values": "ALTER SEQUENCE sq RESTART WITH 5;",
    "ban-alter-system-options": "ALTER SYSTEM SET work_mem = '1MB';",
    "ban-alter-view-options": "ALTER VIEW v SET (security_barrier = true);",
    "ban-char-field": "CREATE TABLE t2 (a char(2));",
    "ban-concurrent-index-creation-in-transaction": (
        "BEGIN;\nCREATE INDEX CONCURRENTLY i ON t (a);\nCOMMIT;"
    ),
    "ban-create-domain-with-constraint": "CREATE DOMAIN d AS bigint CHECK (VALUE > 0);",
    "ban-create-policy": "CREATE POLICY p ON t USING (true);",
    "ban-detach-inheritance": "ALTER TABLE t NO INHERIT p;",
    "ban-disable-trigger": "ALTER TABLE t DISABLE TRIGGER tr;",
    "ban-drop-column": "ALTER TABLE t DROP COLUMN a;",
    "ban-drop-constraint": "ALTER TABLE t DROP CONSTRAINT c;",
    "ban-drop-database": "DROP DATABASE d;",
    "ban-drop-domain": "DROP DOMAIN d;",
    "ban-drop-extension": "DROP EXTENSION hstore;",
    "ban-drop-function": "DROP FUNCTION f();",
    "ban-drop-generated-expression": "ALTER TABLE t ALTER COLUMN g DROP EXPRESSION;",
    "ban-drop-index": "DROP INDEX CONCURRENTLY IF EXISTS i;",
    "ban-drop-not-null": "ALTER TABLE t ALTER COLUMN a DROP NOT NULL;",
    "ban-drop-policy": "DROP POLICY p ON t;",
    "ban-drop-schema": "DROP SCHEMA s;",
    "ban-drop-sequence": "DROP SEQUENCE sq;",
    "ban-drop-table": "DROP TABLE t;",
    "ban-drop-type": "DROP TYPE ty;",
    "ban-drop-view": "DROP VIEW v;",
    "ban-duplicate-column-assignments": "UPDATE t SET a = 1, a = 2;",
    "ban-new-write-restriction": "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID;",
    "ban-replace-view-function": "CREATE OR REPLACE VIEW v AS SELECT 1;",
    "ban-replica-identity": "ALTER TABLE t REPLICA IDENTITY FULL;",
    "ban-revoke": "REVOKE SELECT ON t FROM r;",
    "ban-set-default": "ALTER TABLE t ALTER COLUMN a SET DEFAULT 1;",
    "ban-set-schema": "ALTER TABLE t SET SCHEMA s;",
    "ban-truncate-cascade": "TRUNCATE t CASCADE;",
    "ban-uncommitted-transaction": "BEGIN;\nSELECT 1;",
    "changing-column-type": "ALTER TABLE t ALTER COLUMN a TYPE bigint;",
    "constraint-missing-not-valid": "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0);",
    "disallowed-unique-constraint": "ALTER TABLE t ADD CONSTRAINT k UNIQUE (a);",
    "identifier-too-long": f"CREATE TABLE {'a' * 70} (a text);",
    "prefer-bigint-over-int": "CREATE TABLE t2 (a int);",
    "prefer-bigint-over-smallint": "CREATE TABLE t2 (a smallint);",
    "prefer-identity": "CREATE TABLE t2 (a bigserial);",
    "prefer-repack": "VACUUM FULL t;",
    "prefer-robust-stmts": "ALTER TABLE t ADD COLUMN b text;",
    "prefer-text-field": "CREATE TABLE t2 (a varchar(10));",
    "prefer-timestamp-tz": "CREATE TABLE t2 (a timestamp);",
    "renaming-column": "ALTER TABLE t RENAME COLUMN a TO b;",
    "renaming-object": "ALTER VIEW v RENAME TO v2;",
    "renaming-table": "ALTER TABLE t RENAME TO u;",
    "require-concurrent-index-creation": "CREATE INDEX i ON t (a);",
    "require-concurrent-index-deletion": "DROP INDEX i;",
    "require-concurrent-partition-detach": "ALTER TABLE t DETACH PARTITION p;",
    "require-concurrent-reindex": "REINDEX TABLE t;",
    "require-enum-value-ordering": "ALTER TYPE e ADD VALUE 'x';",
    "require-lock-timeout": "ALTER TABLE t ADD COLUMN b text;",
    "require-statement-timeout": "ALTER TABLE t ADD COLUMN b text;",
    "require-table-schema": "CREATE TABLE t2 (a text);",
    "transaction-nesting": "BEGIN;\nBEGIN;\nSELECT 1;\nCOMMIT;",
}
#: the --pg-version a probe needs (squawk suggests REPACK, new in 19)
PG_VERSION = {"prefer-repack": "19"}


def squawk_rules(sql: str, tmp: Path, *args: str) -> set[str]:
    f = tmp / "probe.sql"
    f.write_text(sql + "\n", encoding="utf-8")
    r = subprocess.run(
        [str(SQUAWK), "--reporter", "json", *args, str(f)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode in (0, 1), r.stderr
    return {x["rule_name"] for x in json.loads(r.stdout or "[]")}


def doc_table() -> dict[str, tuple[str, str]]:
    """squawk rule -> (its default in squawk, the pgferry cell) from docs/lint.md."""
    text = DOC.read_text(encoding="utf-8")
    head = "| squawk rule | squawk default | pgferry | why |"
    assert head in text, "docs/lint.md has no table of squawk's rules"
    rows: dict[str, tuple[str, str]] = {}
    for line in text.split(head, 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def test_the_doc_lists_every_squawk_rule_with_its_real_default(tmp_path: Path) -> None:
    version = subprocess.run(
        [str(SQUAWK), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    assert f"squawk {version}" in DOC.read_text(encoding="utf-8")
    rows = doc_table()
    assert sorted(rows) == sorted(PROBES)
    wrong = []
    for rule, sql in PROBES.items():
        opts = ("--pg-version", PG_VERSION[rule]) if rule in PG_VERSION else ()
        on = rule in squawk_rules(sql, tmp_path, *opts)
        assert on or rule in squawk_rules(sql, tmp_path, *opts, "--include", rule), rule
        said = rows[rule][0]
        if said.startswith("on") != on or (not on and said != "opt-in"):
            wrong.append(f"{rule}: doc says {said!r}, squawk {version}: {'on' if on else 'opt-in'}")
    assert not wrong, wrong


def test_every_pgferry_counterpart_is_listed() -> None:
    rows = doc_table()
    for r in ALL_RULES:
        for name in r.squawk:
            assert name in rows, f"{r.name} names squawk rule {name!r}, which squawk lacks"
            assert re.search(rf"\b{re.escape(r.name)}\b", rows[name][1]), (name, r.name)
    claimed = {name for r in ALL_RULES for name in r.squawk}
    for name, (_, ours) in rows.items():
        if ours != "—":
            assert name in claimed, f"{name}: the doc names {ours} but no rule claims it"

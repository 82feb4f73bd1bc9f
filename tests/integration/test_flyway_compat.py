"""Flyway interoperability: a history Flyway 10 wrote is adopted as is; pgferry's table is Flyway's.

The DDL below is Flyway 10's ``createMetaDataTable.sql`` for PostgreSQL, and the rows
are what Flyway inserts (BASELINE row, ``SQL`` rows with the description's underscores
as spaces, a repeatable row without version, checksums computed here independently of
pgferry with :mod:`zlib`, the way ``java.util.zip.CRC32`` is fed line by line).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgferry.migrate import history
from tests.helpers import Project, Result

FLYWAY_DDL = """
CREATE TABLE "public"."flyway_schema_history" (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INT,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INT NOT NULL,
    "success" BOOLEAN NOT NULL
);
ALTER TABLE "public"."flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk"
    PRIMARY KEY ("installed_rank");
CREATE INDEX "flyway_schema_history_s_idx" ON "public"."flyway_schema_history" ("success");
"""

# (column, data_type, character_maximum_length, is_nullable, column_default)
FLYWAY_COLUMNS = [
    ("installed_rank", "integer", None, "NO", None),
    ("version", "character varying", 50, "YES", None),
    ("description", "character varying", 200, "NO", None),
    ("type", "character varying", 20, "NO", None),
    ("script", "character varying", 1000, "NO", None),
    ("checksum", "integer", None, "YES", None),
    ("installed_by", "character varying", 100, "NO", None),
    ("installed_on", "timestamp without time zone", None, "NO", "now()"),
    ("execution_time", "integer", None, "NO", None),
    ("success", "boolean", None, "NO", None),
]


def java_crc(text: str) -> int:
    """Flyway's checksum, written out independently: CRC32 fed each line, signed int."""
    crc = 0
    for line in text.removeprefix("\ufeff").splitlines():
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return crc - (1 << 32) if crc >= (1 << 31) else crc


def layout(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, Any]:
    cols = conn.execute(
        "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
        " ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    pk = conn.execute(
        "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
        " WHERE c.conrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND c.contype = 'p'",
        [schema, table],
    ).fetchall()
    idx = conn.execute(
        "SELECT indexname, regexp_replace(indexdef, ' ON .* USING', ' USING')"
        " FROM pg_indexes WHERE schemaname = %s AND tablename = %s ORDER BY indexname",
        [schema, table],
    ).fetchall()
    return {"columns": cols, "pk": pk, "indexes": idx}


def test_pgferry_history_table_is_flyways(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as c:
        history.ensure_table(c, "public", "flyway_schema_history")
        c.execute("CREATE SCHEMA fw")
        c.execute(FLYWAY_DDL.replace('"public"', '"fw"'))
        ours = layout(c, "public", "flyway_schema_history")
        theirs = layout(c, "fw", "flyway_schema_history")
    assert ours["columns"] == FLYWAY_COLUMNS
    assert ours["pk"] == [("flyway_schema_history_pk", "PRIMARY KEY (installed_rank)")]
    assert ours["indexes"] == [
        (
            "flyway_schema_history_pk",
            "CREATE UNIQUE INDEX flyway_schema_history_pk USING btree (installed_rank)",
        ),
        (
            "flyway_schema_history_s_idx",
            "CREATE INDEX flyway_schema_history_s_idx USING btree (success)",
        ),
    ]
    assert ours == theirs


def test_custom_history_table_name_follows_flyways_naming(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as c:
        history.ensure_table(c, "ops", "schema_version")
        got = layout(c, "ops", "schema_version")
    assert got["columns"] == FLYWAY_COLUMNS
    assert [i[0] for i in got["indexes"]] == ["schema_version_pk", "schema_version_s_idx"]


FILES = {
    "V1__create_accounts.sql": "CREATE TABLE accounts (id bigint PRIMARY KEY);\n",
    "V1_1__add_accounts_email.sql": "ALTER TABLE accounts ADD COLUMN email text;\r\n",
    "V2__create-orders.sql": "\ufeffCREATE TABLE orders (id bigint PRIMARY KEY,\n"
    "  account_id bigint REFERENCES accounts (id));\n",
    "V3__add_orders_note.sql": "ALTER TABLE orders ADD COLUMN note text;\n",
    "R__account_view.sql": "CREATE OR REPLACE VIEW account_view AS SELECT id FROM accounts;\n",
}


def flyway_migrated(project: Project, *, baseline_at: str | None, schema_row: bool) -> None:
    """Write the files and a history exactly as Flyway 10 would after `flyway migrate`."""
    for name, text in FILES.items():
        (project.migrations / name).write_bytes(text.encode("utf-8"))
    rows: list[tuple[object, ...]] = []
    if schema_row:  # Flyway's marker when it created the schema itself (rank 0)
        rows.append((0, None, "<< Flyway Schema Creation >>", "SCHEMA", '"public"', None, 0))
    rank = 1
    if baseline_at:
        rows.append(
            (
                rank,
                baseline_at,
                "<< Flyway Baseline >>",
                "BASELINE",
                "<< Flyway Baseline >>",
                None,
                0,
            )
        )
        rank += 1
    applied = [
        ("1", "create accounts", "V1__create_accounts.sql"),
        ("1.1", "add accounts email", "V1_1__add_accounts_email.sql"),
        ("2", "create-orders", "V2__create-orders.sql"),
    ]
    if baseline_at:
        applied = applied[2:]
    for version, desc, script in applied:
        rows.append((rank, version, desc, "SQL", script, java_crc(FILES[script]), 41))
        rank += 1
    rows.append(
        (
            rank,
            None,
            "account view",
            "SQL",
            "R__account_view.sql",
            java_crc(FILES["R__account_view.sql"]),
            7,
        )
    )
    with psycopg.connect(project.dsns["dev"]) as c:
        c.execute(FLYWAY_DDL)
        for name in (
            "V1__create_accounts.sql",
            "V1_1__add_accounts_email.sql",
            "V2__create-orders.sql",
            "R__account_view.sql",
        ):
            c.execute(FILES[name].removeprefix("\ufeff"))
        for r in rows:
            c.execute(
                "INSERT INTO flyway_schema_history (installed_rank, version, description, type,"
                " script, checksum, installed_by, execution_time, success)"
                " VALUES (%s, %s, %s, %s, %s, %s, current_user, %s, true)",
                list(r),
            )


@pytest.mark.parametrize("baseline_at,schema_row", [(None, False), ("1.1", False), (None, True)])
def test_adopts_a_flyway_history(
    project: Project, cli: Callable[..., Result], baseline_at: str | None, schema_row: bool
) -> None:
    flyway_migrated(project, baseline_at=baseline_at, schema_row=schema_row)
    cfg = str(project.config)
    r = cli("--config", cfg, "migrate", "status", "--env", "dev", "--json")
    assert r.code == 0, r.err
    states = {e["script"]: e["state"] for e in r.json["entries"] if e["state"] != "baseline"}
    expected = {
        "V1__create_accounts.sql": "applied",
        "V1_1__add_accounts_email.sql": "applied",
        "V2__create-orders.sql": "applied",
        "V3__add_orders_note.sql": "pending",
        "R__account_view.sql": "applied",
    }
    if baseline_at:
        expected.update(
            {
                "V1__create_accounts.sql": "below_baseline",
                "V1_1__add_accounts_email.sql": "below_baseline",
            }
        )
    assert states == expected
    assert r.json["current_version"] == "2"
    # no pgferry.sum in a Flyway project: a warning, not a validation failure
    r = cli("--config", cfg, "migrate", "validate", "--env", "dev", "--json")
    assert r.code == 0, r.json
    assert any("no pgferry.sum" in w for w in r.json["warnings"])


def test_flyway_detects_pgferrys_edit_the_same_way(
    project: Project, cli: Callable[..., Result]
) -> None:
    """A CRLF or BOM change is not an edit (for Flyway either); a real edit is."""
    flyway_migrated(project, baseline_at=None, schema_row=False)
    cfg = str(project.config)
    p = project.migrations / "V1__create_accounts.sql"
    p.write_bytes(b"\xef\xbb\xbf" + FILES[p.name].replace("\n", "\r\n").encode())
    assert cli("--config", cfg, "migrate", "validate", "--env", "dev").code == 0
    p.write_text("CREATE TABLE accounts (id bigint PRIMARY KEY, x int);\n")
    r = cli("--config", cfg, "migrate", "validate", "--env", "dev", "--json")
    assert r.code == 1
    assert r.json["problems"][0].startswith("1 V1__create_accounts.sql: changed after")
    # repair realigns to Flyway's checksum of the new content, which Flyway would accept
    r = cli("--config", cfg, "migrate", "repair", "--env", "dev", "--yes", "--json")
    assert r.code == 0, r.err
    with psycopg.connect(project.dsns["dev"]) as c:
        got = c.execute("SELECT checksum FROM flyway_schema_history WHERE version = '1'").fetchone()
    assert got == (java_crc(p.read_text()),)


def test_pgferry_rows_read_like_flyways(
    project: Project, cli: Callable[..., Result], tmp_path: Path
) -> None:
    """A baseline written by pgferry is byte-for-byte the row Flyway writes."""
    r = cli(
        "--config", str(project.config), "migrate", "baseline", "--env", "dev", "--version", "3"
    )
    assert r.code == 0, r.err
    with psycopg.connect(project.dsns["dev"]) as c:
        row = c.execute(
            "SELECT installed_rank, version, description, type, script, checksum,"
            " installed_by = current_user, execution_time, success,"
            " installed_on BETWEEN localtimestamp - interval '1 minute' AND localtimestamp"
            " FROM flyway_schema_history"
        ).fetchone()
    assert row == (
        1,
        "3",
        "<< Flyway Baseline >>",
        "BASELINE",
        "<< Flyway Baseline >>",
        None,
        True,
        0,
        True,
        True,
    )


def test_rows_written_by_migrate_up_are_flyways(
    project: Project, cli: Callable[..., Result]
) -> None:
    """What `migrate up` records is what `flyway migrate` would record for the same files."""
    for name, text in FILES.items():
        (project.migrations / name).write_bytes(text.encode("utf-8"))
    r = cli("--config", str(project.config), "migrate", "up", "--env", "dev")
    assert r.code == 0, r.err
    with psycopg.connect(project.dsns["dev"]) as c:
        rows = c.execute(
            "SELECT installed_rank, version, description, type, script, checksum,"
            " installed_by = current_user, execution_time >= 0, success"
            " FROM flyway_schema_history ORDER BY installed_rank"
        ).fetchall()
        assert layout(c, "public", "flyway_schema_history")["columns"] == FLYWAY_COLUMNS
    expected = [
        ("1", "create accounts", "V1__create_accounts.sql"),
        ("1.1", "add accounts email", "V1_1__add_accounts_email.sql"),
        ("2", "create-orders", "V2__create-orders.sql"),
        ("3", "add orders note", "V3__add_orders_note.sql"),
        (None, "account view", "R__account_view.sql"),
    ]
    assert rows == [
        (i, v, d, "SQL", s, java_crc(FILES[s]), True, True, True)
        for i, (v, d, s) in enumerate(expected, 1)
    ]

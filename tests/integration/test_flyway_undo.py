"""`migrate undo` leaves a history the free Flyway reads (issue 19).

Reference, Flyway's own source (flyway/flyway, tag flyway-13.0.0; 12.x agrees):

- ``flyway-core/.../api/CoreMigrationType.java``: the row types the free edition knows are
  SCHEMA, BASELINE, DELETE, SQL, JDBC, SCRIPT, UNDO_SCRIPT and CUSTOM. ``fromString`` is
  ``valueOf``: any other type (``UNDO_SQL``, Flyway Teams' undo row) makes every command fail
  with "No enum constant org.flywaydb.core.api.CoreMigrationType.UNDO_SQL".
- ``flyway-core/.../internal/schemahistory/JdbcTableSchemaHistory.java``, ``delete()``: what
  ``flyway repair`` writes to mark a migration deleted: a new row at the next
  ``installed_rank`` with the applied row's ``version``, ``description``, ``script`` and
  ``checksum``, ``type = 'DELETE'``, ``installed_by`` the current user,
  ``execution_time = 0`` and the applied row's ``success``.
- ``flyway-core/.../internal/info/MigrationInfoServiceImpl.java``,
  ``getAppliedVersionedMigrations``/``markAsDeleted``: a successful DELETE row marks the latest
  applied row of its version *deleted* (a second DELETE for an already deleted row is
  "Corrupted schema history: multiple delete entries"); a deleted row no longer counts as
  applied, so the version's file is *pending* again (``getPendingResolvedVersionedMigrations``)
  and ``migrate`` applies it; ``MigrationInfoImpl.validate`` accepts the DELETED state.

:data:`FLYWAY_ROWS` is the table those rules give for up → undo → up → undo; pgferry's rows
must equal it in every column Flyway reads (``installed_on`` aside).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import psycopg

from tests.helpers import Project, Result

Cli = Callable[..., Result]
COMMUNITY_TYPES = {"SCHEMA", "BASELINE", "DELETE", "SQL", "JDBC", "SCRIPT", "UNDO_SCRIPT", "CUSTOM"}
FILES = {
    "V1__create_cases.sql": "CREATE TABLE cases (id bigint PRIMARY KEY);\n",
    "V2__add_case_title.sql": "ALTER TABLE cases ADD COLUMN title text;\n",
    "U2__add_case_title.sql": "ALTER TABLE cases DROP COLUMN title;\n",
}


def crc(name: str) -> int:
    c = 0
    for line in FILES[name].splitlines():
        c = zlib.crc32(line.encode(), c)
    return c - (1 << 32) if c >= (1 << 31) else c


V1 = ("1", "create cases", "SQL", "V1__create_cases.sql", crc("V1__create_cases.sql"))
V2 = ("2", "add case title", "SQL", "V2__add_case_title.sql", crc("V2__add_case_title.sql"))
# JdbcTableSchemaHistory.delete(): the applied row's version, description, script, checksum
V2_DELETED = (
    "2",
    "add case title",
    "DELETE",
    "V2__add_case_title.sql",
    crc("V2__add_case_title.sql"),
)
#: (installed_rank, version, description, type, script, checksum, a DELETE row with execution
#: time 0, success)
FLYWAY_ROWS = [
    (1, *V1, False, True),  # flyway migrate
    (2, *V2, False, True),
    (3, *V2_DELETED, True, True),  # flyway repair of the removed V2: marked deleted
    (4, *V2, False, True),  # flyway migrate: V2 is pending again and applied
    (5, *V2_DELETED, True, True),
]
# Flyway Teams records the undo itself (what `undo_history = "flyway-teams"` keeps)
U2 = ("2", "add case title", "UNDO_SQL", "U2__add_case_title.sql", crc("U2__add_case_title.sql"))


def rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return c.execute(
            "SELECT installed_rank, version, description, type, script, checksum,"
            " type = 'DELETE' AND execution_time = 0, success FROM flyway_schema_history"
            " WHERE installed_by = current_user ORDER BY installed_rank"
        ).fetchall()


def flyway_info(history: list[tuple[Any, ...]], files: list[str]) -> dict[str, str]:
    """Flyway's states for versioned rows and files, as MigrationInfoServiceImpl derives them
    (applied / deleted / pending; no out-of-order, no baseline in these tests)."""
    applied: list[list[Any]] = []  # [version, deleted]
    for _rank, version, _d, type_, *_rest, success in history:
        assert type_ in COMMUNITY_TYPES, f"Flyway's free edition cannot read type {type_}"
        if type_ == "DELETE" and success:
            latest = [a for a in applied if a[0] == version][-1]
            assert not latest[1], "Corrupted schema history: multiple delete entries"
            latest[1] = True
            continue
        applied.append([version, False])
    live = {v for v, deleted in applied if not deleted}
    return {
        f.split("__")[0][1:]: "success" if f.split("__")[0][1:] in live else "pending"
        for f in files
        if f.startswith("V")
    }


def setup(p: Project, extra: str = "") -> Callable[..., Result]:
    for name, text in FILES.items():
        p.write(name, text)
    if extra:
        p.config.write_text(p.config.read_text() + extra)

    def m(cli: Cli, *args: str) -> Result:
        r = cli("--config", str(p.config), "migrate", *args, "--env", "dev")
        assert r.code == 0, (args, r.err)
        return r

    return m


def test_up_undo_up_undo_writes_what_flyway_writes(project: Project, cli: Cli) -> None:
    m = setup(project)
    dev = project.dsns["dev"]
    m(cli, "up")
    m(cli, "undo")
    assert rows(dev) == FLYWAY_ROWS[:3]
    assert flyway_info(rows(dev), list(FILES)) == {"1": "success", "2": "pending"}
    st = m(cli, "status", "--json").json
    assert st["current_version"] == "1"
    assert {e["script"]: e["state"] for e in st["entries"]}["V2__add_case_title.sql"] == "undone"
    m(cli, "up")
    m(cli, "undo")
    assert rows(dev) == FLYWAY_ROWS
    assert flyway_info(rows(dev), list(FILES)) == {"1": "success", "2": "pending"}
    m(cli, "up")
    assert flyway_info(rows(dev), list(FILES)) == {"1": "success", "2": "success"}
    assert m(cli, "validate").code == 0
    r = cli("--config", str(project.config), "migrate", "plan", "--env", "dev")
    assert "nothing to apply" in r.out


def test_undo_plan_names_the_row_it_writes(project: Project, cli: Cli) -> None:
    m = setup(project)
    m(cli, "up")
    r = m(cli, "undo", "--dry-run")
    assert (
        f"-- record in history: version 2, type DELETE (marks V2__add_case_title.sql "
        f"undone, as Flyway's repair marks a deleted migration), checksum "
        f"{crc('V2__add_case_title.sql')}"
    ) in r.out


def test_flyway_teams_keeps_undo_sql_rows(project: Project, cli: Cli) -> None:
    m = setup(project, '[migrate]\nundo_history = "flyway-teams"\n')
    dev = project.dsns["dev"]
    m(cli, "up")
    m(cli, "undo")
    m(cli, "up")
    assert rows(dev) == [
        (1, *V1, False, True),
        (2, *V2, False, True),
        (3, *U2, False, True),
        (4, *V2, False, True),
    ]


def test_repair_converts_undo_sql_rows(project: Project, cli: Cli) -> None:
    m = setup(project, '[migrate]\nundo_history = "flyway-teams"\n')
    dev = project.dsns["dev"]
    m(cli, "up")
    m(cli, "undo")  # an UNDO_SQL row, as Flyway Teams (or an earlier pgferry) writes it
    project.config.write_text(
        project.config.read_text().replace('undo_history = "flyway-teams"', "")
    )
    st = m(cli, "status", "--json").json  # still read, and the version is undone
    assert {e["script"]: e["state"] for e in st["entries"]}["V2__add_case_title.sql"] == "undone"
    assert any("UNDO_SQL" in w and "migrate repair" in w for w in st["warnings"])
    r = m(cli, "repair", "--yes", "--json")
    assert r.json["converted_undo"] == [
        {
            "installed_rank": 3,
            "version": "2",
            "script": "U2__add_case_title.sql",
            "becomes": "V2__add_case_title.sql",
        }
    ]
    assert rows(dev) == FLYWAY_ROWS[:3]
    m(cli, "up")
    m(cli, "undo")
    assert rows(dev) == FLYWAY_ROWS
    assert not any("UNDO_SQL" in w for w in m(cli, "status", "--json").json["warnings"])


def test_a_failed_undo_is_a_failed_row_flyway_reads(project: Project, cli: Cli) -> None:
    m = setup(project)
    dev = project.dsns["dev"]
    project.write("V3__idx.sql", "CREATE INDEX CONCURRENTLY cases_title ON cases (title);\n")
    project.write("U3__idx.sql", "DROP INDEX CONCURRENTLY cases_title;\nSELECT nope;\n")
    m(cli, "up")
    r = cli("--config", str(project.config), "migrate", "undo", "--env", "dev")
    assert r.code == 3, r.err
    last = rows(dev)[-1]
    assert last[3:5] == ("DELETE", "U3__idx.sql") and last[-1] is False
    assert flyway_info(rows(dev), list(FILES)) == {"1": "success", "2": "success"}
    project.write("U3__idx.sql", "DROP INDEX CONCURRENTLY cases_title;\nSELECT 1;\n")
    m(cli, "repair", "--yes")
    r = m(cli, "undo", "--json")
    assert r.json["applied"][0]["resumed_after"] == 1
    assert rows(dev)[-1][3:5] == ("DELETE", "V3__idx.sql")

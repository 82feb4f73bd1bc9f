"""Rows of ``flyway_schema_history`` as plain data: the row types and what an undo writes.

Contract: no driver, no I/O (the pure planner :mod:`pgferry.migrate.plan` reads these);
:mod:`pgferry.migrate.history` reads and writes them in a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Flyway's row types used here
SQL = "SQL"
UNDO_SQL = "UNDO_SQL"  # Flyway Teams' undo row; the free Flyway cannot read it
DELETE = "DELETE"  # Flyway's repair: a migration marked deleted (every edition reads it)
BASELINE = "BASELINE"
BASELINE_SCRIPT = "<< Flyway Baseline >>"


@dataclass
class HistoryRow:
    installed_rank: int
    version: str | None
    description: str
    type: str
    script: str
    checksum: int | None
    installed_by: str
    installed_on: datetime
    execution_time: int
    success: bool


def undo_row(
    mode: str,
    success: bool,
    undoes: HistoryRow | None,
    description: str,
    script: str,
    checksum: int | None,
    ms: int,
) -> tuple[str, str, str, int | None, int]:
    """(type, description, script, checksum, execution_time) of the row an undo records.

    ``flyway`` (the default): the row Flyway's own repair writes to mark a migration deleted
    (``JdbcTableSchemaHistory.delete``): type ``DELETE`` with the undone row's description,
    script and checksum and execution time 0, which every Flyway edition reads (the version
    is then pending again). A failed undo is a failed ``DELETE`` row naming the undo file
    (Flyway's validate reports it and its repair removes it, as for any failed migration).
    ``flyway-teams``: Flyway Teams' own ``UNDO_SQL`` row for the undo file.
    """
    if mode == "flyway-teams":
        return UNDO_SQL, description, script, checksum, ms
    if success and undoes is not None:
        return DELETE, undoes.description, undoes.script, undoes.checksum, 0
    return DELETE, description, script, checksum, ms

"""``migrate baseline`` and ``migrate repair``: the two verbs that rewrite history.

Contract:

- :func:`baseline` adopts an existing database: under the runner's migration
  lock, it creates the history table
  (Flyway's layout) if needed and inserts Flyway's ``BASELINE`` row
  (``script`` and, by default, ``description`` ``<< Flyway Baseline >>``,
  no checksum). Files at or below that version never run there. It refuses
  (:class:`~pgferry.errors.BadInput`, exit 2) when the history already has rows.
- :func:`plan_repair` is pure: which failed rows to delete and which applied
  rows to realign to the files on disk. :func:`repair` does it in one
  transaction, holding the runner's migration lock (so it never runs beside
  ``up``) and the history table's lock, with Flyway's semantics:
  failed rows (``success = false``) are deleted; applied versioned rows whose
  file changed get the file's checksum (and description, as Flyway does). With
  ``[migrate] undo_history = "flyway"`` (the default) each successful
  ``UNDO_SQL`` row becomes the ``DELETE`` row Flyway's own repair would have
  written for the migration it undid, so the free Flyway can read the history. The
  runner's progress rows for the failed files are marked repaired
  (:func:`pgferry.migrate.runner.clear_progress`): the next ``migrate up``
  resumes a non-transactional file after the statements that completed.

Both run in one transaction; callers own policy (protected env, ``--yes``,
blackout) and the journal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgferry.config import Config
from pgferry.errors import BadInput
from pgferry.migrate import files, history, runner
from pgferry.migrate.files import MigrationSet, Version
from pgferry.migrate.history import (
    BASELINE,
    BASELINE_SCRIPT,
    DELETE,
    UNDO_SQL,
    HistoryRow,
    undo_row,
)
from pgferry.migrate.locks import MigrationLock, lock_key
from pgferry.migrate.plan import classify
from pgferry.pg.connect import Target, connect, map_db_error


def _table(cfg: Config) -> sql.Composable:
    return sql.Identifier(cfg.migrate.schema_, cfg.migrate.history_table)


def _migration_lock(cfg: Config, target: Target, verb: str) -> MigrationLock:
    """The runner's migration lock, so baseline and repair never run beside ``up``."""
    return MigrationLock(
        target.dsn,
        lock_key(cfg.migrate.schema_, cfg.migrate.history_table),
        wait=cfg.migrate.lock_wait.total_seconds(),
        application_name=f"pgferry migrate {verb}",
    )


def installed_by(conn: psycopg.Connection[Any]) -> str:
    """Flyway records the database user that ran the migration."""
    row = conn.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "unknown"


@dataclass
class BaselineResult:
    env: str
    version: str
    description: str
    installed_rank: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "version": self.version,
            "description": self.description,
            "installed_rank": self.installed_rank,
            "type": BASELINE,
            "script": BASELINE_SCRIPT,
        }


def baseline(
    cfg: Config,
    target: Target,
    version: str,
    description: str = BASELINE_SCRIPT,
    *,
    under_lock: Callable[[], None] | None = None,
) -> BaselineResult:
    """Insert the BASELINE row into an empty (or absent) history table. ``under_lock`` runs
    once the migration lock is held, before anything is written (and may refuse)."""
    v = Version.parse(version)
    if not description.strip():
        raise BadInput("--description must not be empty")
    schema, table = cfg.migrate.schema_, cfg.migrate.history_table
    try:
        with (
            _migration_lock(cfg, target, "baseline"),
            connect(target.dsn) as conn,
            conn.transaction(),
        ):
            if under_lock is not None:
                under_lock()
            history.ensure_table(conn, schema, table)
            conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(_table(cfg)))
            rows = history.read(conn, schema, table)
            if rows:
                last = max(rows, key=lambda r: r.installed_rank)
                raise BadInput(
                    f"cannot baseline {target.name}: {schema}.{table} already has {len(rows)} "
                    f"row(s) (latest: {' '.join(filter(None, [last.type, last.version]))} "
                    f"{last.script!r}); "
                    "baseline adopts a database that has no migration history",
                    rows=len(rows),
                )
            rank = history.insert(
                conn,
                schema,
                table,
                version=str(v),
                description=description,
                type=BASELINE,
                script=BASELINE_SCRIPT,
                checksum=None,
                installed_by=installed_by(conn),
                execution_time=0,
                success=True,
            )
    except psycopg.Error as e:
        raise map_db_error(e, f"baseline of {target.name} failed") from None
    return BaselineResult(target.name, str(v), description, rank)


@dataclass
class Realign:
    installed_rank: int
    version: str | None
    script: str
    old_checksum: int | None
    new_checksum: int
    old_description: str
    new_description: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Convert:
    """A successful ``UNDO_SQL`` row to rewrite as the ``DELETE`` row the free Flyway reads:
    the undone row's description, script and checksum, execution time 0
    (:func:`pgferry.migrate.history.undo_row`)."""

    installed_rank: int
    version: str | None
    script: str  # the undo file the row names now
    description: str
    becomes: str  # the script of the row it undid
    checksum: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "installed_rank": self.installed_rank,
            "version": self.version,
            "script": self.script,
            "becomes": self.becomes,
        }


@dataclass
class RepairPlan:
    env: str
    remove: list[HistoryRow] = field(default_factory=list)
    realign: list[Realign] = field(default_factory=list)
    convert: list[Convert] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.remove and not self.realign and not self.convert

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "removed_failed": [
                {
                    "installed_rank": r.installed_rank,
                    "version": r.version,
                    "script": r.script,
                    "type": r.type,
                }
                for r in self.remove
            ],
            "realigned": [r.to_dict() for r in self.realign],
            "converted_undo": [c.to_dict() for c in self.convert],
        }


def undo_conversions(rows: list[HistoryRow]) -> list[Convert]:
    """Each successful ``UNDO_SQL`` row, with the applied row it undid (pure)."""
    last: dict[str, HistoryRow] = {}
    out = []
    for r in sorted(rows, key=lambda r: r.installed_rank):
        if r.version is None or not r.success:
            continue
        if r.type == UNDO_SQL:
            done = last.pop(r.version, None)
            _, desc, script, checksum, _ = undo_row(
                "flyway", True, done, r.description, r.script, r.checksum, 0
            )
            out.append(Convert(r.installed_rank, r.version, r.script, desc, script, checksum))
        elif r.type not in (DELETE, BASELINE, "SCHEMA"):
            last[r.version] = r
        elif r.type == DELETE:
            last.pop(r.version, None)
    return out


def plan_repair(
    env: str, ms: MigrationSet, rows: list[HistoryRow], undo_history: str = "flyway"
) -> RepairPlan:
    """What repair would change (pure). With ``undo_history = "flyway"`` it also converts
    ``UNDO_SQL`` rows (Flyway Teams', or an earlier pgferry's) into the ``DELETE`` rows the
    free Flyway reads."""
    p = RepairPlan(env, remove=[r for r in rows if not r.success])
    if undo_history == "flyway":
        p.convert = undo_conversions(rows)
    for e in classify(ms, rows):
        if e.state == "checksum_mismatch" and e.file is not None and e.row is not None:
            p.realign.append(
                Realign(
                    e.row.installed_rank,
                    e.row.version,
                    e.row.script,
                    e.row.checksum,
                    e.file.checksum,
                    e.row.description,
                    e.file.description,
                )
            )
    return p


def read_plan(cfg: Config, target: Target) -> RepairPlan:
    """Read files and history and plan the repair (no writes)."""
    ms = files.scan(cfg.migrations_dir)
    try:
        with connect(target.dsn, autocommit=True) as conn:
            rows = history.read(conn, cfg.migrate.schema_, cfg.migrate.history_table)
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot read the migration history of {target.name}") from None
    return plan_repair(target.name, ms, rows, cfg.migrate.undo_history)


def _clear_progress(conn: psycopg.Connection[Any], cfg: Config, scripts: list[str]) -> int:
    """Tell the runner the failures of these files were cleared (it resumes them)."""
    return runner.clear_progress(conn, cfg, scripts) if scripts else 0


def repair(
    cfg: Config, target: Target, *, under_lock: Callable[[], None] | None = None
) -> RepairPlan:
    """Plan and apply the repair in one transaction; returns what was done. ``under_lock``
    runs once the migration lock is held, before anything is read or written."""
    ms = files.scan(cfg.migrations_dir)
    schema, table = cfg.migrate.schema_, cfg.migrate.history_table
    t = _table(cfg)
    try:
        with (
            _migration_lock(cfg, target, "repair"),
            connect(target.dsn) as conn,
            conn.transaction(),
        ):
            if under_lock is not None:
                under_lock()
            if not history.exists(conn, schema, table):
                return RepairPlan(target.name)
            # the migration lock keeps `up` out; the table lock keeps out anything else
            # that writes history (history.insert takes the same lock)
            conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(t))
            rows = history.read(conn, schema, table)
            plan = plan_repair(target.name, ms, rows, cfg.migrate.undo_history)
            if plan.remove:
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE installed_rank = ANY(%s)").format(t),
                    [[r.installed_rank for r in plan.remove]],
                )
            for r in plan.realign:
                conn.execute(
                    sql.SQL(
                        "UPDATE {} SET checksum = %s, description = %s WHERE installed_rank = %s"
                    ).format(t),
                    [r.new_checksum, r.new_description[:200], r.installed_rank],
                )
            for c in plan.convert:
                conn.execute(
                    sql.SQL(
                        "UPDATE {} SET type = %s, description = %s, script = %s,"
                        " checksum = %s, execution_time = 0 WHERE installed_rank = %s"
                    ).format(t),
                    [DELETE, c.description[:200], c.becomes[:1000], c.checksum, c.installed_rank],
                )
            _clear_progress(conn, cfg, sorted({r.script for r in plan.remove}))
    except psycopg.Error as e:
        raise map_db_error(e, f"repair of {target.name} failed") from None
    return plan

"""pgferry's own schema in a target (``pgferry``): its one owner, versioned.

Contract:
- Every object pgferry keeps in a target is created here, by version: :data:`STEPS` is
  the ordered list of upgrades (version, description, what it does; the SQL of each
  lives in its module, :mod:`pgferry.pg.ownschema.v1`, :mod:`~pgferry.pg.ownschema.v2`
  ...). ``pgferry.schema_version``
  records the versions applied (when, by which role, by which pgferry).
- :func:`ensure` brings the schema to the newest version: under the advisory lock
  :data:`~pgferry.pg.ownschema.v1.CHAIN_LOCK` (the one earlier pgferry versions took for
  their schema changes too, so an older and a newer pgferry exclude each other), each
  missing step in order, in one transaction with its version row; a concurrent caller
  waits for the lock and then finds the work done. It also re-creates a journal trigger
  someone dropped or disabled and returns their names (the journal journals that). The
  fast path is two catalog reads, no lock and no write, when the schema is current and
  whole.
- A schema that predates versioning (no ``pgferry.schema_version``) is adopted by step 1,
  whose statements are idempotent; its data is kept (an earlier journal table is moved
  into the hash-chained log, in order).
- A schema newer than this pgferry (a newer one upgraded it) is left as it is: upgrades
  only add.
- A role that may write pgferry's tables but not create in its schema (not its owner)
  works where the schema is current (an unversioned schema that already holds all of
  version 1, or of versions 1 and 2, or 1 to 3, counts as that version for it); where it is older,
  :class:`~pgferry.errors.BadInput` says to run pgferry once as the schema's owner.
- :func:`exists` says whether a journal exists (any layout). Commands that must create
  nothing (``verify``) ask it first and never call :func:`ensure` on a database without
  pgferry's schema.
- Callers pass an autocommit connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as e_

from pgferry.errors import BadInput, OperationFailed
from pgferry.pg.ownschema import v1, v2, v3


@dataclass(frozen=True)
class Upgrade:
    """One version of pgferry's schema: what it adds, and how (idempotent)."""

    version: int
    description: str
    apply: Callable[[psycopg.Connection[Any]], None]


#: every version, oldest first; a newer pgferry appends (never edits a released one)
STEPS: tuple[Upgrade, ...] = (
    Upgrade(
        1,
        "journal, migration progress, sync state, dead letters, before-images, schema fingerprints",
        v1.apply,
    ),
    Upgrade(2, "backfill checkpoints and before-images", v2.apply),
    Upgrade(3, "index definitions a sync set aside", v3.apply),
)

_VERSION_SQL = """
CREATE TABLE IF NOT EXISTS pgferry.schema_version (
    version      integer     PRIMARY KEY,
    description  text        NOT NULL,
    installed_on timestamptz NOT NULL DEFAULT clock_timestamp(),
    installed_by text        NOT NULL DEFAULT session_user,
    pgferry      text        NOT NULL
)
"""

_STATE_SQL = """
SELECT to_regclass('pgferry.schema_version') IS NOT NULL,
       (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('pgferry.journal')),
       ARRAY(SELECT tgname::text FROM pg_trigger
             WHERE tgrelid = to_regclass('pgferry.journal_log') AND tgenabled IN ('O', 'A')
             ORDER BY 1),
       to_regclass('pgferry.journal_log') IS NOT NULL
       AND to_regclass('pgferry.migration_progress') IS NOT NULL
       AND to_regclass('pgferry.sync_state') IS NOT NULL
       AND to_regclass('pgferry.dead_letters') IS NOT NULL
       AND to_regclass('pgferry.before_images') IS NOT NULL
       AND to_regclass('pgferry.schema_fingerprint') IS NOT NULL,
       to_regclass('pgferry.backfill_state') IS NOT NULL
       AND to_regclass('pgferry.backfill_images') IS NOT NULL,
       to_regclass('pgferry.set_aside') IS NOT NULL
"""


@dataclass(frozen=True)
class SchemaState:
    """What a target holds of pgferry's schema."""

    recorded: int | None  # the newest version in pgferry.schema_version (None: no table)
    journal_kind: str | None  # relkind of pgferry.journal: "v", "r" (before the chain), None
    triggers: tuple[str, ...]  # the journal's enabled triggers
    whole_v1: bool  # every object of version 1 is there
    whole_v2: bool = False  # ... and of version 2
    whole_v3: bool = False  # ... and of version 3

    @property
    def version(self) -> int:
        """The version the schema has: recorded, else 1 when it holds all of version 1
        (an earlier pgferry made it; 2 or 3 when it holds those versions too), else 0 (none, or an
        earlier pgferry's part)."""
        if self.recorded is not None:
            return self.recorded
        if not (self.whole_v1 and self.journal_kind == "v"):
            return 0
        if not self.whole_v2:
            return 1
        return 3 if self.whole_v3 else 2

    def triggers_whole(self) -> bool:
        return self.journal_kind != "v" or self.triggers == v1.TRIGGERS


def state(conn: psycopg.Connection[Any]) -> SchemaState:
    """Read what the target holds (two catalog reads, no lock)."""
    row = conn.execute(_STATE_SQL).fetchone()
    assert row is not None
    recorded = None
    if row[0]:
        got = conn.execute("SELECT max(version) FROM pgferry.schema_version").fetchone()
        recorded = int(got[0]) if got and got[0] is not None else 0
    return SchemaState(recorded, row[1], tuple(row[2]), bool(row[3]), bool(row[4]), bool(row[5]))


def exists(conn: psycopg.Connection[Any]) -> bool:
    """True when this database has pgferry's journal (any layout)."""
    row = conn.execute(
        "SELECT to_regclass('pgferry.journal') IS NOT NULL"
        " OR to_regclass('pgferry.journal_log') IS NOT NULL"
    ).fetchone()
    return bool(row and row[0])


def ensure(conn: psycopg.Connection[Any], steps: Sequence[Upgrade] = STEPS) -> list[str]:
    """Bring pgferry's schema to the newest of ``steps`` (see the module docstring);
    the journal triggers it had to re-create."""
    newest = steps[-1].version
    st = state(conn)
    if st.version >= newest and st.recorded is not None and st.triggers_whole():
        return []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [v1.CHAIN_LOCK])
        st = state(conn)  # again, under the lock: another process may have done it
        if st.version >= newest and st.recorded is not None and st.triggers_whole():
            return []
        try:
            with conn.transaction():
                return _upgrade(conn, st, steps)
        except (e_.InsufficientPrivilege, e_.ReadOnlySqlTransaction) as e:
            if st.version >= newest and st.triggers_whole():
                return []  # current for this role's purposes: it writes rows, not DDL
            if isinstance(e, e_.ReadOnlySqlTransaction):
                raise OperationFailed(
                    "this database takes no writes: it is a standby, or sessions start "
                    "read-only (default_transaction_read_only = on, as a provider's "
                    "read-only mode on a full disk sets it); nothing was written",
                    schema_version=st.version,
                ) from None
            raise BadInput(
                f"pgferry's schema in this database is at version {st.version} and this "
                f"pgferry needs version {newest}, but the role {conn.info.user!r} may not "
                f"change it ({(e.diag.message_primary or str(e)).strip()}); run any pgferry "
                "command that writes once as the owner of schema pgferry (or of the "
                "database) to upgrade it",
                schema_version=st.version,
                needed=newest,
            ) from None


def _upgrade(conn: psycopg.Connection[Any], st: SchemaState, steps: Sequence[Upgrade]) -> list[str]:
    from pgferry import __version__

    conn.execute("CREATE SCHEMA IF NOT EXISTS pgferry")
    conn.execute(_VERSION_SQL)
    start = st.recorded if st.recorded is not None else 0
    for step in steps:
        if step.version <= start:
            continue
        step.apply(conn)
        conn.execute(
            "INSERT INTO pgferry.schema_version (version, description, pgferry)"
            " VALUES (%s, %s, %s) ON CONFLICT (version) DO NOTHING",
            [step.version, step.description, __version__],
        )
    restored: list[str] = []
    if st.journal_kind == "v" and not st.triggers_whole():
        restored = [t for t in v1.TRIGGERS if t not in st.triggers]
        v1.repair_journal(conn)
    return restored

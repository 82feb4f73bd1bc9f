"""What a health run read from an environment: plain data, no logic, no I/O.

Contract: :func:`pgferry.health.checks.gather` fills one :class:`HealthFacts` per run (on
one connection, plus the migrations directory and the backup catalog on disk);
:func:`pgferry.health.status.evaluate` turns it into statuses. A part that could
not be read is ``None`` (or empty) with its reason in :attr:`HealthFacts.failures`, keyed
by the check it feeds, so that check reports ``unknown`` and says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Session:
    """A client session of this database (``pg_stat_activity``)."""

    pid: int
    role: str
    application: str
    state: str
    xact_age_s: float | None  # how long its transaction has been open
    state_age_s: float | None  # how long it has been in its state
    query: str


@dataclass
class Slot:
    """A replication slot (``pg_replication_slots``): WAL is kept until its consumer reads it."""

    name: str
    kind: str  # physical | logical
    active: bool
    retained_bytes: int  # WAL from its restart_lsn to now (0 on a standby)
    wal_status: str  # reserved | extended | unreserved | lost ("" before it has one)


@dataclass
class PreparedXact:
    """A prepared transaction (``pg_prepared_xacts``): open until committed or rolled back."""

    gid: str
    owner: str
    age_s: float


@dataclass
class Waiter:
    """A session waiting for a lock (``pg_locks``, ``pg_blocking_pids``)."""

    pid: int
    blocking: list[int]
    #: None: not known (PostgreSQL 13, which has no pg_locks.waitstart, and a session of
    #: another role without pg_read_all_stats)
    waited_s: float | None
    query: str  # '' when the role may not see it


@dataclass
class SequenceUse:
    name: str
    used_pct: float  # of the range its type (and its column's type) allows
    last_value: int
    limit: int


@dataclass
class SlowStatement:
    """A ``pg_stat_statements`` row."""

    query: str
    calls: int
    mean_ms: float
    total_ms: float


@dataclass
class TableRows:
    rows: int | None
    estimated: bool = False
    missing: bool = False  # the table does not exist
    error: str | None = None  # why it could not be counted (timeout, privilege)
    hidden_by_rls: bool = False  # row-level security applies to the role: count(*) would lie


@dataclass
class Migrations:
    """From the migration engine (:mod:`pgferry.migrate.status`)."""

    current: str | None
    pending: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # changed or deleted after applying


@dataclass
class Drift:
    """The schema now against the fingerprint ``migrate up`` recorded."""

    recorded_at: datetime | None  # None: no fingerprint recorded yet
    version: str | None = None
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass
class SyncRun:
    """A ``sync`` row of the target's journal (details hold the run's result)."""

    source: str
    outcome: str  # ok | problem | failed | refused | died | running
    finished_at: datetime | None
    duration_s: float | None
    run_id: str | None


@dataclass
class Sync:
    runs: list[SyncRun] = field(default_factory=list)  # newest first
    dead_letters: int = 0  # rows no later clean sync of their table has written
    dead_letter_tables: dict[str, int] = field(default_factory=dict)
    #: rows written by every sync in the journal, by (table, result)
    rows: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class Backups:
    """From the backup catalog on disk (:mod:`pgferry.health.backups`)."""

    directory: str
    exists: bool  # the environment has a backup directory at all
    complete: int = 0
    last_complete: datetime | None = None
    last_restore_test: datetime | None = None
    last_verify_failed: str | None = None  # id of the newest backup whose verification failed
    too_small: tuple[str, int] | None = None  # (id, bytes): newest complete, below min_size


@dataclass
class HealthFacts:
    env: str
    checked_at: datetime
    reachable: bool
    error: str | None = None  # why the database did not answer
    latency_s: float | None = None
    role: str = ""
    read_all_stats: bool = False
    server_version: int = 0
    max_connections: int = 0
    backends: int = 0
    #: client sessions in this database the role may not see (other roles', without
    #: pg_read_all_stats): their transactions and states are hidden
    hidden_sessions: int = 0
    sessions: list[Session] = field(default_factory=list)
    prepared: list[PreparedXact] = field(default_factory=list)
    waiters: list[Waiter] = field(default_factory=list)
    #: the oldest ages of any database of the server (wraparound stops them all)
    xid_age: int | None = None
    mxid_age: int | None = None
    oldest_database: str | None = None  # the database they are from, when not this one
    slots: list[Slot] = field(default_factory=list)
    #: a standby (pg_is_in_recovery()): it takes no writes
    in_recovery: bool = False
    #: sessions of the role start read-only here (default_transaction_read_only = on, set
    #: for the server, the database or the role: a provider's read-only mode)
    read_only: bool = False
    sequences: list[SequenceUse] = field(default_factory=list)
    unreadable_sequences: list[str] = field(default_factory=list)
    invalid_indexes: list[str] = field(default_factory=list)
    tables_without_pk: list[str] = field(default_factory=list)
    statements: list[SlowStatement] | None = None  # None: pg_stat_statements is absent
    migrations: Migrations | None = None
    drift: Drift | None = None
    sync: Sync | None = None
    backups: Backups | None = None
    tables: dict[str, TableRows] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # check -> why it could not run
    duration_s: float = 0.0
    #: how long the last run of each kind took (health: this one), for the metrics
    durations: dict[str, float] = field(default_factory=dict)

"""Gather a health run's facts: one connection, one round of catalog queries.

Contract: :func:`gather` connects to the environment once (within ``[health]
timeout``, retrying a transient failure while time is left), measures ``SELECT 1``,
then runs each part of :data:`PARTS` on that connection under ``statement_timeout``
(autocommit, read-only: health never writes to the database). A part that fails
(a privilege missing, a timeout, an extension not loaded) records its reason in
``HealthFacts.failures`` under the checks it feeds, and the others still run. The
backup catalog is read from disk even when the database does not answer. Nothing
here judges: :mod:`pgferry.health.status` does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from pgferry.config import Config, HealthThresholds, pg_duration
from pgferry.errors import PgferryError
from pgferry.health import backups, gather_sync
from pgferry.health import facts as fx
from pgferry.health.facts import HealthFacts
from pgferry.pg import fingerprint
from pgferry.pg.connect import Target, is_transient, map_db_error, redact

APP = "pgferry health"
Conn = psycopg.Connection[Any]

SERVER_SQL = """
SELECT current_user,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
           OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       current_setting('server_version_num')::int, current_setting('max_connections')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE usesysid IS NOT NULL),
       (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
            AND usesysid IS NOT NULL AND state IS NULL AND pid <> pg_backend_pid()),
       -- wraparound stops writes to every database of the server: the oldest of them counts
       (SELECT max(age(datfrozenxid)) FROM pg_database),
       (SELECT max(mxid_age(datminmxid)) FROM pg_database),
       nullif((SELECT datname FROM pg_database
               ORDER BY greatest(age(datfrozenxid), mxid_age(datminmxid)) DESC LIMIT 1),
              current_database()),
       -- writes: a standby takes none, nor does a session that starts read-only (the
       -- health session sets nothing of its own, so it starts as the application's do)
       pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'
"""
SESSIONS_SQL = """
SELECT pid, usename, application_name, state,
       extract(epoch FROM clock_timestamp() - xact_start)::float8,
       extract(epoch FROM clock_timestamp() - state_change)::float8, left(query, 300)
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
  AND backend_type = 'client backend'
"""
# a prepared transaction belongs to no session: it holds its locks and the xmin horizon
# until someone commits or rolls it back (pg_prepared_xacts is readable by every role)
PREPARED_SQL = """
SELECT gid, owner, extract(epoch FROM clock_timestamp() - prepared)::float8
FROM pg_prepared_xacts WHERE database = current_database()
"""
# pg_locks and pg_blocking_pids need no privilege: waiters are seen whoever they are
WAITERS_SQL = """
SELECT l.pid, pg_blocking_pids(l.pid),
       extract(epoch FROM clock_timestamp() - min(coalesce(l.waitstart, clock_timestamp())))
           ::float8,
       coalesce(nullif(max(a.query), '<insufficient privilege>'), '')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted AND a.datname = current_database()
GROUP BY l.pid
"""
# PostgreSQL 13 has no pg_locks.waitstart: a waiter waits since its statement began at
# most (state_change), which only its own role or pg_read_all_stats may see (else NULL)
WAITERS_SQL_13 = """
SELECT l.pid, pg_blocking_pids(l.pid),
       extract(epoch FROM clock_timestamp() - max(a.state_change))::float8,
       coalesce(nullif(max(a.query), '<insufficient privilege>'), '')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted AND a.datname = current_database()
GROUP BY l.pid
"""
SEQUENCES_SQL = """
SELECT format('%I.%I', n.nspname, c.relname), s.seqincrement, s.seqmin, s.seqmax,
       has_sequence_privilege(c.oid, 'SELECT,USAGE'),
       CASE WHEN has_sequence_privilege(c.oid, 'SELECT,USAGE')
            THEN pg_sequence_last_value(c.oid) END,
       -- the types of the columns it feeds: its owner's (serial, identity), and every
       -- column whose DEFAULT calls it (a sequence made by hand, or shared)
       ARRAY(SELECT format_type(a.atttypid, NULL) FROM pg_depend d
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
               AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
               AND d.refobjsubid > 0
             UNION
             SELECT format_type(a.atttypid, NULL) FROM pg_depend d
             JOIN pg_attrdef ad ON ad.oid = d.objid
             JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
             WHERE d.classid = 'pg_attrdef'::regclass
               AND d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid)
FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname <> 'pgferry'
"""
INVALID_SQL = """
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid ORDER BY 1
"""
NO_PK_SQL = """
SELECT n.nspname || '.' || c.relname FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p')
ORDER BY 1
"""
TABLES_SQL = """
SELECT w.s || '.' || w.t,
       -- before PostgreSQL 14 reltuples is 0, not -1, until the first VACUUM or ANALYZE
       CASE WHEN c.reltuples <> 0 OR c.relpages > 0
                 OR current_setting('server_version_num')::int >= 140000
            THEN c.reltuples::bigint
            WHEN (SELECT coalesce(s.last_vacuum, s.last_autovacuum, s.last_analyze,
                                  s.last_autoanalyze)
                  FROM pg_stat_all_tables s WHERE s.relid = c.oid) IS NOT NULL
            THEN 0 ELSE -1 END,
       row_security_active(c.oid)
FROM unnest(%s::text[], %s::text[]) AS w(s, t)
JOIN pg_namespace n ON n.nspname = w.s JOIN pg_class c ON c.relnamespace = n.oid
     AND c.relname = w.t AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
"""
#: the largest value of a column type a sequence can feed
TYPE_MAX = {"smallint": 32767, "integer": 2147483647}


def connect(target: Target, th: HealthThresholds) -> Conn:
    """One autocommit connection within ``timeout``; PgferryError (redacted) when none."""
    timeout = th.seconds("timeout")
    deadline = time.monotonic() + timeout

    def attempt() -> Conn:
        left = deadline - time.monotonic()
        return psycopg.connect(
            target.dsn,
            autocommit=True,
            application_name=APP,
            connect_timeout=max(2, math.ceil(left)),
        )

    try:  # a transient failure is tried again while a quarter second or more is left
        return Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_fixed(0.2),
            stop=stop_after_delay(max(0.0, timeout - 0.25)),
            reraise=True,
        )(attempt)
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot connect to {target.display}") from None


def server(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    row = conn.execute(SERVER_SQL).fetchone()
    assert row is not None
    (
        f.role,
        f.read_all_stats,
        f.server_version,
        f.max_connections,
        f.backends,
        f.hidden_sessions,
        f.xid_age,
        f.mxid_age,
        f.oldest_database,
        f.in_recovery,
        f.read_only,
    ) = row


def sessions(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    f.sessions = [
        fx.Session(pid, role or "", app or "", state or "", xact, since, q or "")
        for pid, role, app, state, xact, since, q in conn.execute(SESSIONS_SQL)
    ]


def prepared(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    f.prepared = [
        fx.PreparedXact(gid, owner, age) for gid, owner, age in conn.execute(PREPARED_SQL)
    ]


SLOTS_SQL = """
SELECT slot_name::text, slot_type, active,
       CASE WHEN pg_is_in_recovery() OR restart_lsn IS NULL THEN 0
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint END,
       coalesce(wal_status, '')
FROM pg_replication_slots ORDER BY slot_name
"""


def slots(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    f.slots = [fx.Slot(*row) for row in conn.execute(SLOTS_SQL)]


def waiters(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    query = WAITERS_SQL if conn.info.server_version >= 140000 else WAITERS_SQL_13
    f.waiters = [
        fx.Waiter(pid, list(blocking or []), waited, q)
        for pid, blocking, waited, q in conn.execute(query)
    ]


def sequences(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    for name, inc, lo, hi, readable, last, cols in conn.execute(SEQUENCES_SQL):
        if not readable:
            f.unreadable_sequences.append(name)
            continue
        if last is None:  # never used
            continue
        if inc > 0:
            limit = min([hi, *(TYPE_MAX.get(col, hi) for col in cols or [])])
            used = (last - lo) / max(1, limit - lo)
        else:
            limit = max([lo, *(-TYPE_MAX.get(col, -lo) - 1 for col in cols or [])])
            used = (hi - last) / max(1, hi - limit)
        f.sequences.append(fx.SequenceUse(name, 100.0 * used, int(last), int(limit)))


def indexes(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    f.invalid_indexes = [r[0] for r in conn.execute(INVALID_SQL)]


def primary_keys(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    keyed = {t for t, tc in cfg.sync.table.items() if tc.key}
    skip = set(cfg.sync.exclude) | keyed | {f"{cfg.migrate.schema_}.{cfg.migrate.history_table}"}
    f.tables_without_pk = [
        t
        for (t,) in conn.execute(NO_PK_SQL, [cfg.sync.schemas])
        if t not in skip and (not cfg.sync.tables or t in cfg.sync.tables)
    ]


def statements(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    row = conn.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension"
        " WHERE extname = 'pg_stat_statements'"
    ).fetchone()
    if row is None:
        return  # f.statements stays None: the extension is absent
    view = sql.Identifier(row[0].strip('"'), "pg_stat_statements")
    q = sql.SQL(
        "SELECT query, calls, mean_exec_time, total_exec_time FROM {} WHERE dbid ="
        " (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND mean_exec_time > %s ORDER BY total_exec_time DESC LIMIT 20"
    ).format(view)
    f.statements = [
        fx.SlowStatement(q or "", int(c), float(m), float(t))
        for q, c, m, t in conn.execute(q, [th.slow_query_ms])
    ]


def migrations(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    from pgferry.migrate import files
    from pgferry.migrate import status as status_mod

    ms = files.scan(cfg.migrations_dir)
    rows = status_mod.read_history(conn, cfg)
    failed = status_mod.failed_statements(conn, cfg) if any(not r.success for r in rows) else {}
    s = status_mod.build(cfg, f.env, ms, rows, failed)

    def named(*states: str) -> list[str]:
        return [e.script or e.description for e in s.entries if e.state in states]

    f.migrations = fx.Migrations(
        current=s.current,
        pending=named("pending", "undone", "outdated", "template"),
        failed=named("failed"),
        mismatched=named("checksum_mismatch", "missing"),
    )


def drift(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    rec = fingerprint.latest(conn)
    if rec is None:
        f.drift = fx.Drift(recorded_at=None)
        return
    changed, added, removed = fingerprint.compare(rec.objects, fingerprint.objects(conn))
    f.drift = fx.Drift(rec.at, rec.version, changed, added, removed)


def tables(conn: Conn, f: HealthFacts, cfg: Config, th: HealthThresholds) -> None:
    names = sorted(th.tables)
    parts = [n.split(".", 1) for n in names]
    rows = conn.execute(TABLES_SQL, [[p[0] for p in parts], [p[1] for p in parts]])
    found = {name: (n, rls) for name, n, rls in rows}
    for name, (schema, table) in zip(names, parts, strict=True):
        if name not in found:
            f.tables[name] = fx.TableRows(None, missing=True)
        elif th.tables[name].estimate:
            n = found[name][0]
            f.tables[name] = (
                fx.TableRows(int(n), estimated=True)
                if n >= 0
                else fx.TableRows(
                    None, error="it was never analyzed, so pg_class has no estimate; run ANALYZE"
                )
            )
        elif found[name][1]:  # count(*) would count only the rows its policies show the role
            f.tables[name] = fx.TableRows(None, hidden_by_rls=True)
        else:
            try:
                row = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
                ).fetchone()
                f.tables[name] = fx.TableRows(int(row[0]) if row else 0)
            except psycopg.Error as e:
                if conn.broken:
                    raise
                f.tables[name] = fx.TableRows(None, error=_reason(e))


Part = Callable[[Conn, HealthFacts, Config, HealthThresholds], None]
#: (the checks a part feeds, the part), in the order they run
PARTS: list[tuple[tuple[str, ...], Part]] = [
    (("connections", "wraparound", "long_transactions", "idle_in_transaction", "writable"), server),
    (("replication_slots",), slots),
    (("long_transactions", "idle_in_transaction"), sessions),
    (("long_transactions",), prepared),
    (("blocked_sessions",), waiters),
    (("sequences",), sequences),
    (("invalid_indexes",), indexes),
    (("tables_without_pk",), primary_keys),
    (("slow_statements",), statements),
    (("migrations",), migrations),
    (("schema_drift",), drift),
    (("sync", "dead_letters"), gather_sync.sync),
    (("tables",), tables),
]


def _reason(e: Exception) -> str:
    if isinstance(e, psycopg.Error):
        return map_db_error(e).message
    return redact(str(e))


def gather(cfg: Config, target: Target, th: HealthThresholds, now: datetime) -> HealthFacts:
    """Everything the checks judge, read from ``target`` (and the disk) once."""
    start = time.monotonic()
    f = HealthFacts(env=target.name, checked_at=now, reachable=False)
    try:
        f.backups = backups.read(cfg, target.name)
    except OSError as e:
        f.failures["backups"] = f.failures["restore_test"] = redact(str(e))
    try:
        conn = connect(target, th)
    except PgferryError as e:
        f.error = e.message
        f.duration_s = f.durations["health"] = time.monotonic() - start
        return f
    with conn:
        t0 = time.monotonic()
        try:
            conn.execute("SELECT 1")
            f.latency_s = time.monotonic() - t0
            f.reachable = True
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false),"
                " set_config('lock_timeout', %s, false)",
                [pg_duration(th.statement_timeout), pg_duration(th.statement_timeout)],
            )
        except psycopg.Error as e:
            f.reachable, f.error = False, _reason(e)
        for feeds, part in PARTS if f.reachable else []:
            try:
                part(conn, f, cfg, th)
            except (psycopg.Error, PgferryError) as e:
                why = e.message if isinstance(e, PgferryError) else _reason(e)
                for name in feeds:
                    f.failures.setdefault(name, why)
    f.duration_s = f.durations["health"] = time.monotonic() - start
    return f

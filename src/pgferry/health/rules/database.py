"""The rules that judge the database server's own state.

Contract: one pure function per check (a :data:`~pgferry.health.rules.verdict.Rule`):
reachability, connections, long and idle-in-transaction sessions, sessions blocked on a
lock, wraparound, sequences, invalid indexes, tables without a primary key, slow
statements. A check that cannot see what it judges (sessions of other roles, unreadable
sequences, no pg_stat_statements) is ``unknown`` and says what to grant or install.
"""

from __future__ import annotations

from datetime import datetime

from pgferry.config import HealthThresholds
from pgferry.health.facts import HealthFacts, Session
from pgferry.health.rules.verdict import Status, Verdict, dur, grant


def _short(query: str, n: int = 80) -> str:
    q = " ".join(query.split())
    return q if len(q) <= n else q[: n - 1] + "…"


def _level(value: float, warn: float, critical: float) -> Status:
    return "critical" if value >= critical else "degraded" if value >= warn else "optimal"


def reachability(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    limit = f"answers within {th.timeout}, SELECT 1 under {th.latency_warn}"
    if not f.reachable:
        return (
            "critical",
            "unreachable",
            limit,
            f"{f.env} did not answer: {f.error}",
            f"check that the server is running and reachable from here "
            f"(`pgferry env check --env {f.env}`)",
        )
    ms = (f.latency_s or 0.0) * 1000
    if ms > th.seconds("latency_warn") * 1000:
        return (
            "degraded",
            f"{ms:.0f} ms",
            limit,
            f"SELECT 1 took {ms:.0f} ms, above latency_warn ({th.latency_warn})",
            "look at the server's load and at the network between here and the server",
        )
    return "optimal", f"{ms:.0f} ms", limit, f"answered SELECT 1 in {ms:.0f} ms", ""


def writable(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:  # noqa: ARG001
    """A database that takes no writes answers every read, so nothing else here notices."""
    limit = "takes writes"
    if f.in_recovery:
        return (
            "critical",
            "standby",
            limit,
            f"{f.env} is a standby (in recovery): every write fails there",
            "point the environment's URL at the primary (after a failover, at the new one)",
        )
    if f.read_only:
        return (
            "critical",
            "read-only",
            limit,
            f"sessions of {f.role or 'the role'} on {f.env} start read-only "
            "(default_transaction_read_only = on), so the application's writes fail",
            "find where it is set (SELECT source FROM pg_settings WHERE name = "
            "'default_transaction_read_only'; a provider's read-only mode when the disk is "
            "full sets it) and clear it: ALTER DATABASE ... RESET "
            "default_transaction_read_only, or free disk space",
        )
    return "optimal", "yes", limit, "takes writes (a primary, not read-only)", ""


def connections(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    pct = 100.0 * f.backends / f.max_connections if f.max_connections else 0.0
    status = _level(pct, th.connections_warn, th.connections_critical)
    value = f"{f.backends}/{f.max_connections} ({pct:.0f}%)"
    limit = f"{th.connections_warn:g}% / {th.connections_critical:g}% of max_connections"
    if status == "optimal":
        return status, value, limit, f"{f.backends} of {f.max_connections} connections in use", ""
    return (
        status,
        value,
        limit,
        f"{pct:.0f}% of max_connections is in use",
        "put a pooler (PgBouncer) in front, or lower the application's pool sizes",
    )


def _sessions(
    f: HealthFacts,
    th: HealthThresholds,
    name: str,
    rows: list[tuple[Session, float]],
    what: str,
    fix: str,
) -> Verdict:
    warn, crit = th.seconds(f"{name}_warn"), th.seconds(f"{name}_critical")
    limit = f"{getattr(th, f'{name}_warn')} / {getattr(th, f'{name}_critical')}"
    if rows:
        s, age = max(rows, key=lambda r: r[1])
        status = _level(age, warn, crit)
        if status != "optimal":
            return (
                status,
                dur(age),
                limit,
                f"pid {s.pid} ({s.role}, {s.application or 'no application_name'}) has "
                f"{what} for {dur(age)}: {_short(s.query)}",
                fix.format(pid=s.pid),
            )
    oldest = dur(max(a for _, a in rows)) if rows else "none"
    if f.hidden_sessions and not f.read_all_stats:
        return (
            "unknown",
            oldest,
            limit,
            f"{f.hidden_sessions} session(s) of other roles are hidden from {f.role}",
            f"{grant(f)}, so their transactions can be seen",
        )
    return "optimal", oldest, limit, f"oldest: {oldest}", ""


def long_transactions(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    rows = [(s, s.xact_age_s) for s in f.sessions if s.xact_age_s is not None]
    p = max(f.prepared, key=lambda p: p.age_s, default=None)
    if p is not None and p.age_s >= max([a for _, a in rows], default=0.0):
        status = _level(
            p.age_s, th.seconds("long_transaction_warn"), th.seconds("long_transaction_critical")
        )
        if status != "optimal":
            return (
                status,
                dur(p.age_s),
                f"{th.long_transaction_warn} / {th.long_transaction_critical}",
                f"prepared transaction '{p.gid}' ({p.owner}) has been open for {dur(p.age_s)}, "
                "holding its locks and the xmin horizon",
                f"find what prepared it; then COMMIT PREPARED or ROLLBACK PREPARED '{p.gid}'",
            )
    return _sessions(
        f,
        th,
        "long_transaction",
        rows,
        "had a transaction open",
        "find why it stays open; if it is stuck, end it with SELECT pg_terminate_backend({pid})",
    )


def idle_in_transaction(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    rows = [
        (s, s.state_age_s)
        for s in f.sessions
        if s.state.startswith("idle in transaction") and s.state_age_s is not None
    ]
    return _sessions(
        f,
        th,
        "idle_in_transaction",
        rows,
        "been idle inside a transaction",
        "set idle_in_transaction_session_timeout for the application's role; end "
        "this one with SELECT pg_terminate_backend({pid})",
    )


def blocked_sessions(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    limit = f"waiting > {th.blocked_warn}"
    timed = [(w, w.waited_s) for w in f.waiters if w.waited_s is not None]
    late = [w for w, s in sorted(timed, key=lambda x: -x[1]) if s >= th.seconds("blocked_warn")]
    untimed = len(f.waiters) - len(timed)
    if not late and untimed:
        return (
            "unknown",
            f"{len(f.waiters)} waiting",
            limit,
            f"{untimed} session(s) of other roles wait for a lock, and PostgreSQL "
            f"{f.server_version // 10000} hides since when from {f.role}",
            f"{grant(f)}, so their waits can be timed",
        )
    if not late:
        return "optimal", f"{len(f.waiters)} waiting", limit, "no session waits long for a lock", ""
    w = late[0]
    assert w.waited_s is not None
    blockers = ", ".join(map(str, w.blocking)) or "unknown"
    first = w.blocking[0] if w.blocking else w.pid
    query = f": {_short(w.query)}" if w.query else ""
    return (
        "degraded",
        f"{len(late)} waiting",
        limit,
        f"pid {w.pid} has waited {dur(w.waited_s)} for a lock held by pid {blockers}{query}"
        + (f" ({len(late) - 1} more waiting)" if len(late) > 1 else ""),
        f"see what pid {first} does (its row in pg_stat_activity); if it is stuck, end it "
        f"with SELECT pg_terminate_backend({first})",
    )


def wraparound(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    xid, mxid = f.xid_age or 0, f.mxid_age or 0
    status = _level(max(xid, mxid), th.wraparound_warn, th.wraparound_critical)
    value = f"xid {xid:,}, multixact {mxid:,}"
    limit = f"{th.wraparound_warn:,} / {th.wraparound_critical:,}"
    if status == "optimal":
        return status, value, limit, "transaction ID and multixact ages are far from wraparound", ""
    where = f"database {f.oldest_database}" if f.oldest_database else "the database"
    return (
        status,
        value,
        limit,
        f"{where}'s {'multixact' if mxid > xid else 'xid'} age {max(xid, mxid):,} nears "
        "wraparound (2,147,483,648), which stops writes to every database of the server",
        f"VACUUM (FREEZE) the oldest tables of {where} and end what holds the xmin horizon "
        "back (long transactions, prepared transactions, replication slots)",
    )


def replication_slots(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:  # noqa: ARG001
    """A slot whose consumer is gone keeps every WAL segment since: the disk fills until the
    database stops taking writes, and no other check sees it coming."""
    limit = f"{th.slot_wal_warn_mb:g} MB / {th.slot_wal_critical_mb:g} MB of WAL kept"
    worst = max(f.slots, key=lambda s: s.retained_bytes, default=None)
    if worst is None:
        return "optimal", "none", limit, "no replication slot", ""
    mb = worst.retained_bytes / 1_048_576
    status = _level(mb, th.slot_wal_warn_mb, th.slot_wal_critical_mb)
    lost = [s.name for s in f.slots if s.wal_status == "lost"]
    value = f"{mb:,.0f} MB ({worst.name})"
    if status == "optimal" and not lost:
        return status, value, limit, f"{len(f.slots)} slot(s); the most WAL kept: {value}", ""
    if status == "optimal":
        return (
            "degraded",
            value,
            limit,
            f"slot {lost[0]} lost WAL its consumer had not read: that consumer cannot go on",
            f"rebuild its consumer, then drop the slot: SELECT pg_drop_replication_slot("
            f"'{lost[0]}')",
        )
    state = "active, its consumer behind" if worst.active else "inactive: its consumer is gone"
    return (
        status,
        value,
        limit,
        f"{worst.kind} slot {worst.name} ({state}) keeps {mb:,.0f} MB of WAL from being "
        "removed: the disk fills until the database stops taking writes",
        f"if nothing reads it any more, SELECT pg_drop_replication_slot('{worst.name}'); "
        "else see why its consumer lags",
    )


def sequences(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    limit = f"{th.sequence_warn:g}% / {th.sequence_critical:g}% of the range"
    worst = max(f.sequences, key=lambda s: s.used_pct, default=None)
    used = f"{worst.used_pct:.1f}% ({worst.name})" if worst else "none"
    if worst is not None:
        status = _level(worst.used_pct, th.sequence_warn, th.sequence_critical)
        if status != "optimal":
            return (
                status,
                used,
                limit,
                f"sequence {worst.name} has used {worst.used_pct:.1f}% "
                f"of its range ({worst.last_value:,} of {worst.limit:,})",
                "move the column and its sequence to bigint (ALTER SEQUENCE ... AS bigint) "
                "before it runs out",
            )
    if f.unreadable_sequences:
        names = ", ".join(f.unreadable_sequences[:3])
        return (
            "unknown",
            used,
            limit,
            f"{len(f.unreadable_sequences)} sequence(s) are not readable by {f.role}: {names}",
            "; ".join(
                f"GRANT SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {f.role}"
                for schema in sorted({n.split(".")[0] for n in f.unreadable_sequences})
            ),
        )
    return "optimal", used, limit, f"the most used sequence: {used}", ""


def invalid_indexes(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    if not f.invalid_indexes:
        return "optimal", "0", "0", "no invalid index", ""
    names = ", ".join(f.invalid_indexes[:5])
    return (
        "degraded",
        str(len(f.invalid_indexes)),
        "0",
        f"invalid index(es), left by a failed CREATE INDEX CONCURRENTLY: {names}",
        f"REINDEX INDEX CONCURRENTLY {f.invalid_indexes[0]} (or drop it and build it again)",
    )


def tables_without_pk(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    if not f.tables_without_pk:
        return "optimal", "0", "0", "every synced table has a primary key", ""
    names = ", ".join(f.tables_without_pk[:5])
    return (
        "degraded",
        str(len(f.tables_without_pk)),
        "0",
        f"table(s) without a primary key cannot be synced incrementally: {names}",
        f'add a primary key, or name a key in [sync.tables."{f.tables_without_pk[0]}"]',
    )


def slow_statements(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    limit = f"mean < {th.slow_query_ms:g} ms"
    if f.statements is None:
        return (
            "unknown",
            "",
            limit,
            "pg_stat_statements is not installed in this database, "
            "so slow statements cannot be seen",
            "add pg_stat_statements to shared_preload_libraries and run CREATE EXTENSION "
            "pg_stat_statements (hosted: enable it in the provider's console)",
        )
    slow = sorted(
        (s for s in f.statements if s.mean_ms > th.slow_query_ms), key=lambda s: -s.total_ms
    )
    if not slow:
        return "optimal", "0", limit, "no statement averages above the threshold", ""
    s = slow[0]
    return (
        "degraded",
        str(len(slow)),
        limit,
        f"{len(slow)} statement(s) average above {th.slow_query_ms:g} ms; the costliest: "
        f"{_short(s.query, 60)} ({s.mean_ms:.0f} ms mean, {s.calls} calls, "
        f"{s.total_ms / 1000:.1f} s in all)",
        "EXPLAIN (ANALYZE) them; add the missing index or rewrite them",
    )

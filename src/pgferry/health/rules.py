"""One rule per check: facts + thresholds + now → (status, value, threshold, message, fix).

Pure (no I/O, no clock). :data:`RULES` is the order ``pgferry health`` lists the
checks in; :func:`table_rows` judges one ``[health.tables]`` entry. Every message
says what is wrong in one sentence, and ``fix`` what to do about it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pgferry.config import HealthTableConfig, HealthThresholds
from pgferry.health.facts import HealthFacts, Session

#: a check's status, from best to worst; unknown: it could not be judged
Status = Literal["optimal", "healthy", "degraded", "critical", "unknown"]
Verdict = tuple[Status, str, str, str, str]  # status, value, threshold, message, fix
Rule = Callable[[HealthFacts, HealthThresholds, datetime], Verdict]

NOT_REACHED = "not checked: the database did not answer"
#: checks whose facts come from disk, judged even when the database does not answer
OFFLINE = frozenset({"backups", "restore_test"})


def dur(seconds: float) -> str:
    """``41 s``, ``5 min``, ``2.5 h``, ``3 d``: a duration a person reads at a glance."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _short(query: str, n: int = 80) -> str:
    q = " ".join(query.split())
    return q if len(q) <= n else q[: n - 1] + "…"


def _level(value: float, warn: float, critical: float) -> Status:
    return "critical" if value >= critical else "degraded" if value >= warn else "optimal"


def _grant(f: HealthFacts) -> str:
    return f"GRANT pg_read_all_stats TO {f.role or 'the role pgferry connects as'}"


def fix_for_failure(f: HealthFacts, reason: str) -> str:
    """What to do when a check's query failed."""
    if "permission denied" in reason:
        return f"grant the role {f.role} read access to it (or {_grant(f)})"
    if "statement timeout" in reason:
        return "raise [health] statement_timeout, or look at the server's load"
    return "fix what the message names, then run pgferry health again"


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
            f"{_grant(f)}, so their transactions can be seen",
        )
    return "optimal", oldest, limit, f"oldest: {oldest}", ""


def long_transactions(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    rows = [(s, s.xact_age_s) for s in f.sessions if s.xact_age_s is not None]
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
    late = sorted(
        (w for w in f.waiters if w.waited_s >= th.seconds("blocked_warn")),
        key=lambda w: -w.waited_s,
    )
    if not late:
        return "optimal", f"{len(f.waiters)} waiting", limit, "no session waits long for a lock", ""
    w = late[0]
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
    return (
        status,
        value,
        limit,
        f"the database's {'multixact' if mxid > xid else 'xid'} age "
        f"{max(xid, mxid):,} nears wraparound (2,147,483,648)",
        "VACUUM (FREEZE) its oldest tables and end what holds the xmin horizon back "
        "(long transactions, prepared transactions, replication slots)",
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


def migrations(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    m = f.migrations
    if m is None:
        return "unknown", "", "", "the migration history could not be read", ""
    value = f"{len(m.pending)} pending" if m.pending else f"at {m.current or 'none'}"
    if m.failed:
        return (
            "critical",
            value,
            "0 failed",
            f"{', '.join(m.failed)} failed: the schema may be half-applied",
            f"fix the cause, run `pgferry migrate repair --env {f.env}`, "
            f"then `pgferry migrate up --env {f.env}`",
        )
    if m.mismatched:
        return (
            "degraded",
            value,
            "0 changed",
            f"{', '.join(m.mismatched[:3])} changed or disappeared after it was applied",
            "restore the files from git, or run "
            f"`pgferry migrate repair --env {f.env}` if the change is cosmetic",
        )
    if m.pending:
        return (
            "degraded",
            value,
            "0 pending",
            f"{len(m.pending)} migration(s) not applied: {', '.join(m.pending[:3])}",
            f"run `pgferry migrate up --env {f.env}`",
        )
    return "optimal", value, "0 pending", f"every migration applied (version {m.current})", ""


def schema_drift(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    d = f.drift
    if d is None or d.recorded_at is None:
        return (
            "unknown",
            "",
            "",
            f"no schema fingerprint recorded in {f.env} yet",
            f"run `pgferry migrate up --env {f.env}`: it records one after it applies migrations",
        )
    diffs = (
        [f"{n} changed" for n in d.changed]
        + [f"{n} added" for n in d.added]
        + [f"{n} removed" for n in d.removed]
    )
    if not diffs:
        return (
            "optimal",
            "0",
            "0",
            f"the schema is what the migrations made (version {d.version})",
            "",
        )
    return (
        "degraded",
        str(len(diffs)),
        "0",
        f"{len(diffs)} object(s) differ from what the "
        f"migrations made (version {d.version}): {', '.join(diffs[:4])}",
        "make the change in a migration (or undo it by hand); `migrate up` records the "
        "new fingerprint when it applies one",
    )


def _age(now: datetime, at: datetime | None) -> float:
    return (now - at).total_seconds() if at else float("inf")


def backups(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    b, limit = f.backups, f"newer than {th.backup_max_age}"
    if b is None or not b.exists:
        where = b.directory if b else "the backup directory"
        return (
            "unknown",
            "none",
            limit,
            f"no backups of {f.env} under {where}",
            f"run `pgferry backup create --env {f.env}`, on a schedule",
        )
    age = _age(now, b.last_complete)
    if b.last_complete is None:
        return (
            "degraded",
            "none",
            limit,
            f"no complete backup of {f.env} in {b.directory}",
            f"run `pgferry backup create --env {f.env}` and see why the last one stopped",
        )
    if b.last_verify_failed:
        return (
            "degraded",
            dur(age),
            limit,
            f"backup {b.last_verify_failed} failed its verification",
            f"run `pgferry backup create --env {f.env}` and verify it",
        )
    if b.too_small:
        return (
            "degraded",
            dur(age),
            limit,
            f"the newest complete backup of {f.env} "
            f"({b.too_small[0]}) is {b.too_small[1]} bytes, below [backup] min_size",
            "check what the last backup left out (`pgferry backup list`) and the database's size",
        )
    if age > th.seconds("backup_max_age"):
        return (
            "degraded",
            dur(age),
            limit,
            f"the newest complete backup of {f.env} is "
            f"{dur(age)} old, above backup_max_age ({th.backup_max_age})",
            f"run `pgferry backup create --env {f.env}` and check the schedule",
        )
    return "optimal", dur(age), limit, f"newest complete backup: {dur(age)} old", ""


def restore_test(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    b, limit = f.backups, f"newer than {th.restore_test_max_age}"
    if b is None or not b.exists:
        return "unknown", "none", limit, f"no backups of {f.env} to restore-test", ""
    fix = f"restore-test the newest backup (`pgferry backup verify --env {f.env}`)"
    if b.last_restore_test is None:
        return "degraded", "never", limit, f"no backup of {f.env} was ever restore-tested", fix
    age = _age(now, b.last_restore_test)
    if age > th.seconds("restore_test_max_age"):
        return (
            "degraded",
            dur(age),
            limit,
            f"the last restore test of {f.env} was {dur(age)} "
            f"ago, above restore_test_max_age ({th.restore_test_max_age})",
            fix,
        )
    return "optimal", dur(age), limit, f"last restore test: {dur(age)} ago", ""


def sync(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    s, limit = f.sync, (f"newer than {th.sync_max_age}" if th.sync_max_age else "")
    runs = [r for r in (s.runs if s else []) if r.outcome != "running"]
    failed = 0
    for r in runs:
        if r.outcome not in ("failed", "died"):
            break
        failed += 1
    if failed:
        last = runs[0]
        return (
            "degraded",
            f"{failed} failed",
            limit or "0 failed",
            f"the last {failed} sync(s) into {f.env} failed ({failed} in a row); the newest "
            f"from {last.source}, {dur(_age(now, last.finished_at))} ago",
            f"read its error (`pgferry journal --env {f.env}`), fix it and sync again",
        )
    done = next((r for r in runs if r.outcome in ("ok", "problem")), None)
    if done is None:
        if th.sync_max_age:
            return (
                "degraded",
                "none",
                limit,
                f"no sync into {f.env} is recorded, and sync_max_age is {th.sync_max_age}",
                f"sync into {f.env}",
            )
        return "optimal", "none", limit, f"no sync into {f.env} is recorded", ""
    age = _age(now, done.finished_at)
    if th.sync_max_age and age > th.sync_max_age.total_seconds():
        return (
            "degraded",
            dur(age),
            limit,
            f"the last sync into {f.env} was {dur(age)} ago, "
            f"above sync_max_age ({th.sync_max_age})",
            "check the schedule that runs it",
        )
    return (
        "optimal",
        f"{done.outcome} {dur(age)} ago",
        limit,
        f"last sync from {done.source}: {done.outcome}, {dur(age)} ago",
        "",
    )


def dead_letters(f: HealthFacts, th: HealthThresholds, now: datetime) -> Verdict:
    s = f.sync
    n = s.dead_letters if s else 0
    if not n or s is None:
        return "optimal", "0", "0", "no row waits in pgferry.dead_letters", ""
    tables = ", ".join(f"{t} ({c})" for t, c in sorted(s.dead_letter_tables.items())[:4])
    return (
        "degraded",
        str(n),
        "0",
        f"{n} row(s) a sync could not write wait in pgferry.dead_letters: {tables}",
        "fix the rows in the source (or the target's "
        "constraint) and sync again; a clean sync of the table clears them here",
    )


RULES: list[tuple[str, Rule]] = [
    ("reachability", reachability),
    ("connections", connections),
    ("long_transactions", long_transactions),
    ("idle_in_transaction", idle_in_transaction),
    ("blocked_sessions", blocked_sessions),
    ("wraparound", wraparound),
    ("sequences", sequences),
    ("invalid_indexes", invalid_indexes),
    ("tables_without_pk", tables_without_pk),
    ("slow_statements", slow_statements),
    ("migrations", migrations),
    ("schema_drift", schema_drift),
    ("backups", backups),
    ("restore_test", restore_test),
    ("sync", sync),
    ("dead_letters", dead_letters),
]


def table_threshold(cfg: HealthTableConfig) -> str:
    parts = [
        f"optimal >= {cfg.optimal}" if cfg.optimal is not None else "",
        f"degraded < {cfg.degraded_below}" if cfg.degraded_below is not None else "",
        f"critical < {cfg.critical_below}" if cfg.critical_below is not None else "",
    ]
    return ", ".join(p for p in parts if p)


def table_rows(f: HealthFacts, table: str, cfg: HealthTableConfig) -> Verdict:
    """A ``[health.tables]`` entry: the row count against its thresholds."""
    t, limit = f.tables.get(table), table_threshold(cfg)
    if t is None:
        why = f.failures.get("tables", "its query did not run")
        return "unknown", "", limit, f"{table} was not counted: {why}", fix_for_failure(f, why)
    if t.missing:
        return (
            "degraded",
            "missing",
            limit,
            f"{table} does not exist in {f.env}",
            f"apply the migrations (`pgferry migrate up --env {f.env}`) or fix the name in "
            f'[health.tables."{table}"]',
        )
    if t.rows is None:
        if "permission denied" in (t.error or ""):
            fix = f"GRANT SELECT ON {table} TO {f.role}"
        else:
            fix = f'set estimate = true in [health.tables."{table}"] (pg_class.reltuples)'
        return "unknown", "", limit, f"{table} could not be counted: {t.error}", fix
    n, value = t.rows, f"~{t.rows}" if t.estimated else str(t.rows)
    levels: tuple[tuple[Status, str, int | None], ...] = (
        ("critical", "critical_below", cfg.critical_below),
        ("degraded", "degraded_below", cfg.degraded_below),
    )
    for level, key, below in levels:
        if below is not None and n < below:
            return (
                level,
                value,
                limit,
                f"{table} has {n:,} rows, below {key} = {below}",
                f"find out where the rows of {table} went (`pgferry journal --env {f.env}`); "
                "restore or sync them back",
            )
    if cfg.optimal is not None and n < cfg.optimal:
        return (
            "healthy",
            value,
            limit,
            f"{table} has {n:,} rows, short of optimal = {cfg.optimal}",
            "",
        )
    return "optimal", value, limit, f"{table} has {n:,} rows", ""

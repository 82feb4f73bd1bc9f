"""The rules that judge what pgferry records about an environment.

Contract: one pure function per check (a :data:`~pgferry.health.rules.verdict.Rule`):
migrations (failed, changed, pending), schema drift from the recorded fingerprint,
backups and restore tests (their facts come from disk, so they are judged even when the
database does not answer), the last syncs into it and its dead letters. Ages are
measured against the ``now`` passed in.
"""

from __future__ import annotations

from datetime import datetime

from pgferry.config import HealthThresholds
from pgferry.health.facts import HealthFacts
from pgferry.health.rules.verdict import Verdict, dur


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


#: how far in the future a recorded time may be (clocks a little apart) before it is doubted
SKEW_S = 300.0


def _ahead(what: str, age: float, limit: str) -> Verdict:
    """A time recorded by another machine's clock lies ahead of this one's: its age, and so
    whether it is stale, is not known."""
    return (
        "unknown",
        f"{dur(-age)} ahead",
        limit,
        f"{what} is dated {dur(-age)} in the future: this machine's clock and the one that "
        "recorded it disagree",
        "set both clocks right (NTP), then run pgferry health again",
    )


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
    if age < -SKEW_S:
        return _ahead(f"the newest complete backup of {f.env}", age, limit)
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
    if age < -SKEW_S:
        return _ahead(f"the last restore test of {f.env}", age, limit)
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
    # a running sync has not ended, a refused one never ran: neither ends a run of failures
    # (as pgferry_sync_consecutive_failures counts them)
    runs = [r for r in (s.runs if s else []) if r.outcome not in ("running", "refused")]
    failed = 0
    for r in runs:  # bad_input: it did not sync either (a wrong table name, a bad mask)
        if r.outcome not in ("failed", "died", "bad_input"):
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
    if age < -SKEW_S:
        return _ahead(f"the last sync into {f.env}", age, limit)
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

"""``backup list`` and ``backup prune``: the catalog with retention applied.

Contract: :func:`listing` returns the backups of an environment (newest
first) with each one's state (complete, verified, restore-tested, verify
failed; kept, expired; interrupted or in progress for incomplete ones), the
retention slots it fills, and the freshness figures the health check uses
(age of the newest complete and newest restore-tested backup against
``[backup] max_age``, size against ``min_size``). :func:`run_prune` deletes what
:func:`pgferry.backup.retention.plan` expires (and interrupted backups);
``dry_run`` deletes nothing (the command layer journals it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgferry.backup import retention
from pgferry.backup.catalog import BackupInfo, list_backups
from pgferry.backup.storage import LocalStorage
from pgferry.config import Config


def policy(cfg: Config) -> retention.Policy:
    k = cfg.backup.keep
    return retention.Policy(
        daily=k.daily, weekly=k.weekly, monthly=k.monthly, min_count=k.min_count
    )


def items(infos: list[BackupInfo]) -> list[retention.Item]:
    return [
        retention.Item(i.id, i.started_at, i.keep, i.verified)
        for i in infos
        if i.complete and i.started_at is not None
    ]


def state(i: BackupInfo) -> str:
    if not i.complete:
        return "damaged" if i.damaged else "in progress" if i.in_progress else "interrupted"
    v = i.verification
    if v.verified_at and not v.verify_ok:
        return "verify failed"
    if v.restore_test_ok:
        return "restore-tested"
    if v.verify_ok:
        return "verified"
    return "complete"


@dataclass
class Listing:
    env: str
    backups: list[dict[str, Any]] = field(default_factory=list)
    freshness: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "env": self.env, "backups": self.backups, "freshness": self.freshness}


def listing(cfg: Config, env: str, now: datetime, include_incomplete: bool = False) -> Listing:
    infos = list_backups(cfg.backup_dir, env, include_incomplete=include_incomplete)
    plan = retention.plan(items(infos), now, policy(cfg), cfg.backup.timezone)
    out = Listing(env)
    for i in infos:
        d = i.to_dict()
        d["state"] = state(i)
        d["flags"] = (["kept"] if i.keep else []) + (["expired"] if i.id in plan.delete else [])
        d["slots"] = plan.slots.get(i.id, [])
        d["kept_because"] = plan.reasons.get(i.id, [])
        out.backups.append(d)
    complete = [i for i in infos if i.complete]
    # a restore test proves a backup only while its files still check out
    tested = [i for i in complete if i.verification.restore_test_ok and i.verification.verify_ok]
    max_age = cfg.backup.max_age.total_seconds()

    def age(i: BackupInfo | None) -> float | None:
        at = i.finished_at if i else None
        return round((now - at).total_seconds(), 1) if at else None

    newest = complete[0] if complete else None
    out.freshness = {
        "newest_complete": newest.id if newest else None,
        "newest_complete_age_s": age(newest),
        "newest_restore_tested": tested[0].id if tested else None,
        "newest_restore_tested_age_s": age(tested[0] if tested else None),
        "max_age_s": max_age,
        "stale": newest is None or (age(newest) or 0) > max_age,
        "min_size_bytes": cfg.backup.min_size_bytes,
        "too_small": bool(newest and newest.size_bytes < cfg.backup.min_size_bytes),
    }
    return out


@dataclass
class Pruned:
    env: str
    dry_run: bool
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    reasons: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "env": self.env,
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "kept": self.kept,
            "interrupted_removed": self.interrupted,
            "reasons": self.reasons,
        }


def run_prune(cfg: Config, env: str, now: datetime, dry_run: bool = False) -> Pruned:
    store = LocalStorage(cfg.backup_dir)
    infos = list_backups(cfg.backup_dir, env)
    plan = retention.plan(items(infos), now, policy(cfg), cfg.backup.timezone)
    res = Pruned(env, dry_run, list(plan.delete), list(plan.keep), store.stale(env), plan.reasons)
    if not dry_run:
        for backup_id in list(res.deleted):
            if not store.delete_unused(env, backup_id):  # a verify or restore reads it
                res.deleted.remove(backup_id)
                res.kept.append(backup_id)
                res.reasons[backup_id] = ["in use"]
        for backup_id in res.interrupted:
            store.delete(env, backup_id)
    return res

"""``backup create|list|verify|restore|prune``.

Contract: one function per verb over :mod:`pgferry.backup`; each returns the
capability's result (``to_dict()`` is the ``--json`` object). The journal rows
are written here: ``backup create`` (always), ``backup verify --restore-test``
and ``backup prune`` (where a journal exists), ``backup restore`` (into the
environment: always; ``--into-new``: where a journal exists). ``restore`` goes
through the policy first: the blackout window, then ``--yes`` for a protected
environment (not for ``--into-new``, which leaves the environment's database
alone); then it verifies the backup, takes an emergency backup (journaled as a
``backup create`` of its own) and restores all or nothing. A ``verify`` that
finds a problem says so in its result (``ok`` False: exit 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from pgferry.commands import base
from pgferry.config import Config
from pgferry.errors import PgferryError
from pgferry.events import Notice, Subscriber, ignore
from pgferry.policy import WriteRequest

if TYPE_CHECKING:  # the backup modules load when a verb runs
    from pgferry.backup.catalog import BackupInfo
    from pgferry.backup.create import Created
    from pgferry.backup.restore import Restored
    from pgferry.backup.service import Listing, Pruned
    from pgferry.backup.verify import Verified
    from pgferry.pg.connect import Target


def _say(progress: Subscriber | None) -> Callable[[str], None]:
    publish = progress or ignore
    return lambda text: publish(Notice(text))


@dataclass(frozen=True)
class CreateOptions:
    env: str
    tag: str | None = None
    keep: bool = False
    jobs: int | None = None


def create(cfg: Config, opts: CreateOptions, *, progress: Subscriber | None = None) -> Created:
    """``backup create``: pg_dump (directory format), checksums, row counts, manifest last."""
    return _create(cfg, base.target(cfg, opts.env), opts, progress)


def _create(
    cfg: Config, target: Target, opts: CreateOptions, progress: Subscriber | None
) -> Created:
    from pgferry import journal
    from pgferry.backup.create import run_create

    args = {"tag": opts.tag, "keep": opts.keep, "jobs": opts.jobs}
    with journal.operation(target, "backup create", args) as op:
        res = run_create(
            cfg, target, tag=opts.tag, keep=opts.keep, jobs=opts.jobs, note=_say(progress)
        )
        op.details.update(
            id=res.manifest.id,
            size_bytes=res.manifest.size_bytes,
            tables=len(res.manifest.tables),
            path=str(res.path),
        )
    return res


def listing(
    cfg: Config, env: str, *, include_incomplete: bool = False, now: datetime | None = None
) -> Listing:
    """``backup list``: ENV's backups (state, retention slots) and their freshness."""
    from pgferry.backup import service

    cfg.env(env)
    return service.listing(cfg, env, base.now_or(now), include_incomplete=include_incomplete)


@dataclass(frozen=True)
class BackupVerifyOptions:
    backup_id: str
    #: whose backups (needed for ``latest``)
    env: str | None = None
    restore_test: bool = False
    jobs: int | None = None


def verify(cfg: Config, opts: BackupVerifyOptions) -> Verified:
    """``backup verify``: re-hash every file, read the archive; with ``restore_test``,
    restore into a scratch database and compare row counts (journaled)."""
    from pgferry import journal
    from pgferry.backup import catalog
    from pgferry.backup import verify as verify_mod
    from pgferry.backup.storage import LocalStorage

    info = catalog.find(cfg.backup_dir, opts.backup_id, opts.env)
    with LocalStorage(cfg.backup_dir).using(info.env, info.id):  # prune leaves it meanwhile
        if not opts.restore_test:
            return verify_mod.verify(cfg, info, jobs=opts.jobs)
        target = base.target(cfg, info.env)
        args = {"id": info.id, "restore_test": True}
        with journal.operation(target, "backup verify", args, create=False) as op:
            res = verify_mod.verify(cfg, info, restore=True, target=target, jobs=opts.jobs)
            op.details.update(res.to_dict())
            if not res.ok:
                op.outcome, op.exit_code = "problem", 1
        return res


@dataclass(frozen=True)
class RestoreOptions:
    backup_id: str
    env: str
    #: whose backups ``backup_id`` is among (default: found by id; ``env`` for latest)
    from_env: str | None = None
    tables: list[str] = field(default_factory=list)
    into_new: str | None = None
    yes: bool = False
    override_blackout: bool = False
    reason: str | None = None
    jobs: int | None = None


def restore(
    cfg: Config,
    opts: RestoreOptions,
    *,
    now: datetime | None = None,
    progress: Subscriber | None = None,
    confirm: base.Confirm | None = None,
) -> Restored:
    """``backup restore``: verified first, an emergency backup first, all or nothing."""
    from pgferry.backup import catalog
    from pgferry.backup.storage import LocalStorage

    t0 = time.monotonic()
    target = base.target(cfg, opts.env)
    info = catalog.find_to_restore(
        cfg.backup_dir,
        opts.backup_id,
        opts.from_env or (opts.env if opts.backup_id == "latest" else None),
    )
    with LocalStorage(cfg.backup_dir).using(info.env, info.id):  # prune leaves it meanwhile
        res = _restore(cfg, opts, target, info, now=now, progress=progress, confirm=confirm)
    res.seconds = time.monotonic() - t0
    return res


def _restore(
    cfg: Config,
    opts: RestoreOptions,
    target: Target,
    info: BackupInfo,
    *,
    now: datetime | None,
    progress: Subscriber | None,
    confirm: base.Confirm | None,
) -> Restored:
    from pgferry import journal
    from pgferry.backup import restore as restore_mod

    names = list(opts.tables)
    what = f"restore backup {info.id} into {opts.env}" + (f" ({', '.join(names)})" if names else "")
    arguments = {"id": info.id, "tables": names, "into_new": opts.into_new}
    # --into-new leaves the environment's database alone: no --yes needed for it
    req = WriteRequest(
        "backup restore",
        target.name,
        target.protected and not opts.into_new,
        action=what,
        yes=opts.yes,
        override_blackout=opts.override_blackout,
        reason=opts.reason,
    )
    decision = base.authorize(
        cfg,
        target,
        req,
        now=base.now_or(now),
        confirm=confirm,
        arguments=arguments,
        rules=("input", "blackout", "protected"),
    )
    res, pg_restore = restore_mod.prepare(
        cfg, target, info, tables=names, into_new=opts.into_new, jobs=opts.jobs
    )
    args = {"id": info.id, "from_env": info.env, "tables": names, "into_new": opts.into_new}
    if opts.into_new:
        # the environment's database is left alone; its journal (if it has one) says so
        with journal.operation(target, "backup restore", args, create=False) as op:
            restore_mod.into_new(cfg, target, res, pg_restore, opts.jobs)
            op.details.update(res.to_dict())
        return res
    _say(progress)(f"taking an emergency backup of {target.name} first")
    try:
        emergency = _create(
            cfg, target, CreateOptions(target.name, tag="pre-restore", keep=True), None
        )
    except PgferryError as e:  # the restore does not go ahead without it: say so
        e.message = (
            f"the emergency backup of {target.name} failed, so nothing was restored: {e.message}"
        )
        e.args = (e.message,)
        raise
    res.emergency_id, res.emergency_path = emergency.manifest.id, emergency.path
    with journal.operation(target, "backup restore", args) as op:
        if decision.window is not None:
            op.details["blackout_override"] = {
                "window": decision.window_text,
                "reason": opts.reason,
            }
        op.details.update(emergency_backup=res.emergency_id)
        restore_mod.replace(cfg, target, res, pg_restore)
        op.details.update(res.to_dict())
    return res


def prune(cfg: Config, env: str, *, dry_run: bool = False, now: datetime | None = None) -> Pruned:
    """``backup prune``: delete what ``[backup.keep]`` no longer keeps, journaled in ENV
    (where its journal exists) unless a dry run."""
    from pgferry import journal
    from pgferry.backup.service import run_prune

    target = base.target(cfg, env)
    when = base.now_or(now)
    if dry_run:
        return run_prune(cfg, target.name, when, True)
    with journal.operation(target, "backup prune", {"dry_run": dry_run}, create=False) as op:
        res = run_prune(cfg, target.name, when)
        op.details.update(
            deleted=res.deleted, kept=len(res.kept), interrupted_removed=res.interrupted
        )
    return res

"""The operations a run can be: each one a call of a :mod:`pgferry.commands` function.

Contract: :data:`KINDS` maps a run's ``kind`` to an :class:`RunKind`: the
pydantic model of its arguments (what ``POST /api/runs`` and ``[[schedule]]``
accept; unknown fields are refused), the environment it acts on (its jobs are
serialised per environment), whether it writes to that environment (a protected
one then needs a second person's approval), its plan (what the approver sees and
what the plan hash covers) and its execution. Execution calls the same command
function as the command line with ``yes=True`` (the approval, or a schedule in the
config, is the consent), publishes the command's events to ``progress`` and
returns an :class:`Outcome`. No decision is taken here that the command does not
take itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pgferry import commands as _commands  # noqa: F401 - the layer this module fronts
from pgferry.config import Config
from pgferry.events import Subscriber


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def named_envs(self) -> dict[str, str]:
        """Every environment the arguments name, by field (``sync.source``)."""
        return {
            k: v
            for k in ("env", "source", "target")
            if isinstance(v := getattr(self, k, None), str)
        }


class EnvArgs(Args):
    env: str


class MigrateUpArgs(EnvArgs):
    #: apply up to this version (``--target``)
    target: str | None = None


class MigrateUndoArgs(EnvArgs):
    #: undo every applied version above this one (``--to``)
    to: str | None = None


class SyncArgs(Args):
    source: str
    target: str
    mode: Literal["incremental", "full", "verify"] = "incremental"
    tables: list[str] = Field(default_factory=list)
    on_conflict: Literal["stop", "source", "target"] | None = None


class VerifyArgs(Args):
    source: str
    target: str
    tables: list[str] = Field(default_factory=list)


class RevertArgs(EnvArgs):
    run_id: str


class BackupCreateArgs(EnvArgs):
    tag: str | None = None
    #: prune afterwards (``[backup.keep]``)
    prune: bool = False


class BackupVerifyArgs(Args):
    backup_id: str = "latest"
    env: str
    restore_test: bool = False


class BackupRestoreArgs(EnvArgs):
    backup_id: str = "latest"
    tables: list[str] = Field(default_factory=list)
    into_new: str | None = None


class ProSyncArgs(Args):
    source: str
    tables: list[str] = Field(default_factory=list)


class ProMigrationArgs(EnvArgs):
    """``/api/admin/professional-migration``: migrate up, then (optionally) the rows."""

    sync: ProSyncArgs | None = None

    def named_envs(self) -> dict[str, str]:
        return {"env": self.env, **({"sync.source": self.sync.source} if self.sync else {})}


class ReleaseArgs(Args):
    env: str
    source: str
    tables: list[str] = Field(default_factory=list)


@dataclass
class Outcome:
    """What a run ended with: its exit code, the command's ``to_dict()``, and for a
    professional migration the figures its callers read."""

    exit_code: int
    result: dict[str, Any]
    error: str | None = None
    #: a cancel stopped it (a release: after its compensations)
    cancelled: bool = False


Plan = dict[str, Any]


@dataclass(frozen=True)
class RunKind:
    name: str
    args: type[Args]
    #: the command as the journal and the policy name it
    command: str
    env: Callable[[Args], str]
    writes: Callable[[Config, Args], bool]
    run: Callable[[Config, Args, Subscriber], Outcome]
    plan: Callable[[Config, Args], Plan] | None = None
    #: a run of this kind can be started again after its worker died (it resumes)
    resumable: bool = True


def _protected(cfg: Config, env: str) -> bool:
    return cfg.env(env).protected


# -- migrate -------------------------------------------------------------------------


def _migrate_plan(cfg: Config, a: Args, undo: bool) -> Plan:
    from pgferry.commands import migrate_run

    assert isinstance(a, MigrateUpArgs | MigrateUndoArgs)
    opts = migrate_run.RunOptions(
        env=a.env, dry_run=True, target=getattr(a, "target", None), to=getattr(a, "to", None)
    )
    res = migrate_run.run(cfg, opts, undo=undo)
    steps = res.steps or []
    return {
        "kind": "migrate_undo" if undo else "migrate_up",
        "env": a.env,
        "current_version": res.current_version,
        "steps": steps,
        "warnings": res.warnings,
        "hashed": [
            {k: s.get(k) for k in ("kind", "version", "script", "checksum")}
            | {"sql": [x["sql"] for x in s.get("statements", [])]}
            for s in steps
        ],
    }


def _migrate(cfg: Config, a: Args, progress: Subscriber, undo: bool) -> Outcome:
    from pgferry.commands import migrate_run

    assert isinstance(a, MigrateUpArgs | MigrateUndoArgs)
    opts = migrate_run.RunOptions(
        env=a.env, yes=True, target=getattr(a, "target", None), to=getattr(a, "to", None)
    )
    res = migrate_run.run(cfg, opts, undo=undo, progress=progress)
    return Outcome(0, res.to_dict())


# -- sync, verify, revert --------------------------------------------------------------


def _sync_options(a: SyncArgs, **kw: Any) -> Any:
    from pgferry.commands.sync import SyncOptions

    return SyncOptions(a.source, a.target, a.mode, list(a.tables), on_conflict=a.on_conflict, **kw)


def _sync_plan(cfg: Config, a: Args) -> Plan:
    from pgferry.commands import sync

    assert isinstance(a, SyncArgs)
    res = sync.sync(cfg, _sync_options(a, dry_run=True))
    tables = [
        {
            "table": t.table,
            "strategy": t.strategy,
            "estimated_rows": t.estimated_rows,
            "would_insert": t.would_insert,
            "would_update": t.would_update,
            "would_delete": t.would_delete,
            "conflicts": t.conflicts,
            "status": t.status,
        }
        for t in res.tables
    ]
    return {
        "kind": "sync",
        "source": a.source,
        "target": a.target,
        "mode": a.mode,
        "tables": tables,
        "warnings": res.warnings,
        "exit_code": res.exit_code,
        # what moves is the plan; how many rows it moves is shown, not approved
        "hashed": {
            "mode": a.mode,
            "on_conflict": a.on_conflict,
            "tables": [[t["table"], t["strategy"]] for t in tables],
        },
    }


def _sync(cfg: Config, a: Args, progress: Subscriber) -> Outcome:
    from pgferry.commands import sync

    assert isinstance(a, SyncArgs)
    res = sync.sync(
        cfg, _sync_options(a, yes=True, verify_after=a.mode != "verify"), progress=progress
    )
    return Outcome(res.exit_code, res.to_dict(), res.error)


def _verify(cfg: Config, a: Args, progress: Subscriber) -> Outcome:
    from pgferry.commands import sync

    assert isinstance(a, VerifyArgs)
    res = sync.verify(
        cfg, sync.VerifyOptions(a.source, a.target, list(a.tables)), progress=progress
    )
    return Outcome(res.exit_code, res.to_dict(), res.error)


def _revert_plan(cfg: Config, a: Args) -> Plan:
    from pgferry.commands import sync

    assert isinstance(a, RevertArgs)
    res = sync.revert(cfg, sync.RevertOptions(a.run_id, a.env, dry_run=True))
    d: dict[str, Any] = res.to_dict()
    return {
        "kind": "sync_revert",
        "env": a.env,
        "run_id": a.run_id,
        "revert": d,
        "hashed": {"run_id": a.run_id, "revert": d},
    }


def _revert(cfg: Config, a: Args, progress: Subscriber) -> Outcome:  # noqa: ARG001
    from pgferry.commands import sync

    assert isinstance(a, RevertArgs)
    return Outcome(0, sync.revert(cfg, sync.RevertOptions(a.run_id, a.env, yes=True)).to_dict())


# -- backups ---------------------------------------------------------------------------


def _backup_create(cfg: Config, a: Args, progress: Subscriber) -> Outcome:
    from pgferry.commands import backup

    assert isinstance(a, BackupCreateArgs)
    res = backup.create(cfg, backup.CreateOptions(a.env, tag=a.tag), progress=progress)
    out = Outcome(0, res.to_dict())
    if a.prune:
        out.result["prune"] = backup.prune(cfg, a.env).to_dict()
    return out


def _backup_verify(cfg: Config, a: Args, progress: Subscriber) -> Outcome:  # noqa: ARG001
    from pgferry.commands import backup

    assert isinstance(a, BackupVerifyArgs)
    res = backup.verify(cfg, backup.BackupVerifyOptions(a.backup_id, a.env, a.restore_test))
    return Outcome(0 if res.ok else 1, res.to_dict())


def _restore_plan(cfg: Config, a: Args) -> Plan:
    from pgferry.backup import catalog

    assert isinstance(a, BackupRestoreArgs)
    info = catalog.find_to_restore(
        cfg.backup_dir, a.backup_id, a.env if a.backup_id == "latest" else None
    )
    m = info.manifest
    tables = m.to_dict().get("tables") if m is not None else None
    return {
        "kind": "backup_restore",
        "env": a.env,
        "backup": info.id,
        "from_env": info.env,
        "tables": a.tables,
        "into_new": a.into_new,
        "manifest_tables": tables,
        "hashed": {"backup": info.id, "tables": a.tables, "into_new": a.into_new},
    }


def _backup_restore(cfg: Config, a: Args, progress: Subscriber) -> Outcome:
    from pgferry.commands import backup

    assert isinstance(a, BackupRestoreArgs)
    plan = _restore_plan(cfg, a)  # "latest" is the backup the approver saw
    res = backup.restore(
        cfg,
        backup.RestoreOptions(
            plan["backup"], a.env, tables=a.tables, into_new=a.into_new, yes=True
        ),
        progress=progress,
    )
    return Outcome(0, res.to_dict())


def _backup_prune(cfg: Config, a: Args, progress: Subscriber) -> Outcome:  # noqa: ARG001
    from pgferry.commands import backup

    assert isinstance(a, EnvArgs)
    return Outcome(0, backup.prune(cfg, a.env).to_dict())


# -- health ----------------------------------------------------------------------------


def _health(cfg: Config, a: Args, progress: Subscriber) -> Outcome:  # noqa: ARG001
    from pgferry.commands import health

    assert isinstance(a, EnvArgs)
    rep = health.health(cfg, a.env)  # asked now; the service's cache keeps it
    return Outcome(0 if rep.ok else 1, rep.to_dict())


def _never(cfg: Config, a: Args) -> bool:  # noqa: ARG001
    return False


def _env(a: Args) -> str:
    return str(getattr(a, "env", None) or getattr(a, "target", ""))


def _writes_env(cfg: Config, a: Args) -> bool:  # noqa: ARG001 - one signature for all
    # a restore into a new database leaves the environment's own alone
    return not (isinstance(a, BackupRestoreArgs) and a.into_new)


def _writes_sync(cfg: Config, a: Args) -> bool:  # noqa: ARG001 - one signature for all
    assert isinstance(a, SyncArgs)
    return a.mode != "verify"


def needs_approval(cfg: Config, op: RunKind, a: Args) -> bool:
    """Four eyes: the operation writes to a protected environment (and has a plan)."""
    return op.plan is not None and op.writes(cfg, a) and _protected(cfg, op.env(a))


def _pro_sync(a: ProMigrationArgs) -> SyncArgs | None:
    if a.sync is None:
        return None
    return SyncArgs(source=a.sync.source, target=a.env, tables=a.sync.tables)


def _pro_plan(cfg: Config, a: Args) -> Plan:
    assert isinstance(a, ProMigrationArgs)
    mig = _migrate_plan(cfg, MigrateUpArgs(env=a.env), False)
    sa = _pro_sync(a)
    syn = _sync_plan(cfg, sa) if sa is not None else None
    return {
        "kind": "professional_migration",
        "env": a.env,
        "migrate": mig,
        "sync": syn,
        "hashed": {"migrate": mig["hashed"], "sync": syn["hashed"] if syn else None},
    }


def _pro(cfg: Config, a: Args, progress: Subscriber) -> Outcome:
    """migrate up, then dev's rows in batches (retried), with the figures scripts read."""
    import time

    from pgferry.commands import migrate_run, sync
    from pgferry.sync import report

    assert isinstance(a, ProMigrationArgs)
    t0 = time.monotonic()
    mig = migrate_run.up(cfg, migrate_run.RunOptions(env=a.env, yes=True), progress=progress)
    out: dict[str, Any] = {"migrate": mig.to_dict(), "sync": None}
    errors: list[str] = []
    migrated, text, code = 0, None, 0
    sa = _pro_sync(a)
    if sa is not None:
        res = sync.sync(cfg, _sync_options(sa, yes=True, verify_after=True), progress=progress)
        out["sync"] = res.to_dict()
        t = res.totals()
        migrated = t["inserted"] + t["updated"]
        errors = ([res.error] if res.error else []) + [
            f"{x.table}: {x.error or x.status}"
            for x in res.tables
            if x.error or x.status not in ("ok", "unchanged")
        ]
        text, code = report.markdown(res), res.exit_code
    out["data"] = {
        "migratedCount": migrated,
        "duration": round(time.monotonic() - t0, 3),
        "errors": errors,
        "report": text,
        "migrations": [f.script for f in mig.applied],
    }
    return Outcome(code, out, errors[0] if errors else None)


def release_tables(cfg: Config, a: ReleaseArgs) -> list[str]:
    return list(a.tables or cfg.service.release_tables or cfg.sync.tables)


def release_plan(cfg: Config, a: ReleaseArgs) -> dict[str, Any]:
    """The release saga's plan: every step (:mod:`pgferry.jobs.saga`), hashed as one."""
    mig = _migrate_plan(cfg, MigrateUpArgs(env=a.env), False)
    syn = _sync_plan(cfg, SyncArgs(source=a.source, target=a.env, tables=release_tables(cfg, a)))
    steps = [
        {"step": "backup", "env": a.env},
        {"step": "migrate", **mig},
        {"step": "sync", **syn},
        {"step": "verify", "source": a.source, "target": a.env},
        {"step": "health", "env": a.env, "fails_on": "critical"},
    ]
    return {
        "kind": "release",
        "env": a.env,
        "source": a.source,
        "steps": steps,
        "hashed": {
            "env": a.env,
            "source": a.source,
            "migrate": mig["hashed"],
            "sync": syn["hashed"],
        },
    }


def _release_plan(cfg: Config, a: Args) -> Plan:
    assert isinstance(a, ReleaseArgs)
    return release_plan(cfg, a)


def _release(cfg: Config, a: Args, progress: Subscriber) -> Outcome:  # noqa: ARG001  # pragma: no cover
    raise AssertionError("a release runs as a saga (pgferry.jobs.saga), not as one command")


KINDS: dict[str, RunKind] = {
    o.name: o
    for o in [
        RunKind(
            "migrate_up",
            MigrateUpArgs,
            "migrate up",
            _env,
            _writes_env,
            lambda c, a, p: _migrate(c, a, p, False),
            lambda c, a: _migrate_plan(c, a, False),
        ),
        RunKind(
            "migrate_undo",
            MigrateUndoArgs,
            "migrate undo",
            _env,
            _writes_env,
            lambda c, a, p: _migrate(c, a, p, True),
            lambda c, a: _migrate_plan(c, a, True),
        ),
        RunKind("sync", SyncArgs, "sync", _env, _writes_sync, _sync, _sync_plan),
        RunKind("verify", VerifyArgs, "verify", _env, _never, _verify),
        RunKind(
            "sync_revert",
            RevertArgs,
            "sync revert",
            _env,
            _writes_env,
            _revert,
            _revert_plan,
            resumable=False,
        ),
        RunKind("backup_create", BackupCreateArgs, "backup create", _env, _never, _backup_create),
        RunKind("backup_verify", BackupVerifyArgs, "backup verify", _env, _never, _backup_verify),
        RunKind(
            "backup_restore",
            BackupRestoreArgs,
            "backup restore",
            _env,
            _writes_env,
            _backup_restore,
            _restore_plan,
            resumable=False,
        ),
        RunKind("backup_prune", EnvArgs, "backup prune", _env, _never, _backup_prune),
        RunKind("health", EnvArgs, "health", _env, _never, _health),
        RunKind(
            "professional_migration",
            ProMigrationArgs,
            "migrate up",
            _env,
            _writes_env,
            _pro,
            _pro_plan,
        ),
        RunKind("release", ReleaseArgs, "release", _env, _writes_env, _release, _release_plan),
    ]
}

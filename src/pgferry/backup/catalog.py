"""The backup catalog: read-only views of the manifests, for ``backup list`` and the health check.

Contract: :func:`list_backups` ``(root, env)`` returns the backups of ``env``
under the backup root ``root``, newest first, as :class:`BackupInfo`; only
complete ones (a readable ``manifest.json``) unless ``include_incomplete``.
It never writes. :func:`find` resolves an id (or ``latest``) for the other
commands, raising :class:`~pgferry.errors.BadInput` naming ``backup list``
(:class:`~pgferry.errors.ProblemFound`, exit 1, for a manifest that does not read);
:func:`find_to_restore` too, where ``latest`` is never a restore's emergency backup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pgferry.backup.manifest import Manifest, Verification, parse_iso
from pgferry.backup.storage import LOCK, MANIFEST, SIDECAR, LocalStorage, _locked
from pgferry.errors import BadInput, ProblemFound


@dataclass
class BackupInfo:
    id: str
    env: str
    path: Path
    complete: bool
    manifest: Manifest | None
    verification: Verification
    #: for an incomplete backup: True while a process is still writing it
    in_progress: bool = False
    #: for an incomplete backup: its manifest.json is there but does not read (changed,
    #: truncated): not an interrupted backup, and nothing can be checked or restored
    damaged: bool = False

    @property
    def started_at(self) -> datetime | None:
        return parse_iso(self.manifest.started_at) if self.manifest else None

    @property
    def finished_at(self) -> datetime | None:
        return parse_iso(self.manifest.finished_at) if self.manifest else None

    @property
    def size_bytes(self) -> int:
        return self.manifest.size_bytes if self.manifest else 0

    @property
    def tag(self) -> str | None:
        return self.manifest.tag if self.manifest else None

    @property
    def keep(self) -> bool:
        return bool(self.manifest and self.manifest.keep)

    @property
    def verified(self) -> bool:
        return self.verification.verify_ok

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        v = self.verification
        return {
            "id": self.id,
            "env": self.env,
            "path": str(self.path),
            "complete": self.complete,
            "in_progress": self.in_progress,
            "started_at": m.started_at if m else None,
            "finished_at": m.finished_at if m else None,
            "size_bytes": self.size_bytes,
            "tables": len(m.tables) if m else 0,
            "rows": sum(m.tables.values()) if m else 0,
            "tag": self.tag,
            "keep": self.keep,
            "encrypted": bool(m and m.encryption),
            "verification": v.to_dict(),
        }


def _info(store: LocalStorage, env: str, backup_id: str) -> BackupInfo:
    d = store.local(env, backup_id)
    raw = store.read_json(env, backup_id, MANIFEST)
    manifest = None
    if raw is not None:
        try:
            manifest = Manifest.from_dict(raw)
            # times and sizes that do not parse (a damaged or hand-edited manifest): the
            # backup is not complete, rather than every listing failing on it
            parse_iso(manifest.started_at)
            parse_iso(manifest.finished_at)
            if not isinstance(manifest.size_bytes, int) or not isinstance(manifest.tables, dict):
                raise TypeError("size_bytes or tables")
        except (TypeError, ValueError):  # missing required keys: not a complete backup
            manifest = None
    return BackupInfo(
        id=backup_id,
        env=env,
        path=d,
        complete=manifest is not None,
        manifest=manifest,
        verification=Verification.from_dict(store.read_json(env, backup_id, SIDECAR)),
        in_progress=manifest is None and _locked(d / LOCK),
        damaged=manifest is None and (d / MANIFEST).exists(),
    )


def list_backups(root: Path, env: str, include_incomplete: bool = False) -> list[BackupInfo]:
    """The backups of ``env`` under ``root``, newest first (complete ones only by default)."""
    store = LocalStorage(root)
    infos = [_info(store, env, i) for i in store.ids(env)]
    if not include_incomplete:
        infos = [i for i in infos if i.complete]
    # ids sort by time; a complete backup's own start time wins where they disagree
    return sorted(
        infos, key=lambda i: (i.started_at.isoformat() if i.started_at else "", i.id), reverse=True
    )


def envs(root: Path) -> list[str]:
    """Environments that have a directory under the backup root."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def find(root: Path, backup_id: str, env: str | None) -> BackupInfo:
    """The complete backup ``backup_id`` (or ``latest`` of ``env``); BadInput when none."""
    if backup_id == "latest":
        if env is None:
            raise BadInput("`latest` needs --env (or --from) to say whose backups")
        found = list_backups(root, env)
        if not found:
            raise BadInput(
                f"environment {env!r} has no complete backup under {root}; take one "
                f"with `pgferry backup create --env {env}`"
            )
        return found[0]
    for name in ([env] if env else []) + [e for e in envs(root) if e != env]:
        d = root / name / backup_id
        if d.is_dir():
            info = _info(LocalStorage(root), name, backup_id)
            if info.damaged:
                raise ProblemFound(
                    f"backup {backup_id} of {name} is damaged: its manifest.json does not "
                    "read (changed or truncated), so nothing was checked or restored; pick "
                    f"another with `pgferry backup list --env {name}`"
                )
            if not info.complete:
                raise BadInput(
                    f"backup {backup_id} of {name} is not complete (it has no "
                    "manifest: interrupted or still running); pick another with "
                    f"`pgferry backup list --env {name}`"
                )
            return info
    raise BadInput(
        f"no backup {backup_id!r} under {root}; see `pgferry backup list"
        f"{' --env ' + env if env else ''}`"
    )


def find_to_restore(root: Path, backup_id: str, env: str | None) -> BackupInfo:
    """:func:`find` for a restore, where ``latest`` is the newest backup that is not a
    restore's emergency backup (tag ``pre-restore``): restoring that would undo the restore
    (a ``restore latest`` run twice, a retried run); it is named by id."""
    if backup_id != "latest" or env is None:
        return find(root, backup_id, env)
    found = [i for i in list_backups(root, env) if i.tag != "pre-restore"]
    if not found:
        raise BadInput(
            f"environment {env!r} has no complete backup under {root} but emergency "
            "backups of restores; name one by id, or take one with "
            f"`pgferry backup create --env {env}`"
        )
    return found[0]

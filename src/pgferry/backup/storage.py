"""Where backups are kept: a small interface, and the local-directory store.

Contract: a store holds, per environment, backups named by id; a backup is a
set of files plus ``manifest.json`` (written last: it marks the backup
complete) and ``verification.json`` (the verify sidecar). :class:`Storage`
is what the rest of ``pgferry.backup`` uses, so an S3-compatible store can be
added later without touching create/verify/restore: pg_dump and pg_restore
need a local directory, which :meth:`Storage.local` gives (for a remote
store: a staging copy).

:class:`LocalStorage` keeps ``<root>/<env>/<id>/``. While a backup is being
written its directory holds ``.in-progress``, locked with ``flock`` by the
writing process: a directory without a manifest whose lock nobody holds was
left by a process that died, and :meth:`LocalStorage.stale` finds it (only
among names pgferry gives backups). A verify or restore holds ``.in-use``
(shared) while it reads a complete backup, and prune deletes through
:meth:`LocalStorage.delete_unused`, which leaves such a backup alone.
JSON files are written atomically: a temp file, fsync, rename, fsync of the
directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from pgferry import jsonio
from pgferry.errors import OperationFailed

MANIFEST = "manifest.json"
SIDECAR = "verification.json"
LOCK = ".in-progress"
#: held (shared) by whoever reads a complete backup (verify, restore); prune deletes a
#: backup only when it can take it exclusively
IN_USE = ".in-use"
#: the names :func:`pgferry.backup.create.new_id` gives; only such a directory can be a
#: backup pgferry left half-written (anything else under the root is someone else's)
BACKUP_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{4}")


class Storage(Protocol):
    def ids(self, env: str) -> list[str]: ...
    def local(self, env: str, backup_id: str) -> Path: ...
    def read_json(self, env: str, backup_id: str, name: str) -> dict[str, Any] | None: ...
    def write_json(self, env: str, backup_id: str, name: str, obj: dict[str, Any]) -> None: ...
    def delete(self, env: str, backup_id: str) -> None: ...
    def using(self, env: str, backup_id: str) -> contextlib.AbstractContextManager[None]: ...
    def delete_unused(self, env: str, backup_id: str) -> bool: ...
    def stale(self, env: str) -> list[str]: ...


def sha256_file(path: Path) -> tuple[str, int]:
    """The sha256 (hex) and size of a file, read in 1 MiB pieces."""
    import hashlib

    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    """``obj`` as ``path``, all or nothing: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(jsonio.dumps(obj, pretty=True))
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):  # a full disk leaves no half-written temp file
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def writable_failure(path: Path, e: OSError) -> OperationFailed:
    """An OSError writing under the backup root as one sentence naming the path (exit 3)."""
    where = Path(e.filename) if getattr(e, "filename", None) else path
    return OperationFailed(
        f"cannot write the backup at {where}: {e.strerror or e}; free space "
        "or fix the permissions of [backup] dir",
        path=str(where),
    )


class LocalStorage:
    """Backups in ``<root>/<env>/<id>/`` on a local (or mounted) file system."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def env_dir(self, env: str) -> Path:
        return self.root / env

    def local(self, env: str, backup_id: str) -> Path:
        return self.root / env / backup_id

    def ids(self, env: str) -> list[str]:
        d = self.env_dir(env)
        if not d.is_dir():
            return []
        return sorted(
            (p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True
        )

    def read_json(self, env: str, backup_id: str, name: str) -> dict[str, Any] | None:
        p = self.local(env, backup_id) / name
        try:
            obj = jsonio.loads(p.read_bytes())
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None

    def write_json(self, env: str, backup_id: str, name: str, obj: dict[str, Any]) -> None:
        write_json_atomic(self.local(env, backup_id) / name, obj)

    def delete(self, env: str, backup_id: str) -> None:
        d = self.local(env, backup_id)
        # the manifest goes first: a half-deleted backup is never listed as complete
        with contextlib.suppress(FileNotFoundError):
            (d / MANIFEST).unlink()
        shutil.rmtree(d, ignore_errors=True)

    @contextlib.contextmanager
    def using(self, env: str, backup_id: str) -> Iterator[None]:
        """Hold the backup's in-use lock (shared) while it is read: prune leaves it alone."""
        try:
            fd = os.open(self.local(env, backup_id) / IN_USE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # a read-only copy of the backups: prune cannot delete it either
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def delete_unused(self, env: str, backup_id: str) -> bool:
        """Delete the backup unless a verify or restore is reading it (then False)."""
        try:
            fd = os.open(self.local(env, backup_id) / IN_USE, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            return True  # already gone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:  # held while deleting: a restore that starts now waits, then finds it gone
            self.delete(env, backup_id)
        finally:
            os.close(fd)
        return True

    def stale(self, env: str) -> list[str]:
        """Backups without a manifest that no running process is writing (died mid-way)."""
        out = []
        for backup_id in self.ids(env):
            d = self.local(env, backup_id)
            if not BACKUP_ID.fullmatch(backup_id) or (d / MANIFEST).exists():
                continue
            if not _locked(d / LOCK):
                out.append(backup_id)
        return out

    @contextlib.contextmanager
    def writing(self, env: str, backup_id: str) -> Iterator[Path]:
        """Create the backup's directory and hold its in-progress lock while writing."""
        d = self.local(env, backup_id)
        try:
            d.mkdir(parents=True, mode=0o700)
            fd = os.open(d / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise writable_failure(d, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield d
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            (d / LOCK).unlink()


def _locked(path: Path) -> bool:
    """True while another process holds the flock on ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False

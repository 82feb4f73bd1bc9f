"""``backup create``: pg_dump in directory format, row counts in its snapshot, manifest last.

Contract: :func:`run_create` dumps ``target`` into ``<[backup] dir>/<env>/<id>/``
and returns :class:`Created` (the :class:`~pgferry.backup.manifest.Manifest` it
wrote); the command layer journals it in ``target`` as ``backup create``. Steps:

1. backups of ``env`` left by a process that died (no manifest, lock free)
   are deleted; the root must be writable (else exit 3 naming the path);
2. a pg_dump at least as new as the server is found (else exit 2 with the fix);
3. one REPEATABLE READ transaction exports its snapshot; ``pg_dump -Fd -j N
   --snapshot`` dumps in it while the same transaction counts every table's
   rows (so the counts are those of the dump);
4. every file is hashed (sha256, size), or encrypted and the encrypted bytes
   hashed (``[backup] encrypt``);
5. ``manifest.json`` is written last (fsync, atomic rename): only then is the
   backup complete. Any failure deletes the partial backup.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgferry import __version__
from pgferry.backup import crypto
from pgferry.backup.manifest import Manifest, iso
from pgferry.backup.storage import MANIFEST, LocalStorage, sha256_file, writable_failure
from pgferry.config import Config
from pgferry.errors import OperationFailed
from pgferry.pg import binaries
from pgferry.pg.connect import Target, begin_repeatable_read, connect, map_db_error, redact

DUMP = "dump"
#: tables whose rows pg_dump dumps: ordinary tables and partitions, outside system
#: schemas and not members of an extension (pg_dump leaves those to CREATE EXTENSION)
TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


@dataclass
class Created:
    manifest: Manifest
    path: Path
    cleaned: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "id": self.manifest.id,
            "env": self.manifest.env,
            "path": str(self.path),
            "cleaned": self.cleaned,
            "seconds": round(self.seconds, 3),
            "manifest": self.manifest.to_dict(),
        }


def new_id(now: datetime) -> str:
    """``20261122T020013Z-3fa2``: sorts by time; the suffix tells two in a second apart."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def server_major(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version')"
    ).fetchone()
    assert row is not None
    return row[0] // 10000, str(row[1]).split()[0]


def no_timeouts(conn: psycopg.Connection[Any], major: int) -> None:
    """The snapshot transaction idles while pg_dump reads in it, and counts every table: a
    role's or database's timeouts must not end it (pg_dump sets its own sessions' so too)."""
    names = ["statement_timeout", "idle_in_transaction_session_timeout"]
    names += ["transaction_timeout"] if major >= 17 else []
    conn.execute(
        "SELECT " + ", ".join("set_config(%s, '0', false)" for _ in names),
        names,
    )


def prepare_root(store: LocalStorage, env: str) -> list[str]:
    """Make ``<root>/<env>`` (exit 3 naming it if it cannot be written); clean dead backups."""
    d = store.env_dir(env)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:  # named by the directory, not the probe file
        raise writable_failure(d, OSError(e.errno, e.strerror)) from None
    cleaned = store.stale(env)
    for backup_id in cleaned:
        store.delete(env, backup_id)
    return cleaned


def _files(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*") if p.is_file())


def seal(staging: Path, d: Path, key: crypto.Key | None, jobs: int) -> dict[str, dict[str, Any]]:
    """Hash every dump file (or encrypt it into ``d/dump``): {relative path: sha256, size}."""

    def one(p: Path) -> tuple[str, dict[str, Any]]:
        rel = f"{DUMP}/{p.relative_to(staging).as_posix()}"
        if key is None:
            digest, size = sha256_file(p)
        else:
            out = d / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            digest, size = crypto.encrypt_file(p, out, key, rel)
            p.unlink()
        return rel, {"sha256": digest, "size": size}

    with ThreadPoolExecutor(max(1, jobs)) as pool:  # hashlib and AES-GCM release the GIL
        files = dict(pool.map(one, _files(staging)))
    if key is not None:
        shutil.rmtree(staging)
    return dict(sorted(files.items()))


def count_rows(conn: psycopg.Connection[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schema, name in conn.execute(TABLES_SQL).fetchall():
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(name)
            )
        ).fetchone()
        counts[f"{schema}.{name}"] = int(row[0]) if row else 0
    return counts


def dump(
    pg_dump: binaries.Binary, target: Target, out: Path, snapshot: str, jobs: int, compression: str
) -> subprocess.Popen[bytes]:
    conninfo, env = binaries.libpq_args(target.dsn)
    return subprocess.Popen(
        [
            str(pg_dump.path),
            "-Fd",
            "-j",
            str(jobs),
            "-Z",
            compression,
            "--snapshot",
            snapshot,
            "-f",
            str(out),
            "-d",
            conninfo,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=binaries.die_with_parent,
    )


def _failure(stderr: bytes, rc: int, d: Path) -> OperationFailed:
    lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    disk = [
        ln
        for ln in lines
        if any(
            s in ln
            for s in ("No space left", "Permission denied", "Read-only file system", "Disk quota")
        )
    ]
    if disk:
        why = redact(disk[0].rsplit(": ", 1)[-1])
        return OperationFailed(
            f"cannot write the backup at {d}: {why}; free space or fix "
            "the permissions of [backup] dir",
            path=str(d),
        )
    errors = [ln for ln in lines if "error" in ln.lower()] or lines
    text = redact(errors[0] if errors else f"exit code {rc}").removeprefix("pg_dump: ")
    return OperationFailed(f"pg_dump failed: {text}; nothing was kept", path=str(d))


def run_create(
    cfg: Config,
    target: Target,
    *,
    tag: str | None = None,
    keep: bool = False,
    jobs: int | None = None,
    note: Callable[[str], None] | None = None,
) -> Created:
    """Take a backup of ``target`` (see the module docstring); not journaled."""
    t0 = time.monotonic()
    store = LocalStorage(cfg.backup_dir)
    cleaned = prepare_root(store, target.name)
    if cleaned and note:
        note(
            f"removed {len(cleaned)} interrupted backup(s) of {target.name}: " + ", ".join(cleaned)
        )
    jobs = jobs or cfg.backup.jobs
    key = crypto.Key.new() if cfg.backup.encrypt else None
    conn = connect(target.dsn, autocommit=True)
    try:
        major, server_version = server_major(conn)
        no_timeouts(conn, major)
        pg_dump = binaries.find("pg_dump", major)
        compression = "zstd" if binaries.supports_zstd(pg_dump.path) else "gzip"
        started = datetime.now(UTC)
        backup_id = new_id(started)
        with store.writing(target.name, backup_id) as d:
            try:
                manifest = _dump_into(conn, d, target, pg_dump, jobs, compression, key)
                manifest.id, manifest.env = backup_id, target.name
                manifest.started_at, manifest.finished_at = iso(started), iso(datetime.now(UTC))
                manifest.server_version = server_version
                manifest.tag, manifest.keep = tag, keep
                try:
                    store.write_json(target.name, backup_id, MANIFEST, manifest.to_dict())
                except OSError as e:
                    raise writable_failure(d, e) from None
            except BaseException:
                store.delete(target.name, backup_id)
                raise
    except psycopg.Error as e:
        raise map_db_error(e, f"backup of {target.name}") from None
    finally:
        conn.close()
    return Created(manifest, d, cleaned, time.monotonic() - t0)


def _dump_into(
    conn: psycopg.Connection[Any],
    d: Path,
    target: Target,
    pg_dump: binaries.Binary,
    jobs: int,
    compression: str,
    key: crypto.Key | None,
) -> Manifest:
    staging = d / (DUMP if key is None else ".plain")
    begin_repeatable_read(conn, read_only=True)
    row = conn.execute("SELECT pg_export_snapshot(), current_database()").fetchone()
    assert row is not None
    snapshot, database = row
    proc = dump(pg_dump, target, staging, snapshot, jobs, compression)
    try:
        # counted while pg_dump reads, in the same snapshot; the transaction stays open
        # until pg_dump is done, so its workers can import the snapshot too
        counts = count_rows(conn)
        _, err = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    conn.execute("ROLLBACK")
    if proc.returncode != 0:
        raise _failure(err, proc.returncode, d)
    try:
        files = seal(staging, d, key, jobs)
    except OSError as e:
        raise writable_failure(d, e) from None
    return Manifest(
        id="",
        env=target.name,
        database=str(database),
        started_at="",
        finished_at="",
        size_bytes=sum(f["size"] for f in files.values()),
        tables=counts,
        files=files,
        server_version="",
        pg_dump_version=pg_dump.version,
        tool_version=__version__,
        compression=compression,
        encryption=key.params if key else None,
    )

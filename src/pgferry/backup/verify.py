"""``backup verify``: re-hash every file, read the table of contents, optionally restore.

Contract: :func:`verify` checks a complete backup and writes the result into
its sidecar ``verification.json`` (never the manifest) and returns
:class:`Verified`; ``problems`` name the file or table. Checks:

1. every file in the manifest exists with its size and sha256; no file was added;
2. ``pg_restore --list`` reads the archive's table of contents, and every
   table of the manifest has its data entry in it;
3. with ``restore_test``: the dump is restored (``pg_restore -j N``) into a
   scratch database on the environment's server, each table's rows are
   counted and compared with the manifest, and the scratch database is dropped.

:func:`plain_dump` gives a directory pg_restore can read: the dump itself, or
for an encrypted backup a decrypted copy (deleted afterwards; a file that does
not decrypt is a problem naming it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgferry.backup import clean, crypto, loading, scratch
from pgferry.backup.catalog import BackupInfo
from pgferry.backup.manifest import Manifest, Verification, iso
from pgferry.backup.storage import LOCK, SIDECAR, LocalStorage, _locked, sha256_file
from pgferry.config import Config
from pgferry.errors import ProblemFound
from pgferry.pg import binaries
from pgferry.pg.connect import Target, redact

DUMP = "dump"


@dataclass
class Verified:
    info: BackupInfo
    problems: list[str] = field(default_factory=list)
    files_checked: int = 0
    restore_test: bool = False
    restore_test_ok: bool = False
    tables_compared: int = 0
    seconds: float = 0.0
    #: the result is in ``verification.json`` (False: the backup directory is read-only
    #: or full; ``warnings`` says so, and health still sees the previous verification)
    recorded: bool = True
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "id": self.info.id,
            "env": self.info.env,
            "path": str(self.info.path),
            "files_checked": self.files_checked,
            "verify_ok": self.ok,
            "restore_test": self.restore_test,
            "restore_test_ok": self.restore_test_ok,
            "tables_compared": self.tables_compared,
            "problems": self.problems,
            "recorded": self.recorded,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
        }


def check_files(info: BackupInfo, jobs: int = 2) -> list[str]:
    """Problems with the files against the manifest: missing, resized, changed, added."""
    m = info.manifest
    assert m is not None

    def one(item: tuple[str, dict[str, Any]]) -> str | None:
        rel, want = item
        p = info.path / rel
        if not p.is_file():
            return f"file {rel} is missing"
        digest, size = sha256_file(p)
        if size != want["size"]:
            return f"file {rel} has {size} bytes, the manifest says {want['size']}"
        if digest != want["sha256"]:
            return f"file {rel} does not match its sha256 in the manifest (changed or damaged)"
        return None

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        problems = [p for p in pool.map(one, sorted(m.files.items())) if p]
    base = info.path / DUMP
    if base.is_dir():
        for p in sorted(base.rglob("*")):
            rel = p.relative_to(info.path).as_posix()
            if p.is_file() and rel not in m.files:
                problems.append(f"file {rel} is not in the manifest (added after the backup)")
    return problems


def pg_restore_for(m: Manifest) -> binaries.Binary:
    """A pg_restore that reads what this manifest's pg_dump wrote."""
    return binaries.find("pg_restore", int(m.pg_dump_version.split(".")[0]))


@contextlib.contextmanager
def plain_dump(info: BackupInfo, root: Path) -> Iterator[Path]:
    """A directory pg_restore can read (decrypted into a temporary copy when encrypted)."""
    m = info.manifest
    assert m is not None
    if not m.encryption:
        yield info.path / DUMP
        return
    key = crypto.Key.open(m.encryption, info.id)
    # a copy a killed pgferry left (nobody holds its lock) is plaintext: it goes first
    for old in root.glob(".decrypted-*"):
        if old.is_dir() and not _locked(old / LOCK):
            shutil.rmtree(old, ignore_errors=True)
    tmp = root / f".decrypted-{info.id}-{secrets.token_hex(3)}"
    tmp.mkdir(mode=0o700, parents=True)
    held = os.open(tmp / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        for rel in m.files:
            out = tmp / Path(rel).relative_to(DUMP)
            out.parent.mkdir(parents=True, exist_ok=True)
            crypto.decrypt_file(info.path / rel, out, key, rel)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(held)


def toc_entries(pg_restore: binaries.Binary, dump: Path) -> tuple[list[str], str | None]:
    """``pg_restore --list``'s lines, or the error that kept it from reading the archive."""
    p = subprocess.run(
        [str(pg_restore.path), "--list", str(dump)], capture_output=True, text=True, check=False
    )
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        return [], lines[-1] if lines else f"exit code {p.returncode}"
    return [ln for ln in p.stdout.splitlines() if ln and not ln.startswith(";")], None


def check_toc(pg_restore: binaries.Binary, dump: Path, m: Manifest) -> list[str]:
    lines, err = toc_entries(pg_restore, dump)
    if err is not None:
        return [f"the table of contents does not read: {err}"]
    data = " ".join(ln for ln in lines if " TABLE DATA " in ln)
    missing = [
        t for t in m.tables if f" TABLE DATA {t.split('.', 1)[0]} {t.split('.', 1)[1]} " not in data
    ]
    return [f"table {t} has no data in the archive's table of contents" for t in missing]


def count_tables(dsn: str, tables: list[str], jobs: int = 1) -> dict[str, int | None]:
    """Exact row counts of ``tables`` (None: missing), over ``jobs`` connections."""
    pending = list(tables)
    out: dict[str, int | None] = {}

    def worker() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            while pending:
                try:
                    name = pending.pop()
                except IndexError:
                    return
                schema, table = name.split(".", 1)
                try:
                    row = c.execute(
                        sql.SQL("SELECT count(*) FROM {}.{}").format(
                            sql.Identifier(schema), sql.Identifier(table)
                        )
                    ).fetchone()
                    out[name] = int(row[0]) if row else None
                except psycopg.errors.UndefinedTable:
                    out[name] = None

    with ThreadPoolExecutor(max(1, min(jobs, len(tables)))) as pool:
        for f in [pool.submit(worker) for _ in range(max(1, min(jobs, len(tables))))]:
            f.result()
    return out


def restore_test(
    cfg: Config,
    target: Target,
    info: BackupInfo,
    dump: Path,
    pg_restore: binaries.Binary,
    jobs: int,
    checks: Callable[[], list[str]] = list,
) -> tuple[list[str], int]:
    """Restore into a scratch database and compare row counts; (problems, tables compared).

    ``checks`` (the file and table-of-contents checks) run while pg_restore works; when
    they find a problem the restore is stopped and only they are reported.
    """
    m = info.manifest
    assert m is not None
    scratch.drop_leftovers(cfg, target)
    name = scratch.scratch_name()
    # a grant to a role dropped since the backup says nothing of whether it restores (an
    # in-place restore leaves it out too): it is left out here, through the script
    script = clean.Script.of(target.dsn)
    skip = script.skip if script.grants_left_out(pg_restore, dump) else None
    dsn = scratch.create_database(cfg, target, name)
    try:
        proc = loading.start(pg_restore, ["-j", str(jobs), "--no-owner"], dsn, dump, skip)
        try:
            problems = checks()
            if problems:
                proc.kill()
            rc, err = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if problems:
            return problems, 0
        if rc != 0:
            errs = [ln for ln in err.splitlines() if "error" in ln.lower()]
            problems.append(
                "the test restore reported errors: "
                + redact(errs[0] if errs else f"exit code {rc}")
            )
        got = count_tables(dsn, list(m.tables), jobs)
        for t, want in m.tables.items():
            if got[t] is None:
                problems.append(f"table {t} is missing after the test restore")
            elif got[t] != want:
                problems.append(
                    f"table {t} has {got[t]} rows after the test restore, the manifest says {want}"
                )
        return problems, len(m.tables)
    finally:
        scratch.drop_later(cfg, target, name)


def check(info: BackupInfo, root: Path, jobs: int = 2) -> list[str]:
    """Files and table of contents (what restore checks first)."""
    m = info.manifest
    assert m is not None
    problems = check_files(info, jobs)
    if problems:
        return problems
    with plain_dump(info, root) as dump:
        return check_toc(pg_restore_for(m), dump, m)


def verify(
    cfg: Config,
    info: BackupInfo,
    *,
    restore: bool = False,
    target: Target | None = None,
    jobs: int | None = None,
) -> Verified:
    """Verify ``info`` (and with ``restore``, test-restore it on ``target``'s server)."""
    t0 = time.monotonic()
    jobs = jobs or cfg.backup.jobs
    m = info.manifest
    assert m is not None
    res = Verified(info, files_checked=len(m.files), restore_test=restore)
    store = LocalStorage(cfg.backup_dir)
    previous = Verification.from_dict(store.read_json(info.env, info.id, SIDECAR))
    try:
        if restore and target is not None and not m.encryption:
            # the files are hashed and the table of contents read while pg_restore works
            dump = info.path / DUMP
            pg_restore = pg_restore_for(m)

            def checks() -> list[str]:
                return check_files(info, jobs) or check_toc(pg_restore, dump, m)

            res.problems, res.tables_compared = restore_test(
                cfg, target, info, dump, pg_restore, jobs, checks
            )
            res.restore_test_ok = not res.problems
        else:
            res.problems = check_files(info, jobs)
            if not res.problems:
                with plain_dump(info, cfg.backup_dir) as dump:
                    pg_restore = pg_restore_for(m)
                    res.problems = check_toc(pg_restore, dump, m)
                    if restore and not res.problems and target is not None:
                        res.problems, res.tables_compared = restore_test(
                            cfg, target, info, dump, pg_restore, jobs
                        )
                        res.restore_test_ok = not res.problems
    except ProblemFound as e:  # a file that does not decrypt
        res.problems.append(e.message)
    now = iso(datetime.now(UTC))
    side = Verification(
        verified_at=now,
        verify_ok=res.ok,
        problems=res.problems,
        restore_tested_at=previous.restore_tested_at,
        restore_test_ok=previous.restore_test_ok,
    )
    if restore:
        side.restore_tested_at, side.restore_test_ok = now, res.ok and res.restore_test_ok
    try:
        store.write_json(info.env, info.id, SIDECAR, side.to_dict())
        info.verification = side
    except OSError as e:  # a read-only copy of the backups, or a full disk: still a verify
        res.recorded = False
        res.warnings.append(
            f"the result could not be recorded in {info.path / SIDECAR}: {e.strerror or e}; "
            "`backup list` and `pgferry health` still show the previous verification"
        )
    res.seconds = time.monotonic() - t0
    return res

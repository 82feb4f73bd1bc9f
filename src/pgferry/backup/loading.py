"""Running pg_restore into a database, on any server version pgferry backs up.

Contract: :func:`start` runs ``pg_restore ARGS -d DSN DUMP`` and returns a
:class:`Loading` to wait for (or kill). pg_restore 17 and newer starts every
session with ``SET transaction_timeout = 0``, which a server older than 17 does
not know, so every restore into it failed on its first statement. Into such a
server the same pg_restore writes its script instead (``-f -``, where ``-j`` does
not apply), that one line outside the rows is left out, and ``psql -v
ON_ERROR_STOP=1`` runs it: the first error ends the run (exit code 3).
:func:`strip_newer_settings` is that filter for a script pgferry builds itself. With
``skip``, the script is always the way, and the statements it names are left out too
(:mod:`pgferry.backup.clean`: what an in-place restore leaves out).
pg_restore and psql die with pgferry.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import psycopg

from pgferry.pg import binaries

#: the first major version that knows ``transaction_timeout``
TRANSACTION_TIMEOUT = 17
_NEWER_ONLY = b"SET transaction_timeout = 0;\n"


def server_major(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT current_setting('server_version_num')::int").fetchone()
    return int(row[0]) // 10000 if row else 0


def strip_newer_settings(
    lines: Iterable[bytes], skip: Callable[[bytes], bool] | None = None
) -> Iterator[bytes]:
    """A pg_restore script without the settings an older server does not know, nor the
    statements ``skip`` names (never a row of a table's data, which may hold the same
    text)."""
    in_copy = False
    for line in lines:
        if in_copy:
            in_copy = line not in (b"\\.\n", b"\\.\r\n")
        elif line.startswith(b"COPY ") and line.rstrip().endswith(b"FROM stdin;"):
            in_copy = True
        elif line == _NEWER_ONLY or (skip is not None and skip(line)):
            continue
        yield line


class Loading:
    """pg_restore (and psql, for an older server) at work: :meth:`wait` or :meth:`kill`."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], errs: list[IO[bytes]]) -> None:
        self.procs = procs
        self.errs = errs
        self.feeder: threading.Thread | None = None

    def kill(self) -> None:
        for p in self.procs:
            p.kill()

    def wait(self) -> tuple[int, str]:
        """(exit code, stderr): the last process's code, else the first that failed."""
        if self.feeder is not None:
            self.feeder.join()
        codes = [p.wait() for p in self.procs]
        err = b"".join(_read(f) for f in self.errs).decode(errors="replace")
        failed = [c for c in codes if c != 0]
        return (codes[-1] or (failed[0] if failed else 0)), err


def _read(f: IO[bytes]) -> bytes:
    f.seek(0)
    return f.read()  # (a TemporaryFile: gone when it is closed or collected)


def start(
    pg_restore: binaries.Binary,
    args: list[str],
    dsn: str,
    dump: Path,
    skip: Callable[[bytes], bool] | None = None,
) -> Loading:
    """Start restoring ``dump`` into the database of ``dsn`` (see the module docstring);
    with ``skip``, always through the script, without the statements it names."""
    conninfo, env = binaries.libpq_args(dsn)
    errs: list[IO[bytes]] = [tempfile.TemporaryFile()]
    common: dict[str, Any] = {"env": env, "preexec_fn": binaries.die_with_parent}
    if skip is None and (
        pg_restore.major < TRANSACTION_TIMEOUT or server_major(dsn) >= TRANSACTION_TIMEOUT
    ):
        proc = subprocess.Popen(
            [str(pg_restore.path), *args, "-d", conninfo, str(dump)],
            stdout=subprocess.DEVNULL,
            stderr=errs[0],
            **common,
        )
        return Loading([proc], errs)
    psql = binaries.find("psql", pg_restore.major)
    script = _without_jobs(args)
    producer = subprocess.Popen(
        [str(pg_restore.path), *script, "-f", "-", str(dump)],
        stdout=subprocess.PIPE,
        stderr=errs[0],
        **common,
    )
    errs.append(tempfile.TemporaryFile())
    consumer = subprocess.Popen(
        [str(psql.path), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=errs[1],
        **common,
    )
    loading = Loading([producer, consumer], errs)

    def feed() -> None:
        assert producer.stdout is not None and consumer.stdin is not None
        try:
            for line in strip_newer_settings(producer.stdout, skip):
                consumer.stdin.write(line)
        except BrokenPipeError:  # psql stopped at an error: pg_restore need not go on
            producer.kill()
        finally:
            producer.stdout.close()
            try:
                consumer.stdin.close()
            except BrokenPipeError:
                pass

    loading.feeder = threading.Thread(target=feed, daemon=True)
    loading.feeder.start()
    return loading


def _without_jobs(args: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "-j":
            skip = True
        else:
            out.append(a)
    return out


def run(
    pg_restore: binaries.Binary,
    args: list[str],
    dsn: str,
    dump: Path,
    skip: Callable[[bytes], bool] | None = None,
) -> tuple[int, str]:
    """:func:`start` and wait: (exit code, stderr)."""
    loading = start(pg_restore, args, dsn, dump, skip)
    try:
        return loading.wait()
    except BaseException:
        loading.kill()
        loading.wait()
        raise

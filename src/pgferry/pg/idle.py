"""Stop the embedded server once nobody has used it for a while (``[embedded] idle_stop``).

Contract:

- :func:`used` is called by every command that needs the embedded server (through
  :func:`pgferry.pg.embedded.ensure_database`): it marks the server as used now
  (the mtime of ``<dir>/last-used``) and makes sure one watcher runs for it
  (:func:`ensure_watcher`; ``idle_stop = "0"`` runs none, the server then runs
  until ``pgferry embedded stop``).
- The watcher is a small detached process (``python -m pgferry.pg.idle DIR
  SECONDS``, its pid in ``<dir>/idle-watch.pid``). Every few seconds it asks the
  server how many client sessions it has, and renews the ``last-used`` mark when it
  sees one (so the mark says when the server was last seen in use, by a command or a
  client); the server is idle from that mark. Idle for ``SECONDS``:
  it stops the server (``pg_ctl stop -m fast``: there is no client left) and
  exits. It also exits when the server was stopped by someone else.
- :func:`stop_watcher` ends it (``pgferry embedded stop`` calls it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PIDFILE = "idle-watch.pid"
MARK = "last-used"
LOCKFILE = "idle-watch.lock"


def _interval(idle: float) -> float:
    return min(30.0, max(0.5, idle / 4))


def _read_pidfile(root: Path) -> tuple[int, float] | None:
    try:
        pid, seconds = (root / PIDFILE).read_text(encoding="utf-8").split()
        return int(pid), float(seconds)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """True when ``pid`` is a running watcher (not a reused pid of something else)."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return b"pgferry.pg.idle" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no /proc (macOS): trust the pid
        return True


def used(root: Path, idle_stop: float | None) -> None:
    """Mark the server under ``root`` as used now; keep a watcher running when asked to."""
    mark = root / MARK
    mark.touch()
    os.utime(mark)
    if idle_stop:
        ensure_watcher(root, idle_stop)


def ensure_watcher(root: Path, idle_stop: float) -> None:
    """One watcher for ``root`` with this idle time (a watcher with another is replaced)."""
    import fcntl

    with open(root / LOCKFILE, "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        known = _read_pidfile(root)
        if known is not None and _alive(known[0]):
            if known[1] == idle_stop:
                return
            with contextlib.suppress(OSError):
                os.kill(known[0], signal.SIGTERM)
        p = subprocess.Popen(  # detached: it outlives this command, by design
            [sys.executable, "-m", "pgferry.pg.idle", str(root), f"{idle_stop:g}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            cwd="/",
        )
        (root / PIDFILE).write_text(f"{p.pid} {idle_stop:g}\n", encoding="utf-8")


def stop_watcher(root: Path) -> None:
    """End the watcher of ``root``, if one runs."""
    known = _read_pidfile(root)
    if known is not None and _alive(known[0]):
        with contextlib.suppress(OSError):
            os.kill(known[0], signal.SIGTERM)
    with contextlib.suppress(OSError):
        (root / PIDFILE).unlink()


def _clients(root: Path) -> int | None:
    """Client sessions on the server (None when it does not answer)."""
    import psycopg

    from pgferry.pg import embedded

    info = embedded.postmaster(root)
    if info is None:
        return None
    try:
        with psycopg.connect(
            info.get_uri(),
            autocommit=True,
            connect_timeout=5,
            application_name="pgferry idle watch",
        ) as c:
            row = c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type ="
                " 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return None


def watch(root: Path, idle_stop: float) -> None:
    """The watcher's loop (see the module docstring)."""
    from pgferry.pg import embedded

    last_seen = time.time()
    while True:
        time.sleep(_interval(idle_stop))
        if not embedded.is_running(root):
            return
        clients = _clients(root)
        now = time.time()
        if clients:
            last_seen = now
            with contextlib.suppress(OSError):  # a client counts as a use: mark it
                os.utime(root / MARK)
        with contextlib.suppress(OSError):
            last_seen = max(last_seen, (root / MARK).stat().st_mtime)
        if clients == 0 and now - last_seen >= idle_stop:
            embedded.stop(root, watcher=False)
            return


def main(argv: list[str]) -> None:
    root, idle_stop = Path(argv[0]), float(argv[1])
    try:
        watch(root, idle_stop)
    finally:
        known = _read_pidfile(root)
        if known is not None and known[0] == os.getpid():
            with contextlib.suppress(OSError):
                (root / PIDFILE).unlink()


if __name__ == "__main__":  # pragma: no cover (run as a detached process)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main(sys.argv[1:])

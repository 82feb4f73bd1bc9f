"""``pgferry demo``: the whole story, end to end, on the embedded server.

Each capability adds its steps to :data:`STEPS`; :func:`run` builds a fresh demo
project from ``examples/`` and runs them in order, printing what a user would see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run(directory: Path, st: Any) -> dict[str, Any]:
    raise NotImplementedError("the demo's steps land with the migration engine")

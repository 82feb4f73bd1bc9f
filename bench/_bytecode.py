"""pgferry's bytecode, compiled once before a bench times pgferry's start-up."""

from __future__ import annotations

import os
from pathlib import Path


def compile_bytecode() -> bool:
    """Compile pgferry's modules, as ``pip install`` does; True when that was needed.

    An editable checkout under PYTHONDONTWRITEBYTECODE=1 (this project's sandbox sets
    it) never writes .pyc files, so every start would recompile what it imports (~30 ms
    for the lint path, ~90 ms for a verify): a cost no installed pgferry pays.
    """
    import compileall

    import pgferry

    missing = os.environ.get("PYTHONDONTWRITEBYTECODE") == "1"
    compileall.compile_dir(Path(pgferry.__file__).parent, quiet=1)
    return missing

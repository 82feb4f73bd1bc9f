"""``pgferry sync`` and ``pgferry verify`` (commands land here)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the sync and verify commands to ``app``."""

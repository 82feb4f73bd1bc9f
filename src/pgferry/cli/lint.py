"""``pgferry lint``: the zero-downtime migration linter (command lands here)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the lint command to ``app``."""

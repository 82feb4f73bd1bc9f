"""``pgferry migrate ...``: versioned SQL migrations (commands land here)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Versioned SQL migrations, Flyway-compatible.", no_args_is_help=True)

"""``pgferry migrate ...``: versioned SQL migrations, Flyway-compatible.

The verbs live in two modules: :mod:`pgferry.cli.migrate_run` (plan, up, undo:
the ones that execute SQL) and :mod:`pgferry.cli.migrate_info` (status,
validate, baseline, repair, new, number, sum).
"""

from __future__ import annotations

import typer

from pgferry.cli import migrate_info, migrate_run

app = typer.Typer(help="Versioned SQL migrations, Flyway-compatible.", no_args_is_help=True)
migrate_run.register(app)
migrate_info.register(app)


def register(root: typer.Typer) -> None:
    """Add ``pgferry migrate ...`` to ``root``."""
    root.add_typer(app, name="migrate")

"""``pgferry migrate ...``: versioned SQL migrations, Flyway-compatible.

The verbs live in two modules: :mod:`pgferry.cli.migrate_run` (plan, up, undo:
the ones that execute SQL), :mod:`pgferry.cli.migrate_info` (status,
validate, baseline, repair, new, number, sum) and :mod:`pgferry.cli.migrate_test` (test,
bench: on a scratch database).
"""

from __future__ import annotations

import typer

from pgferry.cli import migrate_info, migrate_run, migrate_test

app = typer.Typer(help="Versioned SQL migrations, Flyway-compatible.", no_args_is_help=True)
migrate_run.register(app)
migrate_info.register(app)
migrate_test.register(app)


def register(root: typer.Typer) -> None:
    """Add ``pgferry migrate ...`` to ``root``."""
    root.add_typer(app, name="migrate")

"""One CLI grammar (issue 10 item 13): the root's options before or after the command name."""

from __future__ import annotations

import pytest

from pgferry.cli.app import hoist_globals


@pytest.mark.parametrize(
    ("args", "want"),
    [
        (
            ["migrate", "status", "--config", "p.toml", "--debug"],
            ["--config", "p.toml", "--debug", "migrate", "status"],
        ),
        (
            ["migrate", "up", "--config=p.toml", "-e", "dev"],
            ["--config=p.toml", "migrate", "up", "-e", "dev"],
        ),
        (["--config", "p.toml", "journal", "--json"], ["--config", "p.toml", "--json", "journal"]),
        (["migrate", "--json", "status"], ["--json", "migrate", "status"]),  # a group has no --json
        (["sync", "dev", "prod", "--debug", "--yes"], ["--debug", "sync", "dev", "prod", "--yes"]),
        # an option's value is never taken for a global option
        (["migrate", "up", "--reason", "--debug"], ["migrate", "up", "--reason", "--debug"]),
        (["migrate", "new", "--", "--debug"], ["migrate", "new", "--", "--debug"]),
        # a pass-through command keeps its arguments
        (
            ["embedded", "psql", "-c", "SELECT 1", "--config", "x"],
            ["embedded", "psql", "-c", "SELECT 1", "--config", "x"],
        ),
        (
            ["--debug", "embedded", "psql", "--env", "dev"],
            ["--debug", "embedded", "psql", "--env", "dev"],
        ),
    ],
)
def test_hoist(args: list[str], want: list[str]) -> None:
    assert hoist_globals(args) == want

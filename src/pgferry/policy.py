"""Policy every command that writes to an environment goes through: blackout windows.

Contract: :func:`blackout_guard` is the one check ``migrate up|undo|repair|baseline``
``sync``, ``sync revert`` and ``backup restore`` call before they touch the target:

- inside an active ``[[blackout]]`` window for the environment it raises
  :class:`~pgferry.errors.Refused` (exit 4, naming the window) and journals the
  refusal in the target, where a journal exists;
- with ``override`` and a non-empty ``reason`` it lets the command run and journals
  the override (a ``blackout override`` row: which command, which window, why);
- ``override`` without a reason is :class:`~pgferry.errors.BadInput` (exit 2).

The windows themselves (and their validation when the config loads) are
:mod:`pgferry.migrate.windows`. ``now`` is passed in by tests; default: the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg

from pgferry.config import Blackout, Config
from pgferry.errors import PgferryError, Refused
from pgferry.migrate.windows import check_blackout, describe
from pgferry.pg.connect import Target


def blackout_guard(cfg: Config, env: str | Target, command: str, *, override: bool = False,
                   reason: str | None = None, now: datetime | None = None,
                   arguments: Mapping[str, Any] | None = None) -> Blackout | None:
    """Refused (exit 4, journaled) inside an active window unless overridden with a reason;
    returns the window that was overridden (None outside every window)."""
    from pgferry import journal
    from pgferry.pg.connect import resolve_env

    name = env.name if isinstance(env, Target) else env
    try:
        window = check_blackout(cfg, name, now or datetime.now(UTC), override, reason)
    except Refused as e:
        target = env if isinstance(env, Target) else resolve_env(cfg, name)
        journal.refused(target, command, e, arguments)
        raise
    if window is not None:
        target = env if isinstance(env, Target) else resolve_env(cfg, name)
        try:
            journal.append(target, "blackout override", outcome="ok", create=False,
                           arguments=arguments,
                           details={"command": command, "window": describe(window),
                                    "reason": reason})
        except (PgferryError, psycopg.Error) as e:  # the override stands all the same
            journal.warn(target, e)
    return window

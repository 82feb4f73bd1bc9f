"""Answers of ``GET /api/runs`` kept as the bytes sent, while no run changed.

Contract: :class:`AnswerCache` maps a key (who may see what, and the query) to the
answer made at one runs' version (:mod:`pgferry.jobs.runs_version`) and hands it out
only to a request whose own, freshly read version is that same one: a run created or
changed by anyone, in any process, changes the version and so the next answer is made
again. Nothing expires by time; nothing is served on a guess. While an answer is being
made for a key and version, the other requests for it wait for that one instead of
making their own (a burst right after a change makes one query, not fifty). An answer
that failed is not kept. At most ``size`` keys are kept, the least recently used
dropped first.

The key always holds the caller's role, whatever the route's answer depends on today
(a run listing shows every run to every role): should a role ever see less, one role's
answer can never reach another's.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable


class AnswerCache:
    """Serialised answers per key, valid at one version (see the module docstring)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._kept: OrderedDict[Hashable, tuple[str, bytes]] = OrderedDict()
        self._making: dict[tuple[Hashable, str], asyncio.Task[bytes]] = {}

    async def answer(
        self, key: Hashable, version: str, make: Callable[[], Awaitable[bytes]]
    ) -> bytes:
        """The answer for ``key`` at ``version``: kept, being made, or made now by ``make``."""
        kept = self._kept.get(key)
        if kept is not None and kept[0] == version:
            self._kept.move_to_end(key)
            return kept[1]
        task = self._making.get((key, version))
        if task is None:
            task = asyncio.ensure_future(make())
            self._making[(key, version)] = task
            task.add_done_callback(lambda t: self._made(key, version, t))
        # shielded: a caller that goes away must not cancel what the others wait for
        return await asyncio.shield(task)

    def _made(self, key: Hashable, version: str, task: asyncio.Task[bytes]) -> None:
        self._making.pop((key, version), None)
        if task.cancelled() or task.exception() is not None:
            return  # not kept: the next request tries again
        self._kept[key] = (version, task.result())
        self._kept.move_to_end(key)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)

    def __len__(self) -> int:
        return len(self._kept)

"""``journal`` and ``journal verify``: who changed what, when, in one environment.

Contract: :func:`show` returns the newest runs (empty when there is no
journal); :func:`verify` recomputes the hash chain and returns its report
(``ok`` False: exit 1). Both are read-only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgferry.commands import base
from pgferry.config import Config
from pgferry.errors import BadInput

if TYPE_CHECKING:
    from pgferry.journal.chain import ChainReport


@dataclass
class JournalEntries:
    env: str
    entries: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "env": self.env, "entries": self.entries}


def show(cfg: Config, env: str | None = None, limit: int = 20) -> JournalEntries:
    """``journal``: the newest ``limit`` runs of ``env``, newest first."""
    from pgferry import journal

    target = base.target(cfg, env)
    return JournalEntries(target.name, journal.read(target, limit))


@dataclass
class JournalVerified:
    env: str
    report: ChainReport

    @property
    def exit_code(self) -> int:
        return 0 if self.report.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, **self.report.to_dict()}


def verify(cfg: Config, env: str | None = None, head: str | None = None) -> JournalVerified:
    """``journal verify``: recompute the hash chain (read-only); ``head``: a head hash printed
    by an earlier verify and kept elsewhere, which must still be in the chain."""
    from pgferry import journal

    kept = None
    if head is not None:
        kept = head.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{12,64}", kept):
            raise BadInput(
                f"--head {head!r} is not a head hash: give the 64 hex digits `journal verify` "
                "printed (or at least their first 12)"
            )
    target = base.target(cfg, env)
    return JournalVerified(target.name, journal.verify(target, kept))

"""GFS retention: which complete backups ``backup prune`` keeps. Pure: no files, no clock.

Contract: :func:`plan` takes the complete backups of one environment
(:class:`Item`), ``now`` and a :class:`Policy`, and returns a
:class:`RetentionPlan`: every id is either kept or deleted, with the slots it fills
and why it is kept.

- ``daily = N``: the newest backup of each of the N most recent calendar days
  *that have a backup* (so backups that stopped a month ago are not all
  expired at once); ``weekly`` the same per ISO week, ``monthly`` per month.
  Days, weeks and months are those of the wall clock in ``tz`` (DST-aware).
- Always kept: backups with the keep flag, the newest verified one, and the
  newest one of all; then the newest others until ``min_count`` are kept.

Deleting what a decision deletes and planning again keeps everything
(idempotent), because the periods with a backup and the newest backup of
each are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Policy:
    daily: int = 7
    weekly: int = 4
    monthly: int = 12
    min_count: int = 1


@dataclass(frozen=True)
class Item:
    """A complete backup as retention sees it."""

    id: str
    at: datetime  # when it was taken (aware; naive means UTC)
    keep: bool = False
    verified: bool = False


@dataclass
class RetentionPlan:
    keep: list[str] = field(default_factory=list)  # newest first
    delete: list[str] = field(default_factory=list)  # newest first
    #: id -> the slots it fills: "daily", "weekly", "monthly"
    slots: dict[str, list[str]] = field(default_factory=dict)
    #: id -> why it is kept (slots, "kept", "newest", "newest verified", "min_count")
    reasons: dict[str, list[str]] = field(default_factory=dict)


def _newest_per_period(
    items: Sequence[Item], period: Callable[[Item], Hashable], n: int
) -> list[str]:
    """The newest item of each of the ``n`` most recent periods that hold one."""
    seen: dict[Hashable, str] = {}
    for it in items:  # newest first: the first of a period is its newest
        key = period(it)
        if key not in seen:
            if len(seen) == n:
                break
            seen[key] = it.id
    return list(seen.values())


def _always(
    ordered: list[Item],
    policy: Policy,
    why: Callable[[str, str], None],
    reasons: dict[str, list[str]],
) -> None:
    """What is kept whatever the slots say: kept ones, the newest, the newest verified, and
    the newest up to min_count."""
    for it in ordered:
        if it.keep:
            why(it.id, "kept")
    if ordered:
        if ordered[0].id not in reasons:
            why(ordered[0].id, "newest")
        verified = next((i for i in ordered if i.verified), None)
        if verified is not None and verified.id not in reasons:
            why(verified.id, "newest verified")
    for it in ordered:
        if len(reasons) >= policy.min_count:
            break
        if it.id not in reasons:
            why(it.id, "min_count")


def plan(items: Sequence[Item], now: datetime, policy: Policy, tz: str = "UTC") -> RetentionPlan:
    """Which of ``items`` to keep under ``policy`` at ``now`` (see the module docstring)."""
    del now  # periods are counted from the backups themselves; kept for the contract
    zone = ZoneInfo(tz)

    def local(it: Item) -> datetime:
        at = it.at if it.at.tzinfo else it.at.replace(tzinfo=UTC)
        return at.astimezone(zone)

    ordered = sorted(
        items, key=lambda i: (i.at if i.at.tzinfo else i.at.replace(tzinfo=UTC), i.id), reverse=True
    )
    d = RetentionPlan()
    reasons: dict[str, list[str]] = {}

    def why(id_: str, reason: str) -> None:
        reasons.setdefault(id_, []).append(reason)

    periods: list[tuple[str, int, Callable[[Item], Hashable]]] = [
        ("daily", policy.daily, lambda i: local(i).date()),
        ("weekly", policy.weekly, lambda i: local(i).isocalendar()[:2]),
        ("monthly", policy.monthly, lambda i: (local(i).year, local(i).month)),
    ]
    for kind, n, period in periods:
        for id_ in _newest_per_period(ordered, period, n):
            d.slots.setdefault(id_, []).append(kind)
            why(id_, kind)
    _always(ordered, policy, why, reasons)
    d.keep = [i.id for i in ordered if i.id in reasons]
    d.delete = [i.id for i in ordered if i.id not in reasons]
    d.reasons = reasons
    return d

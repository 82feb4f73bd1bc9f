"""Blackout windows: when writes to an environment are refused (pure calendar logic).

Contract (pure; ``now`` is always passed in; no import of pgferry's config, which
validates its ``[[blackout]]`` entries with :func:`validate` when it loads):

- A ``[[blackout]]`` entry (any :class:`Window`, e.g. :class:`pgferry.config.Blackout`) is
  active when
  ``now`` lies in ``[from, to]`` and, if ``weekly`` is set, also inside the
  weekly window. ``from``/``to`` are dates (``2026-12-24``; ``to`` includes
  the whole day) or datetimes (``2026-12-24T16:00``, with or without an
  offset; without one they are read in the entry's ``timezone``). Either may be
  omitted (open-ended), but an entry needs ``from``, ``to`` or ``weekly``.
- ``weekly = "Fri 16:00 - Mon 06:00"`` recurs every week, read on the wall
  clock of ``timezone`` (default UTC, so DST moves with the zone); a window
  whose end is before its start wraps over the week's end. The end is exclusive.
- ``envs = [...]`` limits an entry to those environments; empty means all.
- :func:`active_window` returns the first active entry for an env (or None);
  :func:`pgferry.policy.decide` turns that into a decision (refused inside a window
  unless overridden with a reason).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKLY_RE = re.compile(
    r"^\s*([A-Za-z]+)\s+(\d{1,2}):(\d{2})\s*-\s*([A-Za-z]+)\s+(\d{1,2}):(\d{2})\s*$"
)
WEEK = 7 * 24 * 60


class Window(Protocol):
    """What a blackout entry says (``[[blackout]]``, :class:`pgferry.config.Blackout`)."""

    @property
    def from_(self) -> datetime | date | str | None: ...
    @property
    def to(self) -> datetime | date | str | None: ...
    @property
    def weekly(self) -> str | None: ...
    @property
    def timezone(self) -> str: ...
    @property
    def envs(self) -> list[str]: ...
    @property
    def reason(self) -> str: ...


W = TypeVar("W", bound=Window)


@dataclass(frozen=True)
class Weekly:
    """A weekly window as minutes since Monday 00:00: ``[start, end)``, wrapping if end < start."""

    start: int
    end: int

    def contains(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def _day(name: str, text: str) -> int:
    full = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    low = name.lower()
    if low in DAYS:
        return DAYS.index(low)
    if low in full:
        return full.index(low)
    raise ValueError(f"weekly {text!r}: {name!r} is not a day (Mon, Tue, ... Sun)")


def parse_weekly(text: str) -> Weekly:
    """``"Fri 16:00 - Mon 06:00"`` → :class:`Weekly`; ValueError with a clear message."""
    m = _WEEKLY_RE.match(text)
    if not m:
        raise ValueError(f'weekly {text!r} is not like "Fri 16:00 - Mon 06:00"')
    d1, h1, m1, d2, h2, m2 = m.groups()
    for h, mi in ((h1, m1), (h2, m2)):
        if int(h) > 24 or int(mi) > 59 or (int(h) == 24 and int(mi) != 0):
            raise ValueError(f"weekly {text!r}: {h}:{mi} is not a time of day")
    start = _day(d1, text) * 1440 + int(h1) * 60 + int(m1)
    end = (_day(d2, text) * 1440 + int(h2) * 60 + int(m2)) % WEEK
    if start == end:
        raise ValueError(f"weekly {text!r} is empty (start equals end)")
    return Weekly(start, end)


def zone(b: Window) -> tzinfo:
    try:
        return ZoneInfo(b.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"timezone {b.timezone!r} is not an IANA zone (e.g. Europe/Berlin)"
        ) from None


def _instant(value: str | date | datetime, tz: tzinfo, end: bool) -> datetime:
    """A bound as an aware datetime; a date ``to`` covers its whole day."""
    if isinstance(value, str):
        try:
            value = (
                date.fromisoformat(value)
                if len(value.strip()) == 10
                else datetime.fromisoformat(value.strip())
            )
        except ValueError:
            raise ValueError(
                f"{value!r} is not a date (2026-12-24) or datetime (2026-12-24T16:00+01:00)"
            ) from None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    day = value + timedelta(days=1) if end else value
    return datetime.combine(day, time(0), tzinfo=tz)


def validate(b: Window) -> None:
    """ValueError when the entry cannot be understood."""
    tz = zone(b)
    if b.weekly is None and b.from_ is None and b.to is None:
        raise ValueError("a blackout needs from, to or weekly")
    if b.weekly is not None:
        parse_weekly(b.weekly)
    lo = _instant(b.from_, tz, False) if b.from_ is not None else None
    hi = _instant(b.to, tz, True) if b.to is not None else None
    if lo and hi and hi <= lo:
        raise ValueError(f"to ({b.to}) is not after from ({b.from_})")


def is_active(b: Window, now: datetime) -> bool:
    """True when ``now`` (aware; naive means UTC) is inside the entry's window."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    tz = zone(b)
    if b.from_ is not None and now < _instant(b.from_, tz, False):
        return False
    if b.to is not None and now >= _instant(b.to, tz, True):
        return False
    if b.weekly is None:
        return True
    local = now.astimezone(tz)
    minute = local.weekday() * 1440 + local.hour * 60 + local.minute
    return parse_weekly(b.weekly).contains(minute)


def applies_to(b: Window, env: str) -> bool:
    return not b.envs or env in b.envs


def active_window(blackouts: Sequence[W], env: str, now: datetime) -> W | None:
    """The first entry for ``env`` active at ``now``, or None."""
    for b in blackouts:
        if applies_to(b, env) and is_active(b, now):
            return b
    return None


def describe(b: Window) -> str:
    """``weekly Fri 16:00 - Mon 06:00 (Europe/Berlin), 2026-12-20 .. 2026-12-27: reason``."""
    parts = []
    if b.weekly:
        parts.append(f"weekly {b.weekly.strip()} ({b.timezone})")
    if b.from_ is not None or b.to is not None:
        parts.append(
            f"{b.from_ or '…'} .. {b.to or '…'}" + ("" if b.weekly else f" ({b.timezone})")
        )
    text = ", ".join(parts)
    return f"{text}: {b.reason}" if b.reason else text

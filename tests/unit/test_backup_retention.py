"""GFS retention is a pure function of (backups, now, policy): properties and calendar edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from pgferry.backup.retention import Item, Policy, plan

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def item(i: int, at: datetime, keep: bool = False, verified: bool = False) -> Item:
    return Item(id=f"b{i:04d}", at=at, keep=keep, verified=verified)


items_st = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=900 * 24 * 60),  # minutes before NOW
        st.booleans(),
        st.booleans(),
    ),
    max_size=60,
).map(
    lambda xs: [
        item(i, NOW - timedelta(minutes=m), k and i % 5 == 0, v and i % 3 == 0)
        for i, (m, k, v) in enumerate(xs)
    ]
)
policy_st = st.builds(
    Policy,
    daily=st.integers(0, 8),
    weekly=st.integers(0, 5),
    monthly=st.integers(0, 13),
    min_count=st.integers(1, 4),
)
zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])


@settings(max_examples=300, deadline=None)
@given(items_st, policy_st, zones)
def test_properties(items: list[Item], policy: Policy, tz: str) -> None:
    d = plan(items, NOW, policy, tz)
    ids = {i.id for i in items}
    assert set(d.keep) | set(d.delete) == ids and not set(d.keep) & set(d.delete)
    if items:
        newest = max(items, key=lambda i: (i.at, i.id))
        assert newest.id in d.keep  # the newest complete backup always survives
        assert len(d.keep) >= min(policy.min_count, len(items))
    for i in items:
        if i.keep:
            assert i.id in d.keep
    verified = [i for i in items if i.verified]
    if verified:
        assert max(verified, key=lambda i: (i.at, i.id)).id in d.keep
    # no slot holds more than its policy, and no slot kind holds two of one period
    for kind, n in (
        ("daily", policy.daily),
        ("weekly", policy.weekly),
        ("monthly", policy.monthly),
    ):
        filled = [i for i, s in d.slots.items() if kind in s]
        assert len(filled) <= n, (kind, filled)
    # pruning twice changes nothing
    rest = [i for i in items if i.id in d.keep]
    again = plan(rest, NOW, policy, tz)
    assert again.delete == [] and set(again.keep) == set(d.keep)
    assert again.slots == d.slots


def test_daily_weekly_monthly_slots_and_min_count() -> None:
    day = timedelta(days=1)
    xs = [item(i, NOW - i * day) for i in range(60)]  # one a day, newest first
    d = plan(xs, NOW, Policy(daily=7, weekly=4, monthly=2, min_count=1))
    assert all("daily" in d.slots[f"b{i:04d}"] for i in range(7))
    weekly = sorted(i for i, s in d.slots.items() if "weekly" in s)
    assert len(weekly) == 4 and "b0000" in weekly  # Sunday 2026-11-22 ends ISO week 47
    monthly = sorted(i for i, s in d.slots.items() if "monthly" in s)
    # the newest of November (the 22nd) and of October (the 31st = 22 days back)
    assert monthly == ["b0000", "b0022"]
    assert len(d.delete) == 60 - len(d.keep)
    # min_count tops up with the newest ones not already kept
    d2 = plan(xs, NOW, Policy(daily=1, weekly=0, monthly=0, min_count=5))
    assert sorted(d2.keep) == [f"b{i:04d}" for i in range(5)]


def test_two_backups_a_day_keep_the_newest_of_the_day() -> None:
    xs = [
        item(0, NOW.replace(hour=1)),
        item(1, NOW.replace(hour=9)),
        item(2, NOW.replace(hour=5) - timedelta(days=1)),
    ]
    d = plan(xs, NOW, Policy(daily=7, weekly=0, monthly=0))
    assert sorted(d.keep) == ["b0001", "b0002"] and d.delete == ["b0000"]


def test_days_are_counted_where_the_backups_stopped() -> None:
    # cron broke 40 days ago: the last backups are still 7 daily ones, not zero
    xs = [item(i, NOW - timedelta(days=40 + i)) for i in range(10)]
    d = plan(xs, NOW, Policy(daily=7, weekly=0, monthly=0))
    assert sorted(d.keep) == [f"b{i:04d}" for i in range(7)]


def test_month_and_year_ends_and_dst() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 23:30 UTC on Dec 31 is already Jan 1 in Berlin: a different day, month and year
    a = item(0, datetime(2026, 12, 31, 23, 30, tzinfo=UTC))
    b = item(1, datetime(2026, 12, 31, 22, 30, tzinfo=UTC))
    now = datetime(2027, 1, 1, 12, tzinfo=UTC)
    d = plan([a, b], now, Policy(daily=0, weekly=0, monthly=2), "Europe/Berlin")
    assert sorted(d.keep) == ["b0000", "b0001"]  # January and December in Berlin
    d = plan([a, b], now, Policy(daily=0, weekly=0, monthly=2), "UTC")
    assert d.keep == ["b0000"] and d.delete == ["b0001"]  # both December in UTC
    # the night the clocks go back (2026-10-25 in Berlin) is one day of 25 hours
    night = [
        item(i, datetime(2026, 10, 25, 0, 30, tzinfo=berlin) + timedelta(hours=h))
        for i, h in enumerate((0, 1, 2, 3, 23))
    ]
    d = plan(
        night,
        datetime(2026, 10, 26, 12, tzinfo=UTC),
        Policy(daily=1, weekly=0, monthly=0),
        "Europe/Berlin",
    )
    assert d.keep == ["b0004"]  # 23:30 local is still the 25th


def test_kept_and_newest_verified_survive() -> None:
    xs = [
        item(i, NOW - timedelta(days=400 + i), keep=(i == 5), verified=(i in (3, 8)))
        for i in range(10)
    ]
    xs.append(item(99, NOW))
    d = plan(xs, NOW, Policy(daily=1, weekly=0, monthly=0))
    assert sorted(d.keep) == ["b0003", "b0005", "b0099"]
    assert d.reasons["b0005"] == ["kept"] and d.reasons["b0003"] == ["newest verified"]

"""pgferry/windows.py: blackout windows (pure, ``now`` passed in); config checks them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgferry.config import Blackout, Config, check_blackouts, load_config
from pgferry.errors import BadInput, ConfigError, Refused
from pgferry.policy import WriteRequest, decide
from pgferry.windows import active_window, describe, is_active, parse_weekly


def bo(**kw: object) -> Blackout:
    return Blackout.model_validate(kw)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


# 2026-11-20 is a Friday
@pytest.mark.parametrize(
    ("now", "active"),
    [
        (utc(2026, 11, 20, 15, 59), False),  # Fri just before
        (utc(2026, 11, 20, 16, 0), True),  # Fri start (inclusive)
        (utc(2026, 11, 21, 12, 0), True),  # Sat
        (utc(2026, 11, 22, 23, 59), True),  # Sun late: crosses the week's end
        (utc(2026, 11, 23, 0, 0), True),  # Mon midnight
        (utc(2026, 11, 23, 5, 59), True),
        (utc(2026, 11, 23, 6, 0), False),  # Mon end (exclusive)
        (utc(2026, 11, 25, 12, 0), False),  # Wed
    ],
)
def test_weekly_over_the_weekend(now: datetime, active: bool) -> None:
    assert is_active(bo(weekly="Fri 16:00 - Mon 06:00"), now) is active


@pytest.mark.parametrize(
    ("now", "active"),
    [
        (utc(2026, 11, 24, 21, 59), False),
        (utc(2026, 11, 24, 22, 0), True),  # Tue 22:00
        (utc(2026, 11, 24, 23, 30), True),  # crosses midnight
        (utc(2026, 11, 25, 1, 59), True),
        (utc(2026, 11, 25, 2, 0), False),
        (utc(2026, 11, 25, 23, 0), False),  # Wed night is not Tue night
    ],
)
def test_weekly_across_midnight(now: datetime, active: bool) -> None:
    assert is_active(bo(weekly="Tue 22:00 - Wed 02:00"), now) is active


def test_weekly_in_a_time_zone_follows_dst() -> None:
    b = bo(weekly="Fri 16:00 - Fri 18:00", timezone="Europe/Berlin")
    # summer: Berlin is UTC+2, so 16:00 local is 14:00 UTC
    assert is_active(b, utc(2026, 7, 3, 14, 0)) and not is_active(b, utc(2026, 7, 3, 16, 0))
    # winter: UTC+1
    assert is_active(b, utc(2026, 11, 20, 15, 0)) and not is_active(b, utc(2026, 11, 20, 14, 59))
    assert is_active(b, datetime(2026, 11, 20, 17, 30, tzinfo=ZoneInfo("Europe/Berlin")))


def test_dates_and_datetimes() -> None:
    b = bo(**{"from": "2026-12-24", "to": "2026-12-26"}, timezone="America/New_York")
    assert not is_active(b, utc(2026, 12, 24, 4, 59))  # 23:59 on the 23rd in NY
    assert is_active(b, utc(2026, 12, 24, 5, 0))
    assert is_active(b, utc(2026, 12, 27, 4, 59))  # 'to' covers its whole day
    assert not is_active(b, utc(2026, 12, 27, 5, 0))
    d = bo(**{"from": date(2026, 1, 1), "to": datetime(2026, 1, 2, 12, tzinfo=UTC)})
    assert is_active(d, utc(2026, 1, 2, 11, 59)) and not is_active(d, utc(2026, 1, 2, 12))
    t = bo(**{"from": "2026-03-01T10:00:00+01:00"})  # open-ended
    assert not is_active(t, utc(2026, 3, 1, 8, 59)) and is_active(t, utc(2030, 1, 1))
    # weekly bounded by from/to
    w = bo(weekly="Sat 00:00 - Mon 00:00", **{"from": "2026-12-01", "to": "2026-12-31"})
    assert is_active(w, utc(2026, 12, 5, 10)) and not is_active(w, utc(2026, 11, 28, 10))
    assert not is_active(w, utc(2026, 12, 7, 10))


def test_envs_and_first_match() -> None:
    a = bo(weekly="Mon 00:00 - Sun 23:59", envs=["prod"], reason="freeze")
    b = bo(**{"from": "2026-01-01"}, reason="all envs")
    now = utc(2026, 11, 25, 12)
    assert active_window([a, b], "prod", now) is a
    assert active_window([a, b], "dev", now) is b
    assert active_window([a], "dev", now) is None


@pytest.mark.parametrize(
    ("weekly", "msg"),
    [
        ("Friday 16:00 to Mon 06:00", "is not like"),
        ("Fru 16:00 - Mon 06:00", "is not a day"),
        ("Fri 25:00 - Mon 06:00", "is not a time"),
        ("Fri 16:00 - Fri 16:00", "empty"),
    ],
)
def test_bad_weekly(weekly: str, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        parse_weekly(weekly)


def check_blackout(
    cfg: Config, env: str, now: datetime, override: bool = False, reason: str | None = None
) -> Blackout | None:
    """The policy's first two rules, as an exception or the window overridden."""
    d = decide(
        cfg,
        WriteRequest("migrate up", env, False, override_blackout=override, reason=reason),
        now,
        ("input", "blackout"),
    )
    err = d.error()
    if err is not None:
        raise err
    return d.window


def test_check_blackout_policy() -> None:
    cfg = Config.model_validate(
        {
            "environments": {"dev": {}, "prod": {}},
            "blackout": [
                {"weekly": "Fri 16:00 - Mon 06:00", "envs": ["prod"], "reason": "weekend freeze"}
            ],
        }
    )
    fri = utc(2026, 11, 20, 17)
    with pytest.raises(
        Refused,
        match=r"blackout window \(weekly Fri 16:00 - Mon 06:00 \(UTC\): "
        r"weekend freeze\)",
    ) as e:
        check_blackout(cfg, "prod", fri)
    assert e.value.exit_code == 4
    with pytest.raises(BadInput, match="needs --reason"):
        check_blackout(cfg, "prod", fri, override=True, reason=" ")
    w = check_blackout(cfg, "prod", fri, override=True, reason="hotfix for outage")
    assert w is not None and describe(w).endswith("weekend freeze")
    assert check_blackout(cfg, "dev", fri) is None
    assert check_blackout(cfg, "prod", utc(2026, 11, 25)) is None


def test_check_config_names_entry_and_line() -> None:
    text = '[[blackout]]\nweekly = "Fri 16:00 - Mon 06:00"\n\n[[blackout]]\ntimezone = "Mars/X"\n'
    cfg = Config.model_validate(
        {
            "blackout": [
                {"weekly": "Fri 16:00 - Mon 06:00"},
                {"timezone": "Mars/X", "from": "2026-01-01"},
            ]
        }
    )
    cfg.text = text
    with pytest.raises(ConfigError, match=r":4: blackout #2: timezone 'Mars/X'"):
        check_blackouts(cfg)


_DAYN = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 6),
    st.integers(0, 1439),
    st.integers(1, 7 * 1440 - 1),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1)),
)
def test_weekly_matches_a_brute_force_walk(
    d: int, start_min: int, length: int, naive: datetime
) -> None:
    """Active iff walking back from ``now`` reaches the start before ``length`` minutes."""
    s = d * 1440 + start_min
    e = (s + length) % (7 * 1440)
    text = (
        f"{_DAYN[s // 1440]} {s % 1440 // 60:02d}:{s % 60:02d} - "
        f"{_DAYN[e // 1440]} {e % 1440 // 60:02d}:{e % 60:02d}"
    )
    now = naive.replace(second=0, microsecond=0, tzinfo=UTC)
    minute_of_week = now.weekday() * 1440 + now.hour * 60 + now.minute
    since_start = (minute_of_week - s) % (7 * 1440)
    assert is_active(bo(weekly=text), now) is (since_start < length)
    # one minute before the start is never inside
    before = now - timedelta(minutes=since_start + 1)
    assert not is_active(bo(weekly=text), before) or length == 7 * 1440 - 1


@pytest.mark.parametrize(
    ("entry", "msg"),
    [
        (
            'envs = ["dve"]\nweekly = "Fri 16:00 - Mon 06:00"',
            "blackout #1: envs names 'dve', which is not "
            "a configured environment (configured: dev, "
            "prod); fix the name, or the window would never apply",
        ),
        (
            'weekly = "Fru 16:00 - Mon 06:00"',
            "blackout #1: weekly 'Fru 16:00 - Mon 06:00': 'Fru' is not a day",
        ),
        (
            'from = 2026-12-24\ntimezone = "Europe/Nowhere"',
            "blackout #1: timezone 'Europe/Nowhere'",
        ),
        ("from = 2026-12-24\nto = 2026-12-20", "blackout #1: to (2026-12-20) is not after from"),
    ],
)
def test_windows_are_checked_when_the_config_loads(tmp_path: Path, entry: str, msg: str) -> None:
    p = tmp_path / "pgferry.toml"
    p.write_text("[environments.dev]\n\n[environments.prod]\n\n[[blackout]]\n" + entry + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.message.startswith(f"{p.resolve()}:5: {msg}")
    assert e.value.exit_code == 2

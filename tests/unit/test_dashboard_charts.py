"""The dashboard's SVG pictures as data: well-formed XML, every text escaped, thresholds and
limits drawn, no inline style (the pages' CSP forbids it), words where there is no data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from pgferry.health.rules.verdict import dur
from pgferry.server.dashboard import charts

NS = "{http://www.w3.org/2000/svg}"
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def _parse(svg: str) -> ET.Element:
    assert " style=" not in svg
    return ET.fromstring(svg)


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12),
            st.sampled_from(["dev", "prod"]),
            st.integers(0, 10**9),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_grouped_bars_are_well_formed_whatever_the_names(rows: list[tuple[str, str, int]]) -> None:
    bars = [charts.Bar(t, env, float(n), (("degraded below", 100.0),)) for t, env, n in rows]
    root = _parse(charts.grouped_bars(bars, label="rows <per> table"))
    assert root.get("aria-label") == "rows <per> table"
    assert len(root.findall(f"{NS}rect[@class]")) >= 1
    assert root.findall(f"{NS}line[@class='threshold']")


def test_a_hostile_table_name_stays_text() -> None:
    svg = charts.grouped_bars([charts.Bar('<script>alert("x")</script>', "dev", 5.0)], label="x")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    _parse(svg)


def test_timeline_keeps_the_window_and_colours_by_state() -> None:
    pts = [
        charts.Point(
            NOW - timedelta(days=d), 1.5 * d, f"run {d}", "failed" if d == 3 else "succeeded"
        )
        for d in (1, 3, 40)
    ]
    root = _parse(
        charts.timeline(
            pts, label="durations", since=NOW - timedelta(days=30), until=NOW, unit="seconds"
        )
    )
    circles = root.findall(f"{NS}circle")
    assert len(circles) == 2  # 40 days ago is outside the window
    assert {c.get("fill") for c in circles} == {
        charts.STATE_COLOURS["failed"],
        charts.STATE_COLOURS["succeeded"],
    }
    empty = charts.timeline([], label="d", since=NOW, until=NOW, unit="s", empty="no run finished")
    assert "no run finished" in empty and "<circle" not in empty


def test_limit_bars_mark_what_is_over_the_limit() -> None:
    root = _parse(
        charts.limit_bars(
            [
                charts.LimitBar("dev", 3600.0, 26 * 3600.0),
                charts.LimitBar(
                    "prod", 30 * 3600.0, 26 * 3600.0, extra=(("restore-tested", 50.0),)
                ),
                charts.LimitBar("qa", None, 26 * 3600.0, note="no complete backup"),
            ],
            label="ages",
        )
    )
    classes = [r.get("class") for r in root.findall(f"{NS}rect")]
    assert classes == ["bar within", "bar over"]
    assert len(root.findall(f"{NS}line[@class='limit']")) == 3
    assert "no complete backup" in ET.tostring(root, encoding="unicode")


def test_figures_read_as_people_read_them() -> None:
    assert [charts.nice_max(v) for v in (0, 0.3, 7, 12, 60_000)] == [
        1.0,
        0.5,
        10.0,
        20.0,
        100_000.0,
    ]
    assert [dur(s) for s in (45, 720, 5.5 * 3600, 3 * 86400)] == [
        "45 s",
        "12 min",
        "5.5 h",
        "3.0 d",
    ]

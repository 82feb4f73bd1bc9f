"""The dashboard's pictures, drawn on the server as SVG text: no chart library, no script.

Contract: each function takes plain data and returns one ``<svg>`` element as a string,
every text in it escaped; no I/O, no clock (pass ``now``), no style attribute (the pages'
Content-Security-Policy allows no inline style; colours are presentation attributes and
CSS classes). Each picture carries a ``<title>`` per mark (the browser's tooltip) and an
``aria-label`` saying what it shows; with nothing to draw it says so in words.

- :func:`grouped_bars`: a value per group and series side by side (rows per table, one
  bar per environment), with each bar's threshold marked across it;
- :func:`timeline`: points over a time window (run durations, rows per second);
- :func:`limit_bars`: horizontal bars against a limit line (backup ages vs ``max_age``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape

# durations read as the health report writes them (45 s, 12 min, 5.5 h, 3.0 d)
from pgferry.health.rules.verdict import dur

#: one colour per series, in order (readable on white, distinct for common colour blindness)
PALETTE = ("#2f6fb3", "#e08a1e", "#3a9e5c", "#8b5fbf", "#c2474f", "#6b7785")
STATE_COLOURS = {
    "succeeded": "#3a9e5c",
    "problem": "#e08a1e",
    "failed": "#c2474f",
    "cancelled": "#6b7785",
    "rejected": "#6b7785",
}


@dataclass(frozen=True)
class Bar:
    group: str
    series: str
    value: float | None  # None: not known (the table could not be counted), never drawn as 0
    #: thresholds drawn across this bar: (name, value)
    marks: tuple[tuple[str, float], ...] = ()
    #: optimal, healthy, degraded, critical or unknown (a CSS class; the colour says it too)
    status: str = ""


@dataclass(frozen=True)
class Point:
    at: datetime
    value: float
    label: str
    #: the series the point belongs to (its colour): a run's state
    kind: str = ""


@dataclass(frozen=True)
class LimitBar:
    label: str
    #: None: nothing to measure (no backup at all)
    value: float | None
    limit: float
    note: str = ""
    extra: tuple[tuple[str, float], ...] = field(default_factory=tuple)


#: characters XML 1.0 cannot hold, even escaped (a table may be named anything)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _e(text: object) -> str:
    return escape(_NOT_XML.sub("\ufffd", str(text)), quote=True)


def _num(v: float) -> str:
    """A figure as a person reads it: 1234567 -> 1.2M, 0.25 -> 0.25."""
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.1f}G"
    if a >= 1e6:
        return f"{v / 1e6:.1f}M"
    if a >= 1e4:
        return f"{v / 1e3:.0f}k"
    if a >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.2g}" if a < 1 else f"{v:.1f}"


def nice_max(v: float) -> float:
    """A round upper bound of an axis at or above ``v`` (1, 2, 5 times a power of ten)."""
    if v <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 5, 10):
        if v <= m * p:
            return float(m * p)
    return float(10 * p)


def _svg(width: int, height: int, label: str, body: list[str], css: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css}" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-label="{_e(label)}"><title>{_e(label)}</title>' + "".join(body) + "</svg>"
    )


def _empty(label: str, why: str, css: str) -> str:
    return _svg(480, 60, label, [f'<text x="10" y="35" class="empty">{_e(why)}</text>'], css)


def grouped_bars(
    bars: Sequence[Bar], *, label: str, empty: str = "nothing to show", height: int = 240
) -> str:
    """A bar per (group, series), groups along the x axis, series side by side."""
    if not bars:
        return _empty(label, empty, "bars")
    groups = list(dict.fromkeys(b.group for b in bars))
    series = list(dict.fromkeys(b.series for b in bars))
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(series)}
    top = nice_max(max([b.value or 0.0 for b in bars] + [v for b in bars for _, v in b.marks]))
    left, right, head, foot = 56, 12, 28, 46
    bw = 22
    gw = bw * len(series) + 18
    width = max(360, left + right + gw * len(groups))
    plot_h = height - head - foot

    def y(v: float) -> float:
        return head + plot_h - plot_h * (v / top)

    out: list[str] = []
    for i in range(5):  # the axis: five gridlines with their figures
        v = top * i / 4
        out.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(v):.1f}" '
            f'y2="{y(v):.1f}" stroke="#dde2e8"/>'
            f'<text class="tick" x="{left - 6}" y="{y(v) + 4:.1f}" '
            f'text-anchor="end">{_num(v)}</text>'
        )
    for gi, g in enumerate(groups):
        gx = left + gi * gw + 9
        for si, s in enumerate(series):
            b = next((b for b in bars if b.group == g and b.series == s), None)
            if b is None:
                continue
            x = gx + si * bw
            rows = "not counted" if b.value is None else f"{b.value:,.0f} rows"
            tip = f"{g} in {s}: {rows}" + "".join(f"; {n} {v:,.0f}" for n, v in b.marks)
            top_y = y(b.value or 0.0)
            out.append(
                f'<rect class="bar {_e(b.status)}" x="{x}" y="{top_y:.1f}" '
                f'width="{bw - 4}" height="{max(0.0, y(0) - top_y):.1f}" '
                f'fill="{colour[s]}"><title>{_e(tip)}</title></rect>'
            )
            for n, v in b.marks:
                out.append(
                    f'<line class="threshold" x1="{x - 2}" x2="{x + bw - 2}" '
                    f'y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#c2474f" '
                    f'stroke-width="2" stroke-dasharray="3 2">'
                    f"<title>{_e(f'{g} in {s}: {n} {v:,.0f}')}</title></line>"
                )
        out.append(
            f'<text class="group" x="{gx + bw * len(series) / 2:.1f}" '
            f'y="{height - foot + 16}" text-anchor="middle">{_e(g)}</text>'
        )
    lx = left
    for s in series:  # the legend: a swatch per series, and the threshold's dash
        out.append(
            f'<rect x="{lx}" y="8" width="10" height="10" fill="{colour[s]}"/>'
            f'<text class="legend" x="{lx + 14}" y="17">{_e(s)}</text>'
        )
        lx += 24 + 7 * len(s)
    out.append(
        f'<line x1="{lx}" x2="{lx + 16}" y1="13" y2="13" stroke="#c2474f" '
        f'stroke-width="2" stroke-dasharray="3 2"/>'
        f'<text class="legend" x="{lx + 20}" y="17">threshold</text>'
    )
    return _svg(width, height, label, out, "bars")


def timeline(
    points: Sequence[Point],
    *,
    label: str,
    since: datetime,
    until: datetime,
    unit: str,
    empty: str = "nothing in this window",
    width: int = 640,
    height: int = 220,
) -> str:
    """Points over ``since``..``until`` (x: time; y: the value, in ``unit``)."""
    shown = [p for p in points if since <= p.at <= until]
    if not shown:
        return _empty(label, empty, "timeline")
    top = nice_max(max(p.value for p in shown))
    left, right, head, foot = 56, 28, 24, 30
    span = max((until - since).total_seconds(), 1.0)
    plot_w, plot_h = width - left - right, height - head - foot

    def x(at: datetime) -> float:
        return left + plot_w * (at - since).total_seconds() / span

    def y(v: float) -> float:
        return head + plot_h - plot_h * (v / top)

    out: list[str] = []
    for i in range(5):
        v = top * i / 4
        out.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y(v):.1f}" '
            f'y2="{y(v):.1f}" stroke="#dde2e8"/><text class="tick" x="{left - 6}" '
            f'y="{y(v) + 4:.1f}" text-anchor="end">{_num(v)}</text>'
        )
    days = max(1, round(span / 86400))
    step = 7 if days > 14 else 1
    for d in range(0, days + 1, step):  # a tick per day (per week over a month)
        at = until - timedelta(days=d)
        out.append(
            f'<text class="tick" x="{x(at):.1f}" y="{height - 10}" '
            f'text-anchor="middle">{_e(at.strftime("%d %b"))}</text>'
        )
    out.append(f'<text class="unit" x="{left}" y="14">{_e(unit)}</text>')
    for p in sorted(shown, key=lambda p: p.at):
        out.append(
            f'<circle class="point {_e(p.kind)}" cx="{x(p.at):.1f}" cy="{y(p.value):.1f}"'
            f' r="4" fill="{STATE_COLOURS.get(p.kind, PALETTE[0])}">'
            f"<title>{_e(p.label)}</title></circle>"
        )
    return _svg(width, height, label, out, "timeline")


def limit_bars(
    items: Sequence[LimitBar],
    *,
    label: str,
    unit: str = "age",
    empty: str = "nothing to show",
    width: int = 640,
) -> str:
    """A horizontal bar per item against its limit (a line); past the limit: red."""
    if not items:
        return _empty(label, empty, "limits")
    top = (
        max(
            [i.limit for i in items]
            + [i.value or 0 for i in items]
            + [v for i in items for _, v in i.extra]
        )
        * 1.1
    )
    left, right, row = 120, 90, 30
    height = 24 + row * len(items)
    plot_w = width - left - right

    def x(v: float) -> float:
        return left + plot_w * (v / top)

    out: list[str] = []
    for n, i in enumerate(items):
        y0 = 16 + n * row
        out.append(
            f'<text class="label" x="{left - 8}" y="{y0 + 15}" text-anchor="end">'
            f"{_e(i.label)}</text>"
        )
        if i.value is None:
            out.append(
                f'<text class="none" x="{left + 4}" y="{y0 + 15}">{_e(i.note or "none")}</text>'
            )
        else:
            over = i.value > i.limit
            tip = f"{i.label}: {unit} {dur(i.value)}, limit {dur(i.limit)}" + (
                " (over the limit)" if over else ""
            )
            out.append(
                f'<rect class="bar {"over" if over else "within"}" x="{left}" '
                f'y="{y0 + 3}" width="{max(1.0, x(i.value) - left):.1f}" height="16" '
                f'fill="{"#c2474f" if over else "#3a9e5c"}"><title>{_e(tip)}</title>'
                f'</rect><text class="value" x="{x(i.value) + 6:.1f}" y="{y0 + 15}">'
                f"{_e(dur(i.value))}</text>"
            )
        for name, v in i.extra:
            out.append(
                f'<circle class="extra" cx="{x(v):.1f}" cy="{y0 + 11}" r="4" '
                f'fill="#2f6fb3"><title>{_e(f"{i.label}: {name} {dur(v)}")}'
                "</title></circle>"
            )
        out.append(
            f'<line class="limit" x1="{x(i.limit):.1f}" x2="{x(i.limit):.1f}" '
            f'y1="{y0}" y2="{y0 + row - 4}" stroke="#c2474f" stroke-width="2" '
            f'stroke-dasharray="4 2"><title>{_e(f"limit {dur(i.limit)}")}'
            "</title></line>"
        )
    return _svg(width, height, label, out, "limits")

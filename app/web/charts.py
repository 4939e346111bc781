"""Geometry for the SVG pictures the templates draw: bar charts, ratio gauges, a line chart.

Only numbers and the caller's labels go in; the templates render them, escaped, as <svg>.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

from app.services.overcommit import Ratio, ratio_text

# Bar chart: labels on the left, bars on a shared scale, values on the right.
BAR_WIDTH = 560
BAR_TRACK_X = 124
BAR_TRACK_WIDTH = 330
BAR_ROW = 26
BAR_HEIGHT = 15
BAR_TOP = 22
# Line chart: a y axis of ratios on the left, hours along the bottom.
LINE_WIDTH = 1100
LINE_HEIGHT = 200
LINE_LEFT = 48
LINE_RIGHT = 16
LINE_TOP = 14
LINE_BOTTOM = 26


@dataclass(frozen=True)
class Bar:
    """One bar: its label and value text, its kind (a CSS class) and where it sits."""

    label: str
    text: str
    kind: str
    y: float
    width: float


@dataclass(frozen=True)
class Mark:
    """A vertical line across the bars (capacity, policy) with an optional label."""

    label: str
    kind: str
    x: float
    anchor: str


@dataclass(frozen=True)
class BarChart:
    """Bars and marks on one scale, ready to draw."""

    bars: list[Bar]
    marks: list[Mark]
    height: int
    width: int = BAR_WIDTH
    track_x: int = BAR_TRACK_X
    track_width: int = BAR_TRACK_WIDTH
    bar_height: int = BAR_HEIGHT


def _scale(values: list[float]) -> float:
    """The scale's end: a little past the largest value, never zero."""
    return max([*values, 0.0]) * 1.08 or 1.0


def bar_x(value: float, scale: float) -> float:
    """A value's x on a bar chart's track."""
    return round(BAR_TRACK_X + BAR_TRACK_WIDTH * min(value, scale) / scale, 1)


def _anchor(x: float) -> str:
    """Where a mark's label hangs so it stays inside the picture."""
    if x > BAR_TRACK_X + BAR_TRACK_WIDTH - 50:
        return "end"
    return "middle" if x > BAR_TRACK_X + 50 else "start"


def bar_chart(
    rows: list[tuple[str, float | None, str, str]], marks: list[tuple[str, float | None, str]]
) -> BarChart:
    """Rows (label, value or None, value text, kind) and marks (label, value, kind) to draw."""
    values = [v for _, v, _, _ in rows if v is not None] + [v for _, v, _ in marks if v]
    scale = _scale(values)
    bars = [
        Bar(
            label,
            text,
            kind,
            BAR_TOP + i * BAR_ROW,
            round(bar_x(value or 0, scale) - BAR_TRACK_X, 1),
        )
        for i, (label, value, text, kind) in enumerate(rows)
    ]
    lines = [
        Mark(label, kind, bar_x(value, scale), _anchor(bar_x(value, scale)))
        for label, value, kind in marks
        if value
    ]
    return BarChart(bars, lines, BAR_TOP + len(rows) * BAR_ROW + 4)


@dataclass(frozen=True)
class Gauge:
    """A small ratio bar: how full (percent of the scale) and where the policy line is."""

    fill: float
    policy: float


def share(part: float | None, whole: float | None) -> float:
    """Part of a whole in percent, within 0-100; 0 when either is unknown."""
    if not part or not whole:
        return 0.0
    return round(min(100.0, 100 * part / whole), 1)


SHARE_BAR = (
    '<svg class="chart share-bar" viewBox="0 0 100 6" preserveAspectRatio="none" '
    'aria-hidden="true"><rect class="bar-track" x="0" y="0" width="100" height="6" rx="2"></rect>'
    '<rect class="bar bar-share" x="0" y="0" width="{pct}" height="6" rx="2"></rect></svg>'
    '<span class="share-pct muted small">{pct:.0f}%</span>'
)


def share_bar(part: float | None, whole: float | None) -> Markup:
    """A guest's share of the host as a thin bar with the percent next to it. Numbers only go
    in; a function rather than a template macro, as a host's overcommit page draws two for each
    of its guests (a third of the page's time for 500 guests as a macro)."""
    return Markup(SHARE_BAR.format(pct=share(part, whole)))


# A ratio as a small bar with its policy line, e.g. on a host card.
GAUGE = (
    '\n<div class="gauge" data-gauge="{label}">\n'
    '  <span class="gauge-label">{label}</span>\n'
    '  <svg class="chart gauge-bar" viewBox="0 0 100 8" preserveAspectRatio="none" role="img"\n'
    '       aria-label="{label} {ratio}, policy {policy}">\n'
    '    <rect class="bar-track" x="0" y="0" width="100" height="8" rx="2"></rect>\n'
    '    <rect class="bar bar-{state}" x="0" y="0" width="{fill}" height="8" rx="2"></rect>\n'
    '    <line class="gauge-policy" x1="{at}" x2="{at}" y1="0" y2="8"'
    ' vector-effect="non-scaling-stroke"></line>\n'
    "  </svg>\n"
    '  <span class="gauge-value state-{state}">{ratio}</span>\n'
    "</div>"
)


def gauge(ratio: float | None, policy: float) -> Gauge:
    """A ratio and its policy on a scale that shows both, with room past the policy."""
    scale = max(ratio or 0.0, policy) * 1.25 or 1.0
    return Gauge(round(100 * (ratio or 0.0) / scale, 1), round(100 * policy / scale, 1))


def ratio_gauge(label: str, ratio: Ratio) -> Markup:
    """The gauge of a ratio, drawn. A function rather than a template macro, as the overview
    draws two for each host (a fifth of its time with 50 hosts as a macro)."""
    drawn = gauge(ratio.ratio, ratio.policy)
    return Markup(
        GAUGE.format(
            label=escape(label),
            ratio=escape(ratio_text(ratio.ratio)),
            policy=escape(ratio_text(ratio.policy)),
            state=escape(ratio.state),
            fill=drawn.fill,
            at=drawn.policy,
        )
    )


@dataclass(frozen=True)
class Series:
    """One line of the line chart: its kind and its unbroken runs of points."""

    label: str
    kind: str
    runs: list[str]
    last: tuple[float, float] | None


@dataclass(frozen=True)
class Tick:
    """An axis label and its position."""

    label: str
    at: float


@dataclass(frozen=True)
class LineChart:
    """Ratios over time, with the policy lines, ready to draw."""

    series: list[Series]
    policies: list[Tick]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    width: int = LINE_WIDTH
    height: int = LINE_HEIGHT
    left: int = LINE_LEFT
    right: int = LINE_WIDTH - LINE_RIGHT
    top: int = LINE_TOP
    bottom: int = LINE_HEIGHT - LINE_BOTTOM


def _ceiling(value: float) -> tuple[float, float]:
    """A round top for the y axis and the step between its ticks."""
    step = 0.25 if value <= 1 else 0.5 if value <= 3 else math.ceil(value / 6)
    return max(step, math.ceil(value / step) * step), step


def _runs(points: list[tuple[float, float] | None]) -> list[str]:
    """SVG polyline point lists, broken where a point is missing."""
    runs: list[list[str]] = [[]]
    for point in points:
        if point is None:
            runs.append([])
        else:
            runs[-1].append(f"{point[0]:.1f},{point[1]:.1f}")
    return [" ".join(run) for run in runs if run]


# A line chart's series: its label, its kind (a CSS class) and its value of a sample (None:
# no point there).
SeriesOf = tuple[str, str, Callable[[Any], float | None]]
RATIOS: list[SeriesOf] = [
    ("CPU", "cpu", lambda s: s.cpu_ratio), ("memory", "memory", lambda s: s.memory_ratio),
]  # fmt: skip


def _x_ticks(hours: int, x: Callable[[datetime], float], now: datetime) -> list[Tick]:
    """Four or so labels along the time axis: hours back, or days back past two days."""
    every = max(1, hours // 4)
    return [
        Tick(
            "now" if h == 0 else f"-{h // 24} d" if hours > 48 else f"-{h} h",
            x(now - timedelta(hours=h)),
        )
        for h in range(hours, -1, -every)
    ]


def line_chart(
    samples: list,
    *,
    now: datetime,
    hours: int,
    policies: tuple[float, ...] = (),
    series: list[SeriesOf] = RATIOS,
    percent: bool = False,
    gap: timedelta | None = None,
) -> LineChart:
    """The series of the samples (each with an `at`, oldest first) over the last hours: running
    ratios (on a scale past the largest value and the policies, drawn too), or percentages
    (0-100 %); each line broken where two samples are further apart than gap (nothing was read
    in between: the guest was off, the host or virtdeck down)."""
    start = now - timedelta(hours=hours)
    span = (now - start).total_seconds()
    values = [v for s in samples for _, _, of in series if (v := of(s)) is not None]
    top, step = (100.0, 25.0) if percent else _ceiling(max([*values, *policies]) * 1.1)
    plot_w = LINE_WIDTH - LINE_LEFT - LINE_RIGHT
    plot_h = LINE_HEIGHT - LINE_TOP - LINE_BOTTOM

    def x(at: datetime) -> float:
        return round(LINE_LEFT + plot_w * max(0.0, (at - start).total_seconds()) / span, 1)

    def y(value: float) -> float:
        return round(LINE_TOP + plot_h * (1 - min(value, top) / top), 1)

    apart = {i for i in range(1, len(samples)) if gap and samples[i].at - samples[i - 1].at > gap}

    def line(label: str, kind: str, of: Callable[[Any], float | None]) -> Series:
        points: list[tuple[float, float] | None] = []
        for i, s in enumerate(samples):
            if i in apart:
                points.append(None)
            points.append((x(s.at), y(v)) if (v := of(s)) is not None else None)
        present = [p for p in points if p is not None]
        return Series(label, kind, _runs(points), present[-1] if present else None)

    count = round(top / step)
    unit = " %" if percent else ":1"
    return LineChart(
        series=[line(*each) for each in series],
        policies=[Tick(kind, y(p)) for (_, kind, _), p in zip(series, policies, strict=False)],
        y_ticks=[Tick(f"{i * step:g}{unit}", y(i * step)) for i in range(count + 1)],
        x_ticks=_x_ticks(hours, x, now),
    )


SPARK_WIDTH, SPARK_HEIGHT = 60, 16


def sparkline(
    points: list[tuple[datetime, float]], *, now: datetime, span: timedelta, gap: timedelta
) -> Markup:
    """A percentage's last span as a small line, broken where two points are further apart
    than gap (nothing for fewer than two points); hidden from screen readers, as the value
    beside it says what matters."""
    if len(points) < 2:
        return Markup("")
    start = now - span

    def xy(at: datetime, value: float) -> tuple[float, float]:
        x = SPARK_WIDTH * max(0.0, (at - start).total_seconds()) / span.total_seconds()
        return x, 1 + (SPARK_HEIGHT - 2) * (1 - min(max(value, 0.0), 100.0) / 100)

    broken: list[tuple[float, float] | None] = []
    for i, (at, value) in enumerate(points):
        if i and at - points[i - 1][0] > gap:
            broken.append(None)
        broken.append(xy(at, value))
    lines = "".join(f'<polyline points="{escape(run)}"></polyline>' for run in _runs(broken))
    return Markup(
        f'<svg class="spark" viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" width="{SPARK_WIDTH}" '
        f'height="{SPARK_HEIGHT}" aria-hidden="true" focusable="false">{lines}</svg>'
    )

"""Chart geometry, on the chart functions themselves: bars and marks share one scale inside the
track, gauges keep the policy line in view, the line chart puts time and ratios on its axes and
breaks where samples are missing."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from app.web.charts import (
    BAR_ROW,
    BAR_TOP,
    BAR_TRACK_WIDTH,
    BAR_TRACK_X,
    LINE_BOTTOM,
    LINE_HEIGHT,
    LINE_LEFT,
    LINE_RIGHT,
    LINE_TOP,
    LINE_WIDTH,
    Gauge,
    bar_chart,
    gauge,
    line_chart,
    share,
)

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_bars_and_marks_share_one_scale_that_ends_inside_the_track() -> None:
    chart = bar_chart(
        [
            ("running", 4, "4", "alloc-ok"),
            ("defined", 8, "8", "defined"),
            ("rss", None, "?", "rss"),
        ],
        [("8 CPUs", 8, "capacity"), ("policy 4.00:1", 32, "policy"), ("none", None, "other")],
    )

    width = {bar.kind: bar.width for bar in chart.bars}
    capacity, policy = chart.marks
    assert [bar.y for bar in chart.bars] == [BAR_TOP + i * BAR_ROW for i in range(3)]
    assert width["defined"] == pytest.approx(2 * width["alloc-ok"], abs=0.1)
    assert width["rss"] == 0  # unknown: no bar
    assert capacity.x - BAR_TRACK_X == pytest.approx(width["defined"], abs=0.1)
    assert policy.x - BAR_TRACK_X == pytest.approx(4 * width["defined"], abs=0.5)
    # The largest value (the policy) sits near the end of the track, never past it.
    assert 0.9 * BAR_TRACK_WIDTH < policy.x - BAR_TRACK_X < BAR_TRACK_WIDTH
    assert (capacity.anchor, policy.anchor) == ("middle", "end")  # labels stay in the picture
    assert chart.height > BAR_TOP + 3 * BAR_ROW - 1


def test_an_empty_bar_chart_draws_nothing_and_divides_by_nothing() -> None:
    chart = bar_chart([("idle", 0, "0", "alloc-ok")], [("capacity", 0, "capacity")])

    assert [bar.width for bar in chart.bars] == [0]
    assert chart.marks == []


def test_a_gauge_leaves_room_past_the_policy_and_keeps_a_ratio_over_it_inside() -> None:
    assert gauge(0.5, 4.0) == Gauge(fill=10.0, policy=80.0)  # a scale to 5:1
    assert gauge(10.0, 4.0) == Gauge(fill=80.0, policy=32.0)
    assert gauge(None, 1.5).fill == 0


def test_a_share_is_a_percent_within_0_and_100() -> None:
    assert (share(1, 4), share(5, 4), share(None, 4), share(1, None)) == (25.0, 100.0, 0.0, 0.0)


def sample(hours_ago: float, cpu: float | None, memory: float | None) -> SimpleNamespace:
    """An overcommit sample as the line chart reads it."""
    return SimpleNamespace(at=NOW - timedelta(hours=hours_ago), cpu_ratio=cpu, memory_ratio=memory)


def test_the_line_chart_puts_hours_along_the_bottom_and_breaks_where_a_ratio_is_unknown() -> None:
    samples = [sample(24, 1.0, 0.5), sample(12, 1.0, 0.5), sample(6, None, 0.5), sample(0, 1, 0.5)]

    chart = line_chart(samples, now=NOW, hours=24, policies=(4.0, 1.5))

    cpu, memory = chart.series
    plot_width = LINE_WIDTH - LINE_LEFT - LINE_RIGHT
    xs = [float(point.split(",")[0]) for point in cpu.runs[0].split()]
    assert xs == pytest.approx([LINE_LEFT, LINE_LEFT + plot_width / 2], abs=0.1)
    assert len(cpu.runs) == 2 and len(memory.runs) == 1
    # Both end now, at the right edge, with a dot.
    assert cpu.last[0] == memory.last[0] == pytest.approx(LINE_WIDTH - LINE_RIGHT, abs=0.1)
    assert [t.label for t in chart.x_ticks] == ["-24 h", "-18 h", "-12 h", "-6 h", "now"]
    assert chart.x_ticks[0].at == LINE_LEFT


def test_the_line_chart_scales_its_ratios_from_the_bottom_to_a_round_top() -> None:
    chart = line_chart([sample(1, 1.0, 0.5)], now=NOW, hours=24, policies=(4.0, 1.5))

    bottom, top = chart.y_ticks[0], chart.y_ticks[-1]
    assert (bottom.label, bottom.at) == ("0:1", LINE_HEIGHT - LINE_BOTTOM)
    assert top.at == LINE_TOP and float(top.label.removesuffix(":1")) >= 4.0
    cpu_policy, memory_policy = chart.policies
    assert LINE_TOP <= cpu_policy.at < memory_policy.at < LINE_HEIGHT - LINE_BOTTOM


def test_the_line_chart_breaks_where_samples_are_further_apart_than_the_gap() -> None:
    # A reading a minute for three minutes, none for 20 minutes, then two more.
    samples = [sample(m / 60, 1.0, 0.5) for m in (30, 29, 28, 8, 7)]

    broken = line_chart(samples, now=NOW, hours=1, gap=timedelta(minutes=2.5))
    joined = line_chart(samples, now=NOW, hours=1)

    assert [len(run.split()) for run in broken.series[0].runs] == [3, 2]
    assert [len(run.split()) for run in joined.series[0].runs] == [5]
    assert broken.series[0].last == joined.series[0].last

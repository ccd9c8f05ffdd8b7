"""A pipeline's score charts, laid out on the server: each score's distribution (bars: bins of a
numeric score, a boolean's true/false, a category's counts) and its mean over time (a line over
the runs page's time range), and beside them the runs' mean duration and LLM cost per run (kinds
``duration`` and ``cost``: a mean over time alone). Numbers and strings only; ``runs.html``
draws the SVG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, tzinfo

from pipelens_server._pages._chart import SCORE_CHART, Tick, format_usd, span_label
from pipelens_server._read._scores import ScoreSummary

# Each small chart's viewBox and margins.
LEFT, TOP = SCORE_CHART.left, SCORE_CHART.top
#: The kinds that are figures of the runs themselves, not scores given to them.
_OF_RUNS = ("duration", "cost")


@dataclass(frozen=True, slots=True)
class BarBox:
    """One bar of a distribution, with its label and count (its ``<title>``)."""

    x: float
    y: float
    width: float
    height: float
    label: str
    count: int


@dataclass(frozen=True, slots=True)
class ScoreChart:
    """What the template draws for one score: the distribution and the mean over time."""

    name: str
    kind: str
    count: int
    mean: str
    bars: list[BarBox]
    line: str
    points: list[tuple[float, float, str]]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    bucket: str
    #: What the charts show, in words (their ``<desc>``).
    description: str


def _mean_text(summary: ScoreSummary) -> str:
    if summary.mean is None:
        return ""
    if summary.kind == "boolean":
        return f"{summary.mean:.0%} true"
    if summary.kind == "duration":
        return f"mean {summary.mean:,.1f} ms"
    if summary.kind == "cost":
        return f"mean {format_usd(summary.mean)}"
    return f"mean {summary.mean:.3g}"


def layout(summary: ScoreSummary, since_ns: int, until_ns: int, zone: tzinfo) -> ScoreChart:
    """The charts of one score over [``since_ns``, ``until_ns``)."""
    plot_w, plot_h = SCORE_CHART.plot_width, SCORE_CHART.plot_height
    most = max((bar.count for bar in summary.bars), default=0) or 1
    slot = plot_w / max(len(summary.bars), 1)
    bars = [
        BarBox(
            x=round(LEFT + i * slot + slot * 0.1, 1),
            y=round(TOP + plot_h - bar.count / most * plot_h, 1),
            width=round(slot * 0.8, 1),
            height=round(bar.count / most * plot_h, 1),
            label=bar.label,
            count=bar.count,
        )
        for i, bar in enumerate(summary.bars)
    ]
    # The mean's axis: 0 to 1 for a boolean (the share of true), from 0 for a duration or a
    # cost, else the means' own range.
    values = [p.mean for p in summary.means]
    of_runs = summary.kind in _OF_RUNS
    if summary.kind == "boolean":
        lo, hi = 0.0, 1.0
    elif of_runs:
        lo, hi = 0.0, max(values, default=1.0)
    else:
        lo, hi = min(values, default=0.0), max(values, default=1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    span = max(until_ns - since_ns, 1)

    def x(ns: float) -> float:
        return round(LEFT + (ns - since_ns) / span * plot_w, 1)

    height = hi - lo  # 0 or inf at float8's limits, where the padding above is lost in rounding

    def y(value: float) -> float:
        share = (value - lo) / height if 0 < height < math.inf else 0.5
        return round(TOP + plot_h - share * plot_h, 1)

    half = summary.bucket_ns / 2
    unit = "run(s)" if of_runs else "score(s)"
    points = [
        (x(p.start_ns + half), y(p.mean), f"{p.mean:.3g} over {p.count} {unit}")
        for p in summary.means
    ]
    # Hours over a day's range (the preset's bounds are a little over 24 h apart), else dates.
    time_format = "%H:%M" if span < 2 * 86_400 * 10**9 else "%m-%d"
    x_ticks = [
        Tick(
            at=x(since_ns + span * f),
            label=f"{datetime.fromtimestamp((since_ns + span * f) / 1e9, zone):{time_format}}",
        )
        for f in (0, 0.5, 1)
    ]
    y_ticks = [Tick(at=y(v), label=f"{v:.3g}") for v in (lo, hi)] if points else []
    what = ", ".join(f"{bar.label}: {bar.count}" for bar in summary.bars) or "mean over time"
    return ScoreChart(
        name=summary.name,
        kind=summary.kind,
        count=summary.count,
        mean=_mean_text(summary),
        bars=bars,
        line=" ".join(f"{px},{py}" for px, py, _ in points),
        points=points,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        bucket=span_label(summary.bucket_ns),
        description=f"{summary.count} {summary.kind} scores {summary.name}; {what}",
    )

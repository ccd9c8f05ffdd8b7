"""The step stats page's chart of durations over time, laid out on the server.

Only numbers and strings here (the template draws the SVG), so the layout is tested without a
browser. Every point of the range is drawn; a downsampled series (see
``_read._stats.duration_series``) is drawn as a band from each bucket's min to its max with a
line through the means.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo

from pipelens_server._pages._chart import TIME_CHART, Tick, format_ms, span_label, time_label
from pipelens_server._pages._templating import format_time
from pipelens_server._read._stats import Series

_X_TICKS = 5


@dataclass(frozen=True, slots=True)
class Dot:
    """One finished step."""

    x: float
    y: float
    status: str
    title: str


@dataclass(frozen=True, slots=True)
class DurationChart:
    """What the template needs: dots, or a band (polygon points) and a mean line (polyline)."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    dots: list[Dot]
    band: str
    mean: str
    failed_x: list[float]
    #: How wide a time bucket is (``12 s``), empty when every point is drawn.
    bucket: str
    x_ticks: list[Tick]
    y_ticks: list[Tick]


def layout(series: Series, zone: tzinfo) -> DurationChart | None:
    """The chart of ``series``; ``None`` when it has no point."""
    if not series.points and not series.buckets:
        return None
    if series.downsampled:
        lo = series.buckets[0].start_ns
        hi = series.buckets[-1].start_ns + (series.bucket_ns or 0)
        top_ns = max(b.max_ns for b in series.buckets)
    else:
        lo, hi = series.points[0].start_ns, series.points[-1].start_ns
        top_ns = max(p.duration_ns for p in series.points)
    span = max(hi - lo, 1)
    top_ns = max(top_ns, 1)
    frame = TIME_CHART
    plot_w, plot_h = frame.plot_width, frame.plot_height

    def x(ns: float) -> float:
        # A single point (or all at one instant) sits in the middle.
        return round(frame.left + (plot_w / 2 if hi == lo else (ns - lo) / span * plot_w), 1)

    def y(duration_ns: float) -> float:
        return round(frame.top + plot_h - duration_ns / top_ns * plot_h, 1)

    dots = [
        Dot(
            x=x(p.start_ns),
            y=y(p.duration_ns),
            status=p.status,
            title=f"{p.run_id} · {format_ms(p.duration_ns)} · {format_time(p.start_ns, zone)}",
        )
        for p in series.points
    ]
    half = (series.bucket_ns or 0) / 2
    centres = [(x(b.start_ns + half), b) for b in series.buckets]
    band = " ".join(
        [f"{cx},{y(b.max_ns)}" for cx, b in centres]
        + [f"{cx},{y(b.min_ns)}" for cx, b in reversed(centres)]
    )
    mean = " ".join(f"{cx},{y(b.avg_ns)}" for cx, b in centres)
    if hi == lo:
        x_ticks = [Tick(at=x(lo), label=time_label(lo, 1, zone))]
    else:
        steps = _X_TICKS - 1
        x_ticks = [
            Tick(at=x(lo + span * i / steps), label=time_label(lo + span * i // steps, span, zone))
            for i in range(_X_TICKS)
        ]
    y_ticks = [Tick(at=y(top_ns * f), label=format_ms(top_ns * f)) for f in (0, 0.5, 1)]
    return DurationChart(
        width=frame.width,
        height=frame.height,
        left=frame.left,
        right=frame.right,
        top=frame.top,
        bottom=frame.bottom,
        dots=dots,
        band=band,
        mean=mean,
        failed_x=[cx for cx, b in centres if b.failed],
        bucket=span_label(series.bucket_ns) if series.bucket_ns else "",
        x_ticks=x_ticks,
        y_ticks=y_ticks,
    )

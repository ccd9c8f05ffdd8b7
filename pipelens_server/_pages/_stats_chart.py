"""The step stats page's chart of durations over time, laid out on the server.

Only numbers and strings here (the template draws the SVG), so the layout is tested without a
browser. Every point of the range is drawn; a downsampled series (see
``_read._stats.duration_series``) is drawn as a band from each bucket's min to its max with a
line through the means.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

from pipelens_server._pages._templating import format_ms, format_time
from pipelens_server._read._stats import Series

#: The SVG's coordinate system (its viewBox); it is scaled to the page's width.
WIDTH = 1000
HEIGHT = 240
#: Room for the duration labels on the left and the time labels below.
LEFT = 76
RIGHT = 12
TOP = 10
BOTTOM = 26
_X_TICKS = 5


@dataclass(frozen=True, slots=True)
class Dot:
    """One finished step."""

    x: float
    y: float
    status: str
    title: str


@dataclass(frozen=True, slots=True)
class Tick:
    """An axis label at ``at`` (x for the time axis, y for the duration axis)."""

    at: float
    label: str


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


def time_label(ns: int, span_ns: int, zone: tzinfo) -> str:
    """A time on an axis spanning ``span_ns``: ``14:05:09`` within a day, else ``11-28 14:05``."""
    moment = datetime.fromtimestamp(ns / 1e9, zone)
    if span_ns < 86_400 * 10**9:
        return f"{moment:%H:%M:%S}"
    return f"{moment:%m-%d %H:%M}"


def span_label(ns: int) -> str:
    """A time bucket's width for people: ``850 ms``, ``12 s``, ``4.5 min``, ``2.1 h``."""
    seconds = ns / 1e9
    if seconds < 1:
        return f"{ns / 1e6:.3g} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.2g} min"
    return f"{seconds / 3600:.3g} h"


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
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM

    def x(ns: float) -> float:
        # A single point (or all at one instant) sits in the middle.
        return round(LEFT + (plot_w / 2 if hi == lo else (ns - lo) / span * plot_w), 1)

    def y(duration_ns: float) -> float:
        return round(TOP + plot_h - duration_ns / top_ns * plot_h, 1)

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
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=RIGHT,
        top=TOP,
        bottom=BOTTOM,
        dots=dots,
        band=band,
        mean=mean,
        failed_x=[cx for cx, b in centres if b.failed],
        bucket=span_label(series.bucket_ns) if series.bucket_ns else "",
        x_ticks=x_ticks,
        y_ticks=y_ticks,
    )

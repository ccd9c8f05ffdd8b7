"""The dashboard charts' one visual language, which every chart layout uses: the frames (viewBox
and the room for axis labels), axis ticks, stacked bars (a status class or a series colour per
part: the theme's CSS gives ``ok``, ``failed`` … their colours, light or dark), and the number
and time formats of labels and hover titles.

Only numbers and strings here; the templates draw the SVG.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo

SECOND = 1_000_000_000
MINUTE = 60 * SECOND
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Frame:
    """A chart's viewBox and the margins around its plot (room for the axis labels)."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> int:
        return self.height - self.top - self.bottom

    @property
    def base(self) -> int:
        """The plot's bottom edge: where bars stand and the time axis runs."""
        return self.top + self.plot_height


#: The wide charts over time (durations over time, the runs timeline): time labels below,
#: durations on the left.
TIME_CHART = Frame(width=1000, height=240, left=76, right=12, top=10, bottom=26)
TIMELINE = Frame(width=1000, height=200, left=76, right=12, top=10, bottom=26)
HISTOGRAM = Frame(width=420, height=200, left=56, right=8, top=10, bottom=26)
#: A sparkline: bars and marks only, drawn at this size (CSS px).
SPARKLINE = Frame(width=144, height=28, left=0, right=0, top=0, bottom=0)
#: A score's small charts.
SCORE_CHART = Frame(width=320, height=120, left=40, right=6, top=8, bottom=22)
#: The LLM usage chart: x in % of the page's width, y in px.
USAGE_CHART = Frame(width=100, height=220, left=0, right=0, top=18, bottom=24)
#: Series colours (the last one for the rest), readable on light and dark backgrounds.
PALETTE = ["#2f81f7", "#d4761a", "#2da44e", "#a371f7", "#cf4a8c", "#1b9aaa", "#b08800", "#8c959f"]


@dataclass(frozen=True, slots=True)
class Tick:
    """An axis label at ``at`` (x for a time axis, y for a value axis)."""

    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Bar:
    """A rectangle (viewBox units) with its hover text: of a status class (``kind``, coloured
    by the theme) or of a series colour (``colour``)."""

    x: float
    y: float
    width: float
    height: float
    kind: str
    title: str
    colour: str = ""


def stack(
    x: float, width: float, base: float, parts: Iterable[tuple[float, str, str, str]]
) -> list[Bar]:
    """Bars stacked upwards from ``base`` in the order given, each part (height, kind, colour,
    title); a part of no height draws nothing."""
    bars = []
    y = base
    for height, kind, colour, title in parts:
        if not height:
            continue
        y -= height
        bars.append(Bar(x, round(y, 2), width, round(height, 2), kind, title, colour))
    return bars


def status_stack(
    x: float, width: float, base: float, scale: float, count: int, failed: int, title: str
) -> list[Bar]:
    """One bar of ``count`` things at ``scale`` (viewBox units each), the ``failed`` of them
    stacked in red on top of the others."""
    parts = [((count - failed) * scale, "ok", "", title), (failed * scale, "failed", "", title)]
    return stack(x, width, base, parts)


def format_ms(ns: float | None) -> str:
    """A duration in milliseconds (the UI's unit): ``1,234.5 ms``."""
    if ns is None:
        return "—"
    ms = ns / 1e6
    # Below a millisecond, three significant digits: 0.0042 ms, not 0.000 ms.
    return f"{ms:,.1f} ms" if ms >= 1 or ms == 0 else f"{ms:.3g} ms"


def format_usd(value: float | None) -> str:
    """``$1,234.56`` from a dollar up, two significant digits below (``$0.013``, ``$0.00004``);
    ``unknown`` for ``None``."""
    if value is None:
        return "unknown"
    if value == 0 or value >= 1:
        return f"${value:,.2f}"
    return f"${value:.{max(2, 1 - math.floor(math.log10(value)))}f}"


def format_count(value: float) -> str:
    """``1.2M``, ``35k``, ``950``: token counts for an axis."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def time_label(ns: int, span_ns: int, zone: tzinfo, *, step_ns: int = 0) -> str:
    """A time on an axis spanning ``span_ns``: ``14:05:09`` within a day, else ``11-28 14:05``;
    when the labelled marks are ``step_ns`` apart (bars of that width), ``2026-11-28`` for whole
    days and ``14:05`` for whole minutes within a day."""
    moment = datetime.fromtimestamp(ns / 1e9, zone)
    if step_ns >= DAY_S * SECOND and not step_ns % (DAY_S * SECOND):
        return f"{moment:%Y-%m-%d}"
    if span_ns < DAY_S * SECOND:
        whole_minutes = step_ns >= MINUTE and not step_ns % MINUTE
        return f"{moment:%H:%M}" if whole_minutes else f"{moment:%H:%M:%S}"
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

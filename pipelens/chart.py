"""The seed's ``pipelens.chart`` module, drawn locally: nothing is sent, nothing fetched.

``from pipelens.chart import TimeSpan, generate_gantt_chart_google`` works as it did in the
seed, with the seed's models and signatures. The seed sent the spans to quickchart.io or had the
page load Google Charts from its CDN; here every chart is drawn by our own charts
(:mod:`pipelens._core.charts`), so it works offline and the data stays on the machine. What each
function returns instead is said in its docstring.

Times are epoch milliseconds, as in the seed (``TimeSpan.startTs``/``endTs``); a span with no
``endTs`` (or ``0``) is still running and is drawn up to the latest end of all the spans.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any
from urllib.parse import quote

from pipelens._core import charts
from pipelens._core.step_like import StepLike
from pipelens._core.views import _Meta

__all__ = [
    "GanttChartArgs",
    "GraphItem",
    "TimeSpan",
    "generate_execution_graph_quickchart",
    "generate_gantt_chart_google",
    "generate_gantt_chart_quickchart",
]

_NS_PER_MS = 1_000_000
_PX_PER_SPAN = 25  # the seed's least height (and width) per span
_LEAST_WIDTH = 300  # the narrowest chart we draw


class GanttChartArgs(_Meta, kw_only=True):
    """Options of the Gantt charts: the axis ``unit`` (``"ms"``; ``"us"``, and any other is read
    as seconds, as the seed did) and the chart's least size in pixels."""

    unit: str = "ms"
    min_height: int = 300
    min_width: int = 500


class TimeSpan(_Meta, kw_only=True):
    """One bar of a Gantt chart: epoch milliseconds, ``endTs`` ``None`` (or ``0``) while running."""

    key: str
    startTs: int  # noqa: N815 - the seed's field names
    endTs: int | None = None  # noqa: N815


class GraphItem(_Meta, kw_only=True):
    """One Graphviz DOT statement (``"A -> B"``) of an execution graph, with an optional label."""

    descriptor: str
    label: str | None = None


def _chart(
    time_spans: list[TimeSpan], args: GanttChartArgs | None
) -> tuple[StepLike, int, dict[str, Any]]:
    """The chart root of the spans, the seed's height, and our chart options from ``args``."""
    args = GanttChartArgs() if args is None else args
    root, latest = charts.spans_root(
        (s.key, s.startTs * _NS_PER_MS, s.endTs * _NS_PER_MS if s.endTs else None)
        for s in time_spans
    )
    options = {
        "now_ns": latest,  # where running spans end: the seed drew them to the latest end
        "unit": args.unit if args.unit in ("us", "ms") else "s",
        "width": max(args.min_width, len(time_spans) * _PX_PER_SPAN, _LEAST_WIDTH),
    }
    return root, max(args.min_height, len(time_spans) * _PX_PER_SPAN), options


def generate_execution_graph_quickchart(graph_items: list[GraphItem]) -> str:
    """The execution graph of ``graph_items`` as a URL, as in the seed.

    Differs from the seed: a ``data:text/vnd.graphviz`` URL holding the DOT text (the same
    ``digraph G {...}`` the seed built, labels escaped), not a quickchart.io URL that rendered
    it; render it with Graphviz (``dot -Tsvg``) or any DOT viewer.
    """
    dot = charts.digraph_dot((item.descriptor, item.label) for item in graph_items)
    return f"data:text/vnd.graphviz;charset=utf-8,{quote(dot)}"


async def generate_gantt_chart_quickchart(
    time_spans: list[TimeSpan], args: GanttChartArgs | None = None
) -> BytesIO:
    """A Gantt chart of ``time_spans`` in a buffer, as in the seed.

    Differs from the seed: the buffer holds our SVG (UTF-8), not a PNG from quickchart.io; save
    it as ``.svg``. Its width and height are at least ``args.min_width``/``min_height``; it never
    fails for want of a network.
    """
    root, height, options = _chart(time_spans, args)
    return BytesIO(charts.gantt_svg(root, min_height=height, **options).encode())


def generate_gantt_chart_google(
    time_spans: list[TimeSpan], args: GanttChartArgs | None = None
) -> str:
    """An HTML page with a Gantt chart of ``time_spans``, as in the seed.

    Differs from the seed: our self-contained page (the chart as inline SVG and a table of the
    spans, no script) instead of one that loads Google Charts; the chart sits in a box of the
    seed's height (``args.min_height``, or 25 px a span when more).
    """
    root, height, options = _chart(time_spans, args)
    return charts.gantt_html(root, title="Gantt chart", height=height, **options)

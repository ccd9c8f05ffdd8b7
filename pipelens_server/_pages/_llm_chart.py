"""The LLM usage page's figures: totals by model and by pipeline, and a stacked bar chart of
tokens or cost per time bucket, one colour per model (or per pipeline), laid out for a
server-drawn SVG.

Costs are priced from the tokens (``UsageRow.priced``): a model without a price adds nothing to
a cost and is listed as unknown instead, and calls without usage add no tokens and are counted
apart, so "0" or "$0.00" never hides what is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, tzinfo

import msgspec

from pipelens_server._read._llm import SECOND, UsageRow

#: Series colours (the last one for the rest), readable on light and dark backgrounds.
PALETTE = ["#2f81f7", "#d4761a", "#2da44e", "#a371f7", "#cf4a8c", "#1b9aaa", "#b08800", "#8c959f"]
CHART_HEIGHT = 220
PLOT_TOP = 18
PLOT_BOTTOM = 196

Metric = str  # "tokens" or "cost"
NO_PIPELINE = "(no pipeline)"


class Totals(msgspec.Struct, kw_only=True):
    """Calls, tokens and the known part of the cost of a set of usage rows; tokens and cost are
    ``None`` (unknown) until a row reports them."""

    calls: int = 0
    calls_without_usage: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    #: Models whose price is unknown: the cost above leaves their tokens out.
    unpriced: list[str] = []

    @property
    def tokens(self) -> int | None:
        """Input plus output tokens (cached are part of input, reasoning of output)."""
        if self.input_tokens is None:
            return None
        return self.input_tokens + (self.output_tokens or 0)

    def add(self, row: UsageRow, cost: float | None) -> None:
        """Count ``row``, whose cost is ``cost`` (``None``: unknown)."""
        self.calls += row.calls
        self.calls_without_usage += row.calls_without_usage
        if row.input_tokens is None:
            return
        self.input_tokens = (self.input_tokens or 0) + row.input_tokens
        self.output_tokens = (self.output_tokens or 0) + (row.output_tokens or 0)
        self.cached_tokens = (self.cached_tokens or 0) + (row.cached_tokens or 0)
        self.reasoning_tokens = (self.reasoning_tokens or 0) + (row.reasoning_tokens or 0)
        if cost is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost
        elif row.model not in self.unpriced:
            self.unpriced.append(row.model)


class Segment(msgspec.Struct, kw_only=True, frozen=True):
    """One model's part of one bar (x and width in %, y and height in px)."""

    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


class Tick(msgspec.Struct, kw_only=True, frozen=True):
    """An axis label: at ``pos`` (% across for time, px down for values)."""

    pos: float
    label: str


class Chart(msgspec.Struct, kw_only=True, frozen=True):
    """The stacked bar chart: segments, axes and the legend (series, colour)."""

    metric: str
    stack_by: str
    bucket_label: str
    segments: list[Segment]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    legend: list[tuple[str, str]]
    height: int = CHART_HEIGHT


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    """Everything the page shows."""

    total: Totals
    by_model: list[tuple[str, Totals]]
    by_pipeline: list[tuple[str, Totals]]
    chart: Chart


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


def _duration(ns: int) -> str:
    seconds = ns // SECOND
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''}"
    return f"{seconds} second{'s' if seconds > 1 else ''}"


def _time_label(ns: int, bucket_ns: int, span_ns: int, zone: tzinfo) -> str:
    moment = datetime.fromtimestamp(ns / 1e9, zone)
    if bucket_ns >= 86400 * SECOND:
        return f"{moment:%Y-%m-%d}"
    if span_ns > 86400 * SECOND:
        return f"{moment:%m-%d %H:%M}"
    return f"{moment:%H:%M:%S}" if bucket_ns < 60 * SECOND else f"{moment:%H:%M}"


def summarize(
    rows: Iterable[UsageRow],
    *,
    start_ns: int,
    end_ns: int,
    bucket_ns: int,
    metric: Metric,
    zone: tzinfo,
    stack_by: str = "model",
) -> Usage:
    """Totals by model and pipeline, and the chart of ``metric`` from ``start_ns`` to ``end_ns``
    in buckets of ``bucket_ns`` (aligned on the epoch, as the query groups them), one series per
    model, or per pipeline when ``stack_by`` is ``"pipeline"``."""
    total = Totals()
    models: dict[str, Totals] = {}
    pipelines: dict[str, Totals] = {}
    stacks: dict[int, dict[str, float]] = {}
    for row in rows:
        cost = row.priced()
        for totals in (
            total,
            models.setdefault(row.model, Totals()),
            pipelines.setdefault(row.pipeline or NO_PIPELINE, Totals()),
        ):
            totals.add(row, cost)
        tokens = None if row.input_tokens is None else row.input_tokens + (row.output_tokens or 0)
        value = tokens if metric == "tokens" else cost
        if value:
            stack = stacks.setdefault(row.bucket_ns, {})
            name = row.model if stack_by == "model" else row.pipeline or NO_PIPELINE
            stack[name] = stack.get(name, 0.0) + value
    by_model = sorted(models.items(), key=lambda item: (-(item[1].tokens or 0), item[0]))
    by_pipeline = sorted(pipelines.items(), key=lambda item: (-(item[1].tokens or 0), item[0]))
    series = by_model if stack_by == "model" else by_pipeline
    colours = {name: PALETTE[min(i, len(PALETTE) - 1)] for i, (name, _) in enumerate(series)}
    legend = [
        (_legend_label(name, totals, metric), colour)
        for (name, totals), colour in zip(series, colours.values(), strict=True)
    ]
    chart = _chart(stacks, colours, legend, start_ns, end_ns, bucket_ns, metric, stack_by, zone)
    return Usage(total=total, by_model=by_model, by_pipeline=by_pipeline, chart=chart)


def _legend_label(name: str, totals: Totals, metric: Metric) -> str:
    """A series' name; on the cost chart, said when its tokens (or some) have no price."""
    if metric == "tokens" or not totals.unpriced:
        return name
    return f"{name} (no price)" if not totals.cost_usd else f"{name} (partly unpriced)"


def _chart(
    stacks: dict[int, dict[str, float]],
    colours: dict[str, str],
    legend: list[tuple[str, str]],
    start_ns: int,
    end_ns: int,
    bucket_ns: int,
    metric: Metric,
    stack_by: str,
    zone: tzinfo,
) -> Chart:
    first = start_ns // bucket_ns * bucket_ns
    count = max(1, -(-(end_ns - first) // bucket_ns))
    slot = 100.0 / count
    top = max((sum(stack.values()) for stack in stacks.values()), default=0.0)
    scale = (PLOT_BOTTOM - PLOT_TOP) / top if top else 0.0
    fmt = format_count if metric == "tokens" else format_usd
    segments = []
    for bucket, stack in sorted(stacks.items()):
        index = (bucket - first) // bucket_ns
        if not 0 <= index < count:
            continue
        y = float(PLOT_BOTTOM)
        when = _time_label(bucket, bucket_ns, end_ns - start_ns, zone)
        # The biggest series at the bottom, in the legend's order.
        for model in (m for m in colours if m in stack):
            height = stack[model] * scale
            y -= height
            segments.append(
                Segment(
                    x=round(index * slot + slot * 0.1, 3),
                    y=round(y, 2),
                    width=round(slot * 0.8, 3),
                    height=round(height, 2),
                    colour=colours[model],
                    title=f"{when} · {model}: {fmt(stack[model])}",
                )
            )
    # About six time labels, each centred on its bar; none so near an edge that it would be cut.
    step = max(1, count // 6)
    x_ticks = [
        Tick(
            pos=round((i + 0.5) * slot, 3),
            label=_time_label(first + i * bucket_ns, bucket_ns, end_ns - start_ns, zone),
        )
        for i in range(0, count, step)
        if 6 <= (i + 0.5) * slot <= 94 or count <= 6
    ]
    y_ticks = [
        Tick(pos=round(PLOT_BOTTOM - top * f * scale, 2), label=fmt(top * f))
        for f in (0.5, 1.0)
        if top
    ]
    return Chart(
        metric=metric,
        stack_by=stack_by,
        bucket_label=_duration(bucket_ns),
        segments=segments,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        legend=legend,
    )

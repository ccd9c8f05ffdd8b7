"""The LLM usage page's figures: totals by model and by pipeline, and a stacked bar chart of
tokens or cost per time bucket, one colour per model (or per pipeline), laid out for a
server-drawn SVG.

Costs are priced from the tokens (``UsageRow.priced``): a model without a price adds nothing to
a cost and is listed as unknown instead, and calls without usage add no tokens and are counted
apart, so "0" or "$0.00" never hides what is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import tzinfo

import msgspec

from pipelens_server._pages._chart import (
    PALETTE,
    USAGE_CHART,
    Bar,
    Tick,
    format_count,
    format_usd,
    stack,
    time_label,
)
from pipelens_server._read._llm import SECOND, UsageRow

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


class Chart(msgspec.Struct, kw_only=True, frozen=True):
    """The stacked bar chart: segments (each a series' part of a bar: x and width in %, y and
    height in px), axes (ticks at % across for time, px down for values) and the legend
    (series, colour)."""

    metric: str
    stack_by: str
    bucket_label: str
    segments: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    legend: list[tuple[str, str]]
    height: int = USAGE_CHART.height


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    """Everything the page shows."""

    total: Totals
    by_model: list[tuple[str, Totals]]
    by_pipeline: list[tuple[str, Totals]]
    chart: Chart


def _duration(ns: int) -> str:
    seconds = ns // SECOND
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''}"
    return f"{seconds} second{'s' if seconds > 1 else ''}"


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
            cell = stacks.setdefault(row.bucket_ns, {})
            name = row.model if stack_by == "model" else row.pipeline or NO_PIPELINE
            cell[name] = cell.get(name, 0.0) + value
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
    top = max((sum(parts.values()) for parts in stacks.values()), default=0.0)
    base = USAGE_CHART.base
    scale = USAGE_CHART.plot_height / top if top else 0.0
    fmt = format_count if metric == "tokens" else format_usd
    segments: list[Bar] = []
    for bucket, parts in sorted(stacks.items()):
        index = (bucket - first) // bucket_ns
        if not 0 <= index < count:
            continue
        when = time_label(bucket, end_ns - start_ns, zone, step_ns=bucket_ns)
        # The biggest series at the bottom, in the legend's order.
        segments += stack(
            round(index * slot + slot * 0.1, 3),
            round(slot * 0.8, 3),
            base,
            (
                (parts[model] * scale, "", colours[model], f"{when} · {model}: {fmt(parts[model])}")
                for model in colours
                if model in parts
            ),
        )
    # About six time labels, each centred on its bar; none so near an edge that it would be cut.
    step = max(1, count // 6)
    x_ticks = [
        Tick(
            at=round((i + 0.5) * slot, 3),
            label=time_label(first + i * bucket_ns, end_ns - start_ns, zone, step_ns=bucket_ns),
        )
        for i in range(0, count, step)
        if 6 <= (i + 0.5) * slot <= 94 or count <= 6
    ]
    y_ticks = [
        Tick(at=round(base - top * f * scale, 2), label=fmt(top * f)) for f in (0.5, 1.0) if top
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

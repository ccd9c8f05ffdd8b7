"""The LLM usage page ``/llm``: tokens and cost by model and by pipeline over a time range, and
over time as a server-drawn stacked bar chart; an empty state until a run records an LLM call.
The same figures as JSON at ``/api/v1/llm/usage`` (``_api._llm``).

Costs are computed from the stored tokens at read time, so a corrected table reprices past runs;
a model without a price, or calls without usage, show an unknown cost, never zero.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from litestar import Request, Response, get
from litestar.params import FromQuery, QueryParameter

from pipelens_server._db._lifespan import PoolDep
from pipelens_server._pages._chart import format_count, format_usd
from pipelens_server._pages._llm_chart import summarize
from pipelens_server._pages._runs import RangeParam
from pipelens_server._pages._templating import (
    base_context,
    page_url,
    pipeline_path,
    render,
    zone_of,
)
from pipelens_server._read import _prices
from pipelens_server._read._llm import (
    bucket_width,
    first_token_by_model,
    usage_rows,
    usage_span,
)
from pipelens_server._timerange import RANGES, preset_start

StackParam = Annotated[
    Literal["model", "pipeline"],
    QueryParameter(name="by", description="what the chart's stacks are: models or pipelines"),
]
MetricParam = Annotated[
    Literal["tokens", "cost"],
    QueryParameter(name="metric", description="what the chart stacks: tokens or USD"),
]


@get("/llm")
async def llm_usage(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    range_: RangeParam = "24h",
    metric: MetricParam = "tokens",
    by: StackParam = "model",
    pipeline: FromQuery[str] = "",
) -> Response[str]:
    """Tokens (input, output, cached, reasoning) and cost by model and by pipeline over a time
    range, and per time bucket (optionally of one pipeline)."""
    now_ns = time.time_ns()
    since_ns = preset_start(range_, now_ns)
    until_ns = now_ns + 1
    span = await usage_span(pool, since_ns, until_ns)
    start_ns = since_ns
    if since_ns == 0:  # all time: from the first call there is
        start_ns = span[0] if span else now_ns - 3600 * 1_000_000_000
    bucket_ns = bucket_width(until_ns - start_ns)
    rows = await usage_rows(pool, since_ns, until_ns, bucket_ns) if span else []
    pipelines = sorted({row.pipeline or "" for row in rows})
    if pipeline:
        rows = [row for row in rows if row.pipeline == pipeline]
    usage = summarize(
        rows,
        start_ns=start_ns,
        end_ns=until_ns,
        bucket_ns=bucket_ns,
        metric=metric,
        zone=zone_of(request),
        stack_by=by,
    )
    first_token = await first_token_by_model(pool, since_ns, until_ns, pipeline) if span else []
    ever = span is not None or await usage_span(pool, 0, until_ns) is not None
    context = base_context(request, "LLM usage") | {
        "usage": usage,
        "has_rows": bool(rows),
        "ever": ever,
        "range": range_,
        "ranges": RANGES,
        "metric": metric,
        "by": by,
        "pipeline": pipeline,
        "pipelines": pipelines,
        "usd": format_usd,
        "count": format_count,
        "prices_source": _prices.source(),
        "first_token": first_token,
        "self_url": page_url("/llm", range=range_, metric=metric, by=by, pipeline=pipeline),
        "runs_url": lambda name: (
            page_url(pipeline_path(name, "runs"), range=range_)
            if name in pipelines and name
            else None
        ),
    }
    return render(request, "llm.html", context, fragments=("llm_usage",))


route_handlers = [llm_usage]

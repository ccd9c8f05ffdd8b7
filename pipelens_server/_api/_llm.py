"""The JSON API's LLM usage: ``GET /api/v1/llm/usage``, the figures of the ``/llm`` page.

Costs are priced here from the stored tokens with today's price table, so a corrected table
reprices past runs; a model without a price has an unknown cost (``null``), never zero.
"""

from __future__ import annotations

import time
from typing import Annotated

import msgspec
from litestar import get
from litestar.params import QueryParameter

from pipelens_server._api._stats import RangeQuery
from pipelens_server._db._lifespan import PoolDep
from pipelens_server._read._llm import UsageRow, bucket_width, usage_rows, usage_span
from pipelens_server._read._pricing import cost_usd, price_table
from pipelens_server._timerange import preset_start


class UsageOut(UsageRow, kw_only=True, frozen=True):
    """Calls, tokens and cost of one model in one pipeline within one time bucket."""

    #: Priced by the server from the tokens; ``None``: the model is not in the price table.
    cost_usd: float | None


class UsageList(msgspec.Struct, kw_only=True, frozen=True):
    """LLM usage over a time range, in buckets of ``bucket_ns`` counted from the epoch."""

    since_ns: int
    until_ns: int
    bucket_ns: int
    prices_date: str | None
    usage: list[UsageOut]


def _out(row: UsageRow) -> UsageOut:
    cost = cost_usd(row.model, row.input_tokens, row.output_tokens, row.cached_tokens)
    return UsageOut(**msgspec.structs.asdict(row), cost_usd=cost)


@get("/v1/llm/usage")
async def llm_usage_api(
    pool: PoolDep,
    range_: RangeQuery = "24h",
    pipeline: Annotated[str, QueryParameter(description="only this pipeline's calls")] = "",
    bucket_s: Annotated[
        int | None,
        QueryParameter(ge=1, description="bucket width in seconds (default: about 60 buckets)"),
    ] = None,
) -> UsageList:
    """LLM calls, tokens and cost (USD, priced by the server) by time bucket, pipeline and model
    over a time range."""
    now_ns = time.time_ns()
    since_ns = preset_start(range_, now_ns)
    until_ns = now_ns + 1
    start_ns = since_ns
    if since_ns == 0:
        span = await usage_span(pool, 0, until_ns)
        start_ns = span[0] if span else now_ns
    bucket_ns = bucket_s * 1_000_000_000 if bucket_s else bucket_width(until_ns - start_ns)
    rows = await usage_rows(pool, since_ns, until_ns, bucket_ns)
    return UsageList(
        since_ns=since_ns,
        until_ns=until_ns,
        bucket_ns=bucket_ns,
        prices_date=price_table().date,
        usage=[_out(row) for row in rows if not pipeline or row.pipeline == pipeline],
    )


route_handlers = [llm_usage_api]

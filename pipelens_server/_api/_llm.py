"""The JSON API's LLM usage: ``GET /api/v1/llm/usage``, the figures of the ``/llm`` page.

Costs are priced from the stored tokens at read time (``pipelens._pricing``), so a corrected
table reprices past runs. Unknown is not zero: a model without a price, or calls that reported
no usage, have ``null`` tokens and cost; ``calls_without_usage`` counts those calls.
"""

from __future__ import annotations

import time
from typing import Annotated

import msgspec
from litestar import get
from litestar.params import QueryParameter

from pipelens import _pricing
from pipelens_server._api._stats import RangeQuery
from pipelens_server._db._lifespan import PoolDep
from pipelens_server._read import _prices
from pipelens_server._read._llm import (
    FirstToken,
    UsageRow,
    bucket_width,
    first_token_by_model,
    usage_rows,
    usage_span,
)
from pipelens_server._timerange import preset_start


class UsageOut(UsageRow, kw_only=True, frozen=True):
    """Calls, tokens and cost of one model in one pipeline within one time bucket."""

    #: Priced by the server from the tokens; ``None``: no call reported usage, or the model is
    #: not in the price table.
    cost_usd: float | None


class UsageList(msgspec.Struct, kw_only=True, frozen=True):
    """LLM usage over a time range, in buckets of ``bucket_ns`` counted from the epoch."""

    since_ns: int
    until_ns: int
    bucket_ns: int
    #: The date of the shipped ``prices.json`` (used where genai-prices is missing).
    prices_date: str | None
    #: Where the prices came from: ``genai-prices 0.2.3, then PipeLens prices.json of ...``.
    prices_source: str
    usage: list[UsageOut]
    #: Time to first token of streamed calls by model over the whole range.
    time_to_first_token: list[FirstToken]


def _out(row: UsageRow) -> UsageOut:
    return UsageOut(**msgspec.structs.asdict(row), cost_usd=row.priced())


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
    first_token = await first_token_by_model(pool, since_ns, until_ns, pipeline)
    return UsageList(
        since_ns=since_ns,
        until_ns=until_ns,
        bucket_ns=bucket_ns,
        prices_date=_pricing.shipped_prices().date,
        prices_source=_prices.source(),
        usage=[_out(row) for row in rows if not pipeline or row.pipeline == pipeline],
        time_to_first_token=first_token,
    )


route_handlers = [llm_usage_api]

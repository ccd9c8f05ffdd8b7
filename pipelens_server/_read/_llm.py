"""The LLM queries: token usage by time bucket, pipeline and model, and one step's LLM call.

Usage comes from two places, never both for one run: a finished run's ``llm_usage`` (by model,
and it also counts the seed's ``LLMTrack`` records), else the ``llm`` of each of its steps (a run
still running, or one whose client sent no usage). Stored JSON is read defensively: in a call
that reported usage, a token count that is not a number counts as 0 rather than failing the page.

Unknown is not zero: the tokens of calls that reported no usage are ``NULL`` (``None``), so a sum
over none of them is unknown, never 0, and nothing is priced for them; ``calls_without_usage``
counts them. Costs are priced here, at read time, with :mod:`pipelens._pricing` (genai-prices
when installed, else the shipped ``prices.json``), so a corrected table reprices past runs.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens import _pricing
from pipelens_server._read import _prices
from pipelens_server._read._shapes import LLMTotals, RunOut, StepOut

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
SECOND = 1_000_000_000
#: Bucket widths the chart may use, narrowest first.
BUCKETS_NS = [
    s * SECOND
    for s in (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400)
] + [7 * 86400 * SECOND, 30 * 86400 * SECOND]
#: A usage chart (or the API's default buckets) has at most about this many bars.
MAX_BARS = 60


def bucket_width(span_ns: int) -> int:
    """The narrowest bucket that draws ``span_ns`` in at most :data:`MAX_BARS` bars."""
    for width in BUCKETS_NS:
        if span_ns <= width * MAX_BARS:
            return width
    return BUCKETS_NS[-1]


class UsageRow(msgspec.Struct, kw_only=True, frozen=True):
    """Calls and tokens of one model in one pipeline within one time bucket; tokens ``None``
    when none of the calls reported usage."""

    bucket_ns: int
    pipeline: str | None
    model: str
    calls: int
    calls_without_usage: int
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None

    def priced(self) -> float | None:
        """The calls' cost in USD at the prices of the bucket's day; ``None`` when unknown
        (no call reported usage, or the model has no price)."""
        if self.input_tokens is None:
            return None
        return _pricing.cost_usd(
            _prices.price_of(None, self.model, self.bucket_ns),
            self.input_tokens,
            self.output_tokens or 0,
            self.cached_tokens or 0,
            self.cache_write_tokens or 0,
            calls=self.calls - self.calls_without_usage,
        )


#: The largest count one stored value adds (ingest refuses larger ones; rows stored before it
#: did, or written by other means, are clamped so that no row can overflow a page's sums).
MAX_COUNT = 10**12


def _count(json_field: str, missing: int = 0) -> sql.Composable:
    """A jsonb number as a bigint from 0 to :data:`MAX_COUNT`, ``missing`` when missing or not a
    number (the client's shape is not enforced by ingest)."""
    expr = sql.SQL(json_field)
    return sql.SQL(
        "CASE WHEN jsonb_typeof({e}) = 'number' "
        "THEN floor(least(greatest(({e})::numeric, 0), {cap}))::bigint ELSE {missing} END"
    ).format(e=expr, cap=sql.Literal(MAX_COUNT), missing=sql.Literal(missing))


def _known(has_usage: str, json_field: str) -> sql.Composable:
    """A token count of calls that reported usage (``has_usage``, SQL); ``NULL`` otherwise."""
    return sql.SQL("CASE WHEN {has} THEN {count} END").format(
        has=sql.SQL(has_usage), count=_count(json_field)
    )


#: The usage CTE's filters: a time range, or a list of runs.
_IN_RANGE = (
    "r.start_ns >= %(since)s AND r.start_ns < %(until)s",
    "s.start_ns >= %(since)s AND s.start_ns < %(until)s",
)
_OF_RUNS = ("r.run_id = ANY(%(runs)s)", "s.run_id = ANY(%(runs)s)")


def _usage_cte(where: tuple[str, str]) -> sql.Composed:
    """``WITH usage AS (...)``: one row per run and model (finished runs' ``llm_usage``) or per
    call (the steps of runs without it), filtered by ``where`` (runs', steps' condition)."""
    run_has = sql.SQL("({c} < {calls})").format(
        c=_count("u.value->'calls_without_usage'"), calls=_count("u.value->'calls'", missing=1)
    )
    step_has = "jsonb_typeof(s.llm->'usage') = 'object'"
    run_tokens = sql.SQL(", ").join(
        sql.SQL("CASE WHEN {has} THEN {count} END AS {name}").format(
            has=run_has, count=_count(f"u.value->'{name}'"), name=sql.Identifier(name)
        )
        for name in TOKEN_FIELDS
    )
    step_tokens = sql.SQL(", ").join(
        _known(step_has, f"s.llm->'usage'->'{name}'") for name in TOKEN_FIELDS
    )
    calls = _count("u.value->'calls'", missing=1)
    return sql.SQL(
        """
        WITH usage AS (
            SELECT r.run_id, r.pipeline, u.key AS model, r.start_ns AS at_ns, {calls} AS calls,
                   least({run_missing}, {calls}) AS calls_without_usage, {run_tokens}
            FROM runs r CROSS JOIN LATERAL jsonb_each(r.llm_usage) u
            WHERE r.llm_usage IS NOT NULL AND jsonb_typeof(r.llm_usage) = 'object'
              AND {run_where}
            UNION ALL
            SELECT r.run_id, coalesce(s.pipeline, r.pipeline),
                   coalesce(s.llm->>'response_model', s.llm->>'request_model',
                            s.llm->>'model', 'unknown'),
                   s.start_ns, 1,
                   CASE WHEN {step_has} THEN 0 ELSE 1 END,
                   {step_tokens}
            FROM steps s JOIN runs r ON r.run_id = s.run_id
            WHERE s.llm IS NOT NULL AND r.llm_usage IS NULL AND {step_where}
        )
        """
    ).format(
        calls=calls,
        run_missing=_count("u.value->'calls_without_usage'"),
        run_tokens=run_tokens,
        step_has=sql.SQL(step_has),
        step_tokens=step_tokens,
        run_where=sql.SQL(where[0]),
        step_where=sql.SQL(where[1]),
    )


#: The sums of the token columns, in ``TOKEN_FIELDS`` order.
_SUMS = sql.SQL(", ").join(
    sql.SQL("sum({})::bigint").format(sql.Identifier(name)) for name in TOKEN_FIELDS
)
_BUCKETED = sql.SQL(
    """{cte}
    SELECT floor(at_ns::numeric / %(bucket)s)::bigint * %(bucket)s AS bucket_ns,
           pipeline, model, sum(calls)::bigint, sum(calls_without_usage)::bigint, {sums}
    FROM usage GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    """
).format(cte=_usage_cte(_IN_RANGE), sums=_SUMS)
_SPAN = sql.SQL("{cte} SELECT min(at_ns) AS first_ns, max(at_ns) AS last_ns FROM usage").format(
    cte=_usage_cte(_IN_RANGE)
)
#: Per run and model: the first call's time (the day its prices are read at) and the sums.
_OF_RUNS_SQL = sql.SQL(
    """{cte}
    SELECT run_id, model, min(at_ns), sum(calls)::bigint, sum(calls_without_usage)::bigint,
           {sums}
    FROM usage GROUP BY 1, 2 ORDER BY 1, 2
    """
).format(cte=_usage_cte(_OF_RUNS), sums=_SUMS)


#: One pipeline's runs started in a range (both parts of the usage CTE filter on the run).
_OF_PIPELINE = (
    "r.pipeline = %(pipeline)s AND r.start_ns >= %(since)s AND r.start_ns < %(until)s",
    "r.pipeline = %(pipeline)s AND r.start_ns >= %(since)s AND r.start_ns < %(until)s",
)
#: Per time bucket (``width`` wide from ``since``, ``last`` the last) and model, the sums; and
#: per bucket alone (``GROUPING(model)`` 1) how many runs made the calls. A call of a run
#: still running is at its own start: clamped into the range's buckets.
_PIPELINE_BUCKETS = sql.SQL(
    """{cte}
    SELECT bucket, model, count(DISTINCT run_id), sum(calls)::bigint,
           sum(calls_without_usage)::bigint, {sums}, GROUPING(model)
    FROM (
        SELECT greatest(least((at_ns - %(since)s) / %(width)s, %(last)s), 0) AS bucket, *
        FROM usage
    ) u
    GROUP BY GROUPING SETS ((bucket, model), (bucket)) ORDER BY bucket, model NULLS FIRST
    """
).format(cte=_usage_cte(_OF_PIPELINE), sums=_SUMS)


class BucketCost(msgspec.Struct, kw_only=True, frozen=True):
    """The LLM cost of the runs started in one time bucket, and how many runs made calls."""

    start_ns: int
    cost_usd: float
    runs: int


async def pipeline_costs(
    pool: AsyncConnectionPool[Any], pipeline: str, since_ns: int, until_ns: int, buckets: int
) -> list[BucketCost]:
    """The LLM cost of ``pipeline``'s runs started in [``since_ns``, ``until_ns``), over
    ``buckets`` equal time buckets, each model priced at the prices of its bucket's day; a
    bucket none of whose calls could be priced is left out (unknown is not zero)."""
    width = max((until_ns - since_ns) // buckets, 1)
    params = {
        "pipeline": pipeline,
        "since": since_ns,
        "until": until_ns,
        "width": width,
        "last": buckets - 1,
    }
    async with pool.connection() as conn:
        cursor = await conn.execute(_PIPELINE_BUCKETS, params)
        rows = await cursor.fetchall()
    runs: dict[int, int] = {}
    costs: dict[int, float] = {}
    for bucket, model, run_count, calls, without, *rest in rows:
        *tokens, per_bucket = rest
        if per_bucket:
            runs[bucket] = run_count
            continue
        cost = UsageRow(
            bucket_ns=since_ns + bucket * width,
            pipeline=pipeline,
            model=model,
            calls=calls,
            calls_without_usage=without,
            **dict(zip(TOKEN_FIELDS, tokens, strict=True)),
        ).priced()
        if cost is not None:
            costs[bucket] = costs.get(bucket, 0.0) + cost
    return [
        BucketCost(start_ns=since_ns + bucket * width, cost_usd=cost, runs=runs[bucket])
        for bucket, cost in sorted(costs.items())
    ]


async def usage_span(
    pool: AsyncConnectionPool[Any], since_ns: int, until_ns: int
) -> tuple[int, int] | None:
    """The times of the first and last usage between ``since_ns`` and ``until_ns``; ``None``
    when there is none."""
    async with pool.connection() as conn:
        cursor = await conn.execute(_SPAN, {"since": since_ns, "until": until_ns})
        row = await cursor.fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


async def usage_rows(
    pool: AsyncConnectionPool[Any], since_ns: int, until_ns: int, bucket_ns: int
) -> list[UsageRow]:
    """Calls and tokens by time bucket (``bucket_ns`` wide, from the epoch), pipeline and model
    between ``since_ns`` and ``until_ns``."""
    params = {"since": since_ns, "until": until_ns, "bucket": bucket_ns}
    async with pool.connection() as conn:
        cursor = await conn.execute(_BUCKETED, params)
        rows = await cursor.fetchall()
    return [
        UsageRow(
            bucket_ns=row[0],
            pipeline=row[1],
            model=row[2],
            calls=row[3],
            calls_without_usage=row[4],
            input_tokens=row[5],
            output_tokens=row[6],
            cached_tokens=row[7],
            cache_write_tokens=row[8],
            reasoning_tokens=row[9],
        )
        for row in rows
    ]


class FirstToken(msgspec.Struct, kw_only=True, frozen=True):
    """Time to first token of one model's streamed calls over a time range."""

    model: str
    #: Streamed calls that reached a first token.
    calls: int
    p50_ns: int
    p95_ns: int


_FIRST_TOKEN = sql.SQL(
    """
    SELECT model, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft)
    FROM (
        SELECT coalesce(s.llm->>'response_model', s.llm->>'request_model',
                        s.llm->>'model', 'unknown') AS model,
               {ttft} AS ttft
        FROM steps s JOIN runs r ON r.run_id = s.run_id
        WHERE s.llm IS NOT NULL AND jsonb_typeof(s.llm->'time_to_first_token_ns') = 'number'
          AND s.start_ns >= %(since)s AND s.start_ns < %(until)s
          AND (%(pipeline)s = '' OR coalesce(s.pipeline, r.pipeline) = %(pipeline)s)
    ) t
    GROUP BY model ORDER BY model
    """
).format(ttft=_count("s.llm->'time_to_first_token_ns'"))


async def first_token_by_model(
    pool: AsyncConnectionPool[Any], since_ns: int, until_ns: int, pipeline: str = ""
) -> list[FirstToken]:
    """Time to first token, p50 and p95, of each model's streamed calls between ``since_ns``
    and ``until_ns`` (of one pipeline when ``pipeline`` is given), from the calls' steps."""
    params = {"since": since_ns, "until": until_ns, "pipeline": pipeline}
    async with pool.connection() as conn:
        cursor = await conn.execute(_FIRST_TOKEN, params)
        rows = await cursor.fetchall()
    return [
        FirstToken(model=row[0], calls=row[1], p50_ns=round(row[2]), p95_ns=round(row[3]))
        for row in rows
    ]


async def run_llm_totals(
    pool: AsyncConnectionPool[Any], run_ids: list[str]
) -> dict[str, LLMTotals]:
    """The LLM calls, tokens and cost of each of ``run_ids`` that made any (the others are left
    out), priced per model at the prices of the day of its first call."""
    totals: dict[str, LLMTotals] = {}
    for run_id, row in await _run_usage(pool, run_ids):
        totals[run_id] = _plus(totals.get(run_id, LLMTotals()), row)
    return totals


async def _run_usage(
    pool: AsyncConnectionPool[Any], run_ids: list[str]
) -> list[tuple[str, UsageRow]]:
    """Each of ``run_ids``'s usage by model, at the day of the model's first call."""
    if not run_ids:
        return []
    async with pool.connection() as conn:
        cursor = await conn.execute(_OF_RUNS_SQL, {"runs": run_ids})
        rows = await cursor.fetchall()
    return [
        (
            run_id,
            UsageRow(
                bucket_ns=at_ns or 0,
                pipeline=None,
                model=model,
                calls=calls,
                calls_without_usage=without,
                **dict(zip(TOKEN_FIELDS, tokens, strict=True)),
            ),
        )
        for run_id, model, at_ns, calls, without, *tokens in rows
    ]


async def priced_runs(pool: AsyncConnectionPool[Any], runs: list[RunOut]) -> list[RunOut]:
    """``runs`` with their server-priced LLM totals (``llm``) and, in the ``llm_usage`` the
    client sent, each model's ``cost_usd`` the server's price of its tokens too (the client's
    estimate would be a second, different figure for the same calls in one answer)."""
    totals: dict[str, LLMTotals] = {}
    costs: dict[str, dict[str, float | None]] = {}
    for run_id, row in await _run_usage(pool, [run.run_id for run in runs]):
        totals[run_id] = _plus(totals.get(run_id, LLMTotals()), row)
        costs.setdefault(run_id, {})[row.model] = row.priced()
    return [
        msgspec.structs.replace(
            run,
            llm=totals.get(run.run_id),
            llm_usage=_repriced(run.llm_usage, costs.get(run.run_id, {})),
        )
        for run in runs
    ]


class _Priced(msgspec.Struct):
    """What :func:`call_cost` reads of a stored call; the rest is skipped unread."""

    provider: Any = None
    response_model: Any = None
    request_model: Any = None
    model: Any = None
    usage: Any = None


_PRICED = msgspec.json.Decoder(_Priced)


def priced_steps(steps: list[StepOut]) -> list[StepOut]:
    """``steps`` (their ``llm`` read without its ``cost_usd``: ``STEP_OUT_COLUMNS``) with each
    LLM call's ``cost_usd`` the server's (:func:`call_cost` at the step's start), as the run's
    totals are. Spliced in front of the stored text, which is never decoded whole: decoding
    and encoding a call of 6 KB cost 16.5 µs, this 8.6 µs, most of it the price lookup."""
    out = []
    for step in steps:
        if step.llm is not None:
            text = bytes(step.llm)
            try:
                call = msgspec.structs.asdict(_PRICED.decode(text))
            except (msgspec.DecodeError, msgspec.ValidationError):
                call = None  # not an object: nothing to price
            if call is not None:
                cost = msgspec.json.encode(call_cost(call, step.start_ns))
                rest = b"}" if text.strip() == b"{}" else b", " + text.lstrip()[1:]
                llm = msgspec.Raw(b'{"cost_usd": ' + cost + rest)
                step = msgspec.structs.replace(step, llm=llm)
        out.append(step)
    return out


def _repriced(usage: msgspec.Raw | None, costs: dict[str, float | None]) -> msgspec.Raw | None:
    """``llm_usage`` with each model's ``cost_usd`` from ``costs`` (``None``: unknown)."""
    if usage is None:
        return None
    try:
        by_model = msgspec.json.decode(usage)
    except msgspec.DecodeError:
        return usage
    if not isinstance(by_model, dict):
        return usage
    for model, entry in by_model.items():
        if isinstance(entry, dict):
            entry["cost_usd"] = costs.get(model)
    return msgspec.Raw(msgspec.json.encode(by_model))


def _plus(totals: LLMTotals, row: UsageRow) -> LLMTotals:
    """``totals`` with one model's ``row`` added."""
    calls = totals.calls + row.calls
    without = totals.calls_without_usage + row.calls_without_usage
    if row.input_tokens is None:
        return msgspec.structs.replace(totals, calls=calls, calls_without_usage=without)
    cost = row.priced()
    return LLMTotals(
        calls=calls,
        calls_without_usage=without,
        input_tokens=(totals.input_tokens or 0) + row.input_tokens,
        output_tokens=(totals.output_tokens or 0) + (row.output_tokens or 0),
        cost_usd=totals.cost_usd if cost is None else (totals.cost_usd or 0.0) + cost,
        unpriced=totals.unpriced if cost is not None else [*totals.unpriced, row.model],
    )


async def step_llm(pool: AsyncConnectionPool[Any], run_id: str, key: str) -> CallView | None:
    """The LLM call a step made, for the step panel; ``None`` when it made none."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT llm::text, start_ns FROM steps WHERE run_id = %s AND key = %s", [run_id, key]
        )
        row = await cursor.fetchone()
    if row is None or row[0] is None:
        return None
    return call_view(msgspec.json.decode(row[0]), row[1])


#: A message longer than this (characters, or lines) is shown collapsed.
LONG_TEXT = 600
LONG_LINES = 12


class Message(msgspec.Struct, kw_only=True, frozen=True):
    """One input message as the step panel shows it."""

    role: str
    text: str

    @property
    def long(self) -> bool:
        """Whether the panel collapses it."""
        return len(self.text) > LONG_TEXT or self.text.count("\n") >= LONG_LINES

    @property
    def preview(self) -> str:
        """The first line, cut short: the summary of a collapsed message."""
        first = self.text.strip().split("\n", 1)[0]
        return first if len(first) <= 120 else first[:119] + "…"


class ToolCallView(msgspec.Struct, kw_only=True, frozen=True):
    """A tool call the model asked for; ``arguments`` indented when it is JSON."""

    name: str
    id: str | None
    arguments: str


class CallView(msgspec.Struct, kw_only=True, frozen=True):
    """One LLM call as the step panel shows it (every field read defensively)."""

    provider: str
    operation: str
    request_model: str | None
    response_model: str | None
    model: str
    params: dict[str, Any]
    messages: list[Message]
    output_text: str | None
    tool_calls: list[ToolCallView]
    finish_reason: str | None
    embeddings: int | None
    dimensions: int | None
    tokens: dict[str, int] | None
    cost_usd: float | None
    latency_ns: int | None
    time_to_first_token_ns: int | None
    tokens_per_second: float | None
    request_id: str | None
    response_id: str | None
    stream: bool
    chunks: int | None
    stream_closed_early: bool
    status_code: int | None
    error_code: str | None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    # Clamped like the usage sums: a stored 1e300 must not make a page of 300 digits.
    return int(max(-MAX_COUNT, min(value, MAX_COUNT)))


def _list(value: Any) -> list[Any]:
    """A stored list, or none: ingest did not always check the shape."""
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    """A message's content as text: strings as they are, text parts joined, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(p, dict) and isinstance(p.get("text"), str) for p in value
    ):
        return "\n".join(p["text"] for p in value)
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def _messages(value: Any) -> list[Message]:
    """Chat messages with their roles; any other input (embeddings' strings, a cut value) as
    one message per item, role ``input``."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    messages = []
    for item in items:
        if isinstance(item, dict) and ("role" in item or "content" in item):
            text = _text(item.get("content"))
            if not item.get("content") and item.get("tool_calls") is not None:
                text = _text(item["tool_calls"])
            messages.append(Message(role=str(item.get("role") or "message"), text=text))
        else:
            messages.append(Message(role="input", text=_text(item)))
    return messages


def _arguments(text: Any) -> str:
    if not isinstance(text, str):
        return _text(text)
    try:
        return msgspec.json.format(text, indent=2)
    except msgspec.DecodeError:
        return text


def _model(data: dict[str, Any]) -> str:
    """The model a stored call names: the one that answered, else the one asked for."""
    return (
        _str(data.get("response_model"))
        or _str(data.get("request_model"))
        or _str(data.get("model"))
        or "unknown"
    )


def _tokens(data: dict[str, Any]) -> dict[str, int] | None:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    return {name: _int(usage.get(name)) or 0 for name in TOKEN_FIELDS}


def call_cost(data: dict[str, Any], at_ns: int | None = None) -> float | None:
    """The server's cost of a decoded ``steps.llm``, from its tokens at the prices of the day
    of ``at_ns`` (default today); ``None`` when it reported no usage or its model has no
    price. The client's own ``cost_usd`` in it is never read."""
    tokens = _tokens(data)
    if tokens is None:
        return None
    return _pricing.cost_usd(
        _prices.price_of(_str(data.get("provider")), _model(data), at_ns),
        tokens["input_tokens"],
        tokens["output_tokens"],
        tokens["cached_tokens"],
        tokens["cache_write_tokens"],
    )


def call_view(data: Any, at_ns: int | None = None) -> CallView | None:
    """The step panel's view of a decoded ``steps.llm``; ``None`` when it is not an object.

    The cost is the server's, from the tokens, at the prices of the day of ``at_ns`` (the
    step's start; default today).
    """
    if not isinstance(data, dict):
        return None
    output = data.get("output")
    if isinstance(output, str):  # an older shape: the text itself
        output = {"text": output}
    if not isinstance(output, dict):
        output = {}
    model = _model(data)
    tokens = _tokens(data)
    tool_calls = [
        ToolCallView(
            name=str(call.get("name") or "?"),
            id=_str(call.get("id")),
            arguments=_arguments(call.get("arguments", "")),
        )
        for call in _list(output.get("tool_calls"))
        if isinstance(call, dict)
    ]
    params = data.get("params")
    tps = data.get("tokens_per_second")
    return CallView(
        provider=str(data.get("provider") or "unknown"),
        operation=str(data.get("operation") or "unknown"),
        request_model=_str(data.get("request_model")) or _str(data.get("model")),
        response_model=_str(data.get("response_model")),
        model=model,
        params=params if isinstance(params, dict) else {},
        messages=_messages(data.get("messages")),
        output_text=output.get("text") if isinstance(output.get("text"), str) else None,
        tool_calls=tool_calls,
        finish_reason=_str(output.get("finish_reason")),
        embeddings=_int(output.get("embeddings")),
        dimensions=_int(output.get("dimensions")),
        tokens=tokens,
        cost_usd=call_cost(data, at_ns),
        latency_ns=_int(data.get("latency_ns")),
        time_to_first_token_ns=_int(data.get("time_to_first_token_ns")),
        tokens_per_second=float(tps) if _int(tps) is not None and tps is not None else None,
        request_id=_str(data.get("request_id")),
        response_id=_str(data.get("response_id")),
        stream=data.get("stream") is True,
        chunks=_int(data.get("chunks")),
        stream_closed_early=data.get("stream_closed_early") is True,
        status_code=_int(data.get("status_code")),
        error_code=_str(data.get("error_code")),
    )

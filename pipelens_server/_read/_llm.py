"""The LLM queries: token usage by time bucket, pipeline and model, and one step's LLM call.

Usage comes from two places, never both for one run: a finished run's ``llm_usage`` (by model,
and it also counts the seed's ``LLMTrack`` records), else the ``llm`` of each of its steps (a run
still running, or one whose client sent no usage). Stored JSON is read defensively: a token count
that is not a number counts as 0 rather than failing the page.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens_server._read._pricing import cost_usd

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
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
    """Calls and tokens of one model in one pipeline within one time bucket."""

    bucket_ns: int
    pipeline: str | None
    model: str
    calls: int
    calls_without_usage: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int


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


def _usage_sql(bucketed: bool) -> sql.Composed:
    run_tokens = [_count(f"u.value->'{name}'") for name in TOKEN_FIELDS]
    step_tokens = [_count(f"s.llm->'usage'->'{name}'") for name in TOKEN_FIELDS]
    calls = _count("u.value->'calls'", missing=1)
    select = (
        sql.SQL("floor(at_ns::numeric / %(bucket)s)::bigint * %(bucket)s AS bucket_ns,")
        if bucketed
        else sql.SQL("min(at_ns) AS first_ns, max(at_ns) AS last_ns")
    )
    tail = (
        sql.SQL(
            """
            pipeline, model, sum(calls)::bigint, sum(calls_without_usage)::bigint,
            sum(input_tokens)::bigint, sum(output_tokens)::bigint,
            sum(cached_tokens)::bigint, sum(reasoning_tokens)::bigint
            FROM usage GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """
        )
        if bucketed
        else sql.SQL(" FROM usage")
    )
    return sql.SQL(
        """
        WITH usage AS (
            SELECT r.pipeline, u.key AS model, r.start_ns AS at_ns, {calls} AS calls,
                   {run_missing} AS calls_without_usage,
                   {run_in} AS input_tokens, {run_out} AS output_tokens,
                   {run_cached} AS cached_tokens, {run_reasoning} AS reasoning_tokens
            FROM runs r CROSS JOIN LATERAL jsonb_each(r.llm_usage) u
            WHERE r.llm_usage IS NOT NULL AND jsonb_typeof(r.llm_usage) = 'object'
              AND r.start_ns >= %(since)s AND r.start_ns < %(until)s
            UNION ALL
            SELECT coalesce(s.pipeline, r.pipeline),
                   coalesce(s.llm->>'response_model', s.llm->>'request_model',
                            s.llm->>'model', 'unknown'),
                   s.start_ns, 1,
                   CASE WHEN jsonb_typeof(s.llm->'usage') = 'object' THEN 0 ELSE 1 END,
                   {step_in}, {step_out}, {step_cached}, {step_reasoning}
            FROM steps s JOIN runs r ON r.run_id = s.run_id
            WHERE s.llm IS NOT NULL AND r.llm_usage IS NULL
              AND s.start_ns >= %(since)s AND s.start_ns < %(until)s
        )
        SELECT {select} {tail}
        """
    ).format(
        calls=calls,
        run_missing=_count("u.value->'calls_without_usage'"),
        run_in=run_tokens[0],
        run_out=run_tokens[1],
        run_cached=run_tokens[2],
        run_reasoning=run_tokens[3],
        step_in=step_tokens[0],
        step_out=step_tokens[1],
        step_cached=step_tokens[2],
        step_reasoning=step_tokens[3],
        select=select,
        tail=tail,
    )


_BUCKETED = _usage_sql(bucketed=True)
_SPAN = _usage_sql(bucketed=False)


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
            reasoning_tokens=row[8],
        )
        for row in rows
    ]


async def step_llm(pool: AsyncConnectionPool[Any], run_id: str, key: str) -> CallView | None:
    """The LLM call a step made, for the step panel; ``None`` when it made none."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT llm::text FROM steps WHERE run_id = %s AND key = %s", [run_id, key]
        )
        row = await cursor.fetchone()
    if row is None or row[0] is None:
        return None
    return call_view(msgspec.json.decode(row[0]))


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


def call_view(data: Any) -> CallView | None:
    """The step panel's view of a decoded ``steps.llm``; ``None`` when it is not an object.

    The cost is the server's, from the tokens and today's price table.
    """
    if not isinstance(data, dict):
        return None
    output = data.get("output")
    if isinstance(output, str):  # an older shape: the text itself
        output = {"text": output}
    if not isinstance(output, dict):
        output = {}
    model = (
        _str(data.get("response_model"))
        or _str(data.get("request_model"))
        or _str(data.get("model"))
        or "unknown"
    )
    usage = data.get("usage")
    tokens = None
    if isinstance(usage, dict):
        tokens = {name: _int(usage.get(name)) or 0 for name in TOKEN_FIELDS}
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
        cost_usd=(
            None
            if tokens is None
            else cost_usd(
                model, tokens["input_tokens"], tokens["output_tokens"], tokens["cached_tokens"]
            )
        ),
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

"""The record of an LLM call, and usage summed by model: pure data, no provider, no prices.

An LLM call is a step of kind ``llm`` whose :class:`LLMCall` travels as JSON text in
``StepFinished.llm``. Every field is optional on the wire (defaults are omitted)::

    {
      "provider": "openai",              # who served it (auto_patch: "openai")
      "operation": "chat",               # chat | responses | embeddings (or your own word)
      "request_model": "gpt-4o",         # the model asked for
      "response_model": "gpt-4o-2024-08-06",   # the model that answered
      "params": {"temperature": 0.2, "max_tokens": 100, "tools": [...],
                 "response_format": {...}, ...},  # every request argument but the input
      "messages": [...],                 # the input: chat messages, responses' input
                                         # (+ "instructions" in params), embeddings' input
      "output": {"text": "...",          # assembled text (chat: first choice)
                 "tool_calls": [{"id": "...", "name": "...", "arguments": "{...}"}],
                 "finish_reason": "stop",
                 "embeddings": 2, "dimensions": 1536},  # embeddings: how many, how long
      "usage": {"input_tokens": 12, "output_tokens": 30, "cached_tokens": 0,
                "cache_write_tokens": 0, "reasoning_tokens": 0, "total_tokens": 42},
      "cost_usd": 0.000112,              # the client's estimate; null: unknown model
      "latency_ns": 812000000,           # request sent to response complete (stream: last chunk)
      "time_to_first_token_ns": 95000000,  # streams: request sent to first content chunk
      "tokens_per_second": 41.2,         # streams with usage: output tokens / generation time
      "request_id": "req_...",           # the provider's x-request-id
      "response_id": "chatcmpl-...",
      "stream": true, "chunks": 31,      # a streamed call and how many chunks the caller got
      "stream_closed_early": true,       # the caller closed or abandoned the stream
      "raw_response": true,              # called through with_raw_response/with_streaming_response
      "status_code": 429,                # a failed call's HTTP status (the step's error says more)
      "error_code": "rate_limit_exceeded"
    }

Tokens are authoritative: ``input_tokens`` includes ``cached_tokens`` (read from the provider's
prompt cache) and ``cache_write_tokens`` (written to it: Anthropic's cache creation), and
``output_tokens`` includes ``reasoning_tokens`` (OpenAI's counting; a provider that counts
otherwise is converted by its reader). ``RunFinished.llm_usage`` is JSON text of
``{model: {calls, input_tokens, output_tokens, cached_tokens, cache_write_tokens,
reasoning_tokens, calls_without_usage, cost_usd}}``: the tokens and cost of the calls that
reported usage, ``null`` (unknown, never zero) when none did; ``cost_usd`` is also ``null`` when the
model's price is unknown. The server recomputes costs from tokens when it reads them.
``provider`` and ``operation`` are always present; absent booleans are false.

What needs a provider's readers or the prices (reading a response, pricing a call) is ``_llm``'s:
it prices each call when it is recorded, and summing adds up the stored ``cost_usd``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec

from pipelens._core import containment
from pipelens._core.capture import capture, short_repr
from pipelens._core.settings import settings

#: The seed's ``LLMTrack`` records responses under keys with this prefix.
TRACK_PREFIX = "__LLM_RESPONSE_"


class TokenUsage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Tokens of one call (or a sum): input includes cached, output includes reasoning."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int | None = None


class ToolCall(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A tool (function) call the model asked for; ``arguments`` is its JSON text."""

    id: str | None = None
    name: str | None = None
    arguments: str = ""
    type: str = "function"


class LLMOutput(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the model answered."""

    text: str | None = None
    tool_calls: list[ToolCall] = []
    finish_reason: str | None = None
    embeddings: int | None = None
    dimensions: int | None = None


class LLMCall(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One LLM call, as sent in ``StepFinished.llm`` (the module docstring shows the JSON)."""

    provider: str
    operation: str
    request_model: str | None = None
    response_model: str | None = None
    params: dict[str, Any] = {}
    messages: Any = None
    output: LLMOutput | None = None
    usage: TokenUsage | None = None
    cost_usd: float | None = None
    latency_ns: int | None = None
    time_to_first_token_ns: int | None = None
    tokens_per_second: float | None = None
    request_id: str | None = None
    response_id: str | None = None
    stream: bool = False
    chunks: int | None = None
    stream_closed_early: bool = False
    raw_response: bool = False
    status_code: int | None = None
    error_code: str | None = None

    @property
    def model(self) -> str:
        """The model usage is counted under: the one that answered, else the one asked for."""
        return self.response_model or self.request_model or "unknown"

    def set_usage(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> None:
        """Record the call's token counts (input includes cached, output includes reasoning)."""
        self.usage = TokenUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            cache_write_tokens=cache_write_tokens,
            reasoning_tokens=reasoning_tokens,
            total_tokens=input_tokens + output_tokens,
        )

    def set_output(
        self,
        text: str | None = None,
        tool_calls: list[ToolCall] | None = None,
        finish_reason: str | None = None,
    ) -> None:
        """Record what the model answered."""
        self.output = LLMOutput(text=text, tool_calls=tool_calls or [], finish_reason=finish_reason)

    def to_json(self) -> str | None:
        """The JSON text sent in ``StepFinished.llm``, its input cut down past the size cap."""
        try:
            data = _encoder.encode(self)
            limit = settings.max_value_bytes
            if len(data) > limit and self.messages is not None:
                # The input is what grows (a long conversation): cap it like a captured value.
                kept = msgspec.json.decode(capture(self.messages))
                data = _encoder.encode(msgspec.structs.replace(self, messages=_Cut(kept)))
            return data.decode()
        except Exception as exc:
            containment.internal_error("llm.to_json", exc)
            return None


class _Cut:
    """A value already cut to size, encoded as is."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _enc_hook(value: Any) -> Any:
    if isinstance(value, _Cut):
        return value.value
    return short_repr(value)


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


class ModelUsage(msgspec.Struct, kw_only=True):
    """Calls and tokens of one model over a run or a step's subtree, and their cost in USD.

    Token counts are ``None`` (unknown, never zero) until a call reports usage; they sum the
    calls that did, and ``calls_without_usage`` counts the others.
    """

    calls: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    #: Calls that reported no tokens (a stream without usage): the sums above leave them out.
    calls_without_usage: int = 0
    #: Of the calls that reported tokens; ``None``: none did, or one's model has no price.
    cost_usd: float | None = None

    def add_tokens(self, usage: TokenUsage) -> None:
        """Add one call's token counts."""
        self.input_tokens = (self.input_tokens or 0) + usage.input_tokens
        self.output_tokens = (self.output_tokens or 0) + usage.output_tokens
        self.cached_tokens = (self.cached_tokens or 0) + usage.cached_tokens
        self.cache_write_tokens = (self.cache_write_tokens or 0) + usage.cache_write_tokens
        self.reasoning_tokens = (self.reasoning_tokens or 0) + usage.reasoning_tokens


class _CallsOf(Protocol):
    """What summing reads of a step: its call and its records (``pipelens.Step`` is one)."""

    @property
    def llm(self) -> LLMCall | None: ...
    @property
    def _records(self) -> dict[str, Any] | None: ...


#: Reads a record of the seed's ``LLMTrack`` (a response's fields, a ``model`` among them) as the
#: call it stands for, priced. Set by ``_llm``, which knows the responses' shape and the prices.
TrackedReader = Callable[[dict[str, Any]], LLMCall]
_read_tracked: list[TrackedReader] = []


def read_tracked_records_with(reader: TrackedReader) -> None:
    """Count the seed's ``LLMTrack`` records in :func:`usage_by_model`, read by ``reader``."""
    _read_tracked[:] = [reader]


def usage_by_model(steps: Iterable[_CallsOf]) -> dict[str, ModelUsage]:
    """Calls, tokens and cost summed by model over ``steps`` (a step's ``walk()``).

    Counts the steps' LLM calls and the seed's ``LLMTrack.track`` records alike. A model's cost is
    the sum of its calls' ``cost_usd``; ``None`` when one that reported tokens has no price (or
    none reported tokens).
    """
    totals: dict[str, ModelUsage] = {}
    unpriced: set[str] = set()

    def add(call: LLMCall) -> None:
        model = call.model
        total = totals.get(model)
        if total is None:
            total = totals[model] = ModelUsage()
        total.calls += 1
        usage = call.usage
        if usage is None:
            total.calls_without_usage += 1
            return
        total.add_tokens(usage)
        if call.cost_usd is None:
            unpriced.add(model)
        else:
            total.cost_usd = (total.cost_usd or 0.0) + call.cost_usd

    read_tracked = _read_tracked[0] if _read_tracked else None
    for step in steps:
        call = step.llm
        if call is not None:
            add(call)
        records = step._records
        if records and read_tracked is not None:
            for key, value in list(records.items()):
                if (  # the seed's records dict can be written directly, with any key
                    isinstance(key, str)
                    and key.startswith(TRACK_PREFIX)
                    and isinstance(value, dict)
                    and value.get("model")
                ):
                    add(read_tracked(value))
    for model, total in totals.items():
        if model in unpriced or total.cost_usd is None:
            total.cost_usd = None
        else:
            total.cost_usd = round(total.cost_usd, 10)
    return totals


def usage_json(steps: Iterable[_CallsOf]) -> str | None:
    """JSON text of :func:`usage_by_model` (``None`` when there is none), for ``RunFinished``."""
    try:
        totals = usage_by_model(steps)
        return _encoder.encode(totals).decode() if totals else None
    except Exception as exc:
        containment.internal_error("llm.usage_json", exc)
        return None

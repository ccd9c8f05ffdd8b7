"""LLM calls: what one records, ``llm_call`` to record one by hand, and usage summed by model.

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
                "reasoning_tokens": 0, "total_tokens": 42},
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

Tokens are authoritative: ``input_tokens`` includes ``cached_tokens`` and ``output_tokens``
includes ``reasoning_tokens`` (OpenAI's counting). ``RunFinished.llm_usage`` is JSON text of
``{model: {calls, input_tokens, output_tokens, cached_tokens, reasoning_tokens,
calls_without_usage, cost_usd}}`` (``cost_usd`` ``null``: the model's price is unknown; it covers
the calls that reported tokens). The server recomputes costs from tokens when it reads them.
``provider`` and ``operation`` are always present; absent booleans are false.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from pipelens._core import containment
from pipelens._core.capture import capture, short_repr
from pipelens._core.settings import settings
from pipelens._core.step import Step, StepScope, _perf_ns, open_step, sanitize_name
from pipelens._llm.prices import cost_usd

F = TypeVar("F", bound=Callable[..., Any])

#: The seed's ``LLMTrack`` records responses under keys with this prefix.
TRACK_PREFIX = "__LLM_RESPONSE_"


class TokenUsage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Tokens of one call (or a sum): input includes cached, output includes reasoning."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
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
    ) -> None:
        """Record the call's token counts (input includes cached, output includes reasoning)."""
        self.usage = TokenUsage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
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

    def set_response(self, response: Any) -> None:
        """Fill model, output, usage and ids from an OpenAI-compatible response (or its dict)."""
        from pipelens._llm import openai

        openai.read_response(self, response)

    def to_json(self) -> str | None:
        """The JSON text sent in ``StepFinished.llm``, its input cut down past the size cap."""
        try:
            if self.cost_usd is None and self.usage is not None:
                u = self.usage
                self.cost_usd = cost_usd(
                    self.model, u.input_tokens, u.output_tokens, u.cached_tokens
                )
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
    """Calls and tokens of one model over a run or a step's subtree, and their cost in USD."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    #: Calls that reported no tokens (a stream without usage): the sums above leave them out.
    calls_without_usage: int = 0
    cost_usd: float | None = None


def usage_by_model(root: Step) -> dict[str, ModelUsage]:
    """Calls and tokens summed by model over ``root`` and its descendants.

    Counts the steps' LLM calls and the seed's ``LLMTrack.track`` records alike; a model whose
    price is unknown has ``cost_usd`` ``None``.
    """
    from pipelens._llm.openai import usage_from_openai

    totals: dict[str, ModelUsage] = {}

    def add(model: str, usage: TokenUsage | None) -> None:
        total = totals.get(model)
        if total is None:
            total = totals[model] = ModelUsage()
        total.calls += 1
        if usage is None:
            total.calls_without_usage += 1
        else:
            total.input_tokens += usage.input_tokens
            total.output_tokens += usage.output_tokens
            total.cached_tokens += usage.cached_tokens
            total.reasoning_tokens += usage.reasoning_tokens

    for step in root.walk():
        call = step.llm
        if call is not None:
            add(call.model, call.usage)
        records = step._records
        if records:
            for key, value in list(records.items()):
                if key.startswith(TRACK_PREFIX) and isinstance(value, dict) and value.get("model"):
                    add(str(value["model"]), usage_from_openai(value.get("usage")))
    for model, total in totals.items():
        total.cost_usd = cost_usd(
            model, total.input_tokens, total.output_tokens, total.cached_tokens
        )
    return totals


def usage_json(root: Step) -> str | None:
    """JSON text of :func:`usage_by_model` (``None`` when there is none), for ``RunFinished``."""
    try:
        totals = usage_by_model(root)
        return _encoder.encode(totals).decode() if totals else None
    except Exception as exc:
        containment.internal_error("llm.usage_json", exc)
        return None


def open_llm_step(call: LLMCall, name: str) -> Step:
    """Open a ``kind="llm"`` step for ``call`` under the current step (or as a new run)."""
    step = open_step(sanitize_name(name), None, kind="llm")
    step.llm = call
    step.run._has_llm = True
    return step


def close_llm_step(step: Step, exc: BaseException | None = None, result_text: Any = None) -> None:
    """End an LLM step: its latency, and completed or failed with ``exc``."""
    call: LLMCall = step.llm
    if call.latency_ns is None:
        call.latency_ns = _perf_ns() - step._t0
    if exc is not None:
        step._fail(exc)
        return
    if result_text is not None and settings.capture_result:
        step.result_json = capture(result_text)
    step._succeed(None, False)


class llm_call(StepScope[LLMCall]):  # noqa: N801 - used like a function: ``with pipelens.llm_call(...) as call:``
    """Record an LLM call of any client by hand, as a step of kind ``llm``.

    As a context manager it yields the :class:`LLMCall` to fill in::

        with pipelens.llm_call(provider="anthropic", model="claude-sonnet-4") as call:
            reply = client.messages.create(...)
            call.set_usage(reply.usage.input_tokens, reply.usage.output_tokens)
            call.set_output(reply.content[0].text)

    As a decorator, each call of the function is one LLM call; an OpenAI-compatible response it
    returns fills in the usage and output (unless the function set them itself).
    """

    __slots__ = ("_call", "_kwargs")

    def __init__(
        self,
        provider: str = "unknown",
        model: str | None = None,
        *,
        operation: str = "chat",
        name: str | None = None,
        messages: Any = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        for field, value in (("provider", provider), ("operation", operation)):
            if not isinstance(value, str):
                raise TypeError(f"llm_call({field}={value!r}): expected a string")
        self._kwargs: dict[str, Any] = {
            "provider": provider,
            "model": model,
            "operation": operation,
            "name": name,
            "messages": messages,
            "params": params,
        }

    def _new_call(self) -> LLMCall:
        kw = self._kwargs
        return LLMCall(
            provider=kw["provider"],
            operation=kw["operation"],
            request_model=kw["model"],
            messages=kw["messages"],
            params=dict(kw["params"] or {}),
        )

    def _open(self) -> Step:
        kw = self._kwargs
        return open_llm_step(self._call, kw["name"] or f"{kw['provider']}_{kw['operation']}")

    def _close(self, step: Step, exc: BaseException | None) -> None:
        output = self._call.output
        close_llm_step(step, exc, None if output is None else output.text)

    def __enter__(self) -> LLMCall:
        call = self._call = self._new_call()
        if settings.enabled:
            self._enter()
        return call

    def __call__(self, fn: F) -> F:
        """Use as a decorator: each call of ``fn`` is recorded as one LLM call."""
        kwargs = dict(self._kwargs)
        if kwargs["name"] is None:
            kwargs["name"] = getattr(fn, "__name__", None)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kw: Any) -> Any:
                with llm_call(**kwargs) as call:
                    result = await fn(*args, **kw)
                    _fill_from(call, result)
                    return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            with llm_call(**kwargs) as call:
                result = fn(*args, **kw)
                _fill_from(call, result)
                return result

        return wrapper  # type: ignore[return-value]


def _fill_from(call: LLMCall, result: Any) -> None:
    """Read an OpenAI-compatible ``result`` into ``call`` where the function left gaps."""
    if call.usage is not None or result is None:
        return
    try:
        usage = result.get("usage") if isinstance(result, dict) else getattr(result, "usage", None)
        if usage is not None:
            call.set_response(result)
    except Exception as exc:
        containment.internal_error("llm_call.fill", exc)

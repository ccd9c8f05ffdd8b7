"""OpenAI, as pure functions: which methods to patch, and what to read from requests, responses,
stream chunks and errors. The patching itself is generic (``_patch``); ``openai`` is imported only
by :func:`endpoints`, when the user patches it.

Works on ``openai`` objects (pydantic models) and on plain dicts of the same shape alike, so the
seed's ``LLMTrack`` records and ``llm_call`` results are read by the same code.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from pipelens._llm.call import LLMCall, LLMOutput, TokenUsage, ToolCall

PROVIDER = "openai"

#: (module, class, operation): each class's ``create`` is one endpoint; Azure uses the same ones.
_ENDPOINTS = (
    ("openai.resources.chat.completions", "Completions", "chat"),
    ("openai.resources.chat.completions", "AsyncCompletions", "chat"),
    ("openai.resources.responses", "Responses", "responses"),
    ("openai.resources.responses", "AsyncResponses", "responses"),
    ("openai.resources.embeddings", "Embeddings", "embeddings"),
    ("openai.resources.embeddings", "AsyncEmbeddings", "embeddings"),
)
#: The request argument that holds each operation's input.
_INPUT = {"chat": "messages", "responses": "input", "embeddings": "input"}
#: Request arguments that are not the call's parameters (or may carry credentials).
_NOT_PARAMS = frozenset(
    ("model", "stream", "messages", "input", "extra_headers", "extra_query", "timeout")
)
_RAW_HEADER = "X-Stainless-Raw-Response"


def endpoints() -> list[tuple[type, str, str]]:
    """``(class, method name, operation)`` of every endpoint the installed ``openai`` has."""
    found = []
    for module_name, class_name, operation in _ENDPOINTS:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):  # an older openai without this endpoint
            continue
        found.append((cls, "create", operation))
    return found


def stream_types() -> tuple[type, ...]:
    """The classes of a streamed result (sync and async)."""
    import openai

    return (openai.Stream, openai.AsyncStream)


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    fields = getattr(obj, "__dict__", None)
    if fields is not None:
        if name in fields:
            return fields[name]
        # A pydantic model's missing attribute goes through a slow __getattr__ that raises.
        if hasattr(type(obj), "__pydantic_fields__"):
            return None
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _given(value: Any) -> bool:
    # openai's NOT_GIVEN / omit sentinels mean "not passed".
    return type(value).__name__ not in ("NotGiven", "Omit")


def raw_mode(kwargs: dict[str, Any]) -> str | None:
    """``"true"`` under ``with_raw_response``, ``"stream"`` under ``with_streaming_response``."""
    headers = kwargs.get("extra_headers")
    if isinstance(headers, dict):
        mode = headers.get(_RAW_HEADER)
        return mode if isinstance(mode, str) else None
    return None


def request_call(operation: str, kwargs: dict[str, Any]) -> LLMCall:
    """The :class:`LLMCall` of a request, before it is sent."""
    messages = kwargs.get(_INPUT[operation])
    if isinstance(messages, list):
        messages = list(messages)  # the caller may append the next turn while a stream runs
    return LLMCall(
        provider=PROVIDER,
        operation=operation,
        request_model=kwargs.get("model") if isinstance(kwargs.get("model"), str) else None,
        params={k: v for k, v in kwargs.items() if k not in _NOT_PARAMS and _given(v)},
        messages=messages if _given(messages) else None,
        stream=kwargs.get("stream") is True,
        raw_response=raw_mode(kwargs) is not None,
    )


def with_stream_usage(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Request arguments asking for usage in a chat stream, or ``None`` when the caller chose."""
    if kwargs.get("stream") is not True or "stream_options" in kwargs:
        return None
    return {**kwargs, "stream_options": {"include_usage": True}}


def usage_from_openai(usage: Any) -> TokenUsage | None:
    """Token counts of a chat, responses or embeddings ``usage`` (object or dict)."""
    if usage is None:
        return None
    input_tokens = _get(usage, "input_tokens")
    if input_tokens is None:  # chat completions and embeddings
        input_tokens = _get(usage, "prompt_tokens")
        output_tokens = _get(usage, "completion_tokens")
        in_details = _get(usage, "prompt_tokens_details")
        out_details = _get(usage, "completion_tokens_details")
    else:
        output_tokens = _get(usage, "output_tokens")
        in_details = _get(usage, "input_tokens_details")
        out_details = _get(usage, "output_tokens_details")
    total = _get(usage, "total_tokens")
    return TokenUsage(
        input_tokens=_int(input_tokens),
        output_tokens=_int(output_tokens),
        cached_tokens=_int(_get(in_details, "cached_tokens")),
        reasoning_tokens=_int(_get(out_details, "reasoning_tokens")),
        total_tokens=total if isinstance(total, int) else None,
    )


def read_response(call: LLMCall, response: Any) -> None:
    """Fill ``call`` from a complete (non-streamed) response of its operation."""
    call.response_model = _get(response, "model") or call.response_model
    call.response_id = _get(response, "id") or call.response_id
    request_id = getattr(response, "_request_id", None)
    if isinstance(request_id, str):
        call.request_id = request_id
    usage = usage_from_openai(_get(response, "usage"))
    if usage is not None:
        call.usage = usage
    if call.operation == "embeddings" or _get(response, "object") == "list":
        data = _get(response, "data") or []
        first = _get(data[0], "embedding") if data else None
        call.output = LLMOutput(
            embeddings=len(data), dimensions=len(first) if isinstance(first, list) else None
        )
    elif call.operation == "responses" or _get(response, "object") == "response":
        call.output = _responses_output(response)
    else:
        call.output = _chat_output(response)


def _chat_output(response: Any) -> LLMOutput:
    choices = _get(response, "choices") or []
    if not choices:
        return LLMOutput()
    first = choices[0]
    message = _get(first, "message")
    tool_calls = [
        ToolCall(
            id=_get(tc, "id"),
            name=_get(_get(tc, "function"), "name"),
            arguments=_get(_get(tc, "function"), "arguments") or "",
            type=_get(tc, "type") or "function",
        )
        for tc in _get(message, "tool_calls") or []
    ]
    return LLMOutput(
        text=_get(message, "content"),
        tool_calls=tool_calls,
        finish_reason=_get(first, "finish_reason"),
    )


def _responses_output(response: Any) -> LLMOutput:
    texts: list[str] = []
    tool_calls: list[ToolCall] = []
    for item in _get(response, "output") or []:
        kind = _get(item, "type")
        if kind == "message":
            texts.extend(
                _get(part, "text") or ""
                for part in _get(item, "content") or []
                if _get(part, "type") == "output_text"
            )
        elif kind == "function_call":
            tool_calls.append(
                ToolCall(
                    id=_get(item, "call_id"),
                    name=_get(item, "name"),
                    arguments=_get(item, "arguments") or "",
                )
            )
    reason = _get(_get(response, "incomplete_details"), "reason") or _get(response, "status")
    return LLMOutput(
        text="".join(texts) if texts else None, tool_calls=tool_calls, finish_reason=reason
    )


def read_raw(call: LLMCall, raw: Any, mode: str | None) -> None:
    """Fill ``call`` from a ``with_raw_response`` result (parsing it: openai caches the parse).

    A ``with_streaming_response`` result, or a raw stream, keeps its unread body for the caller:
    only its request id is read.
    """
    request_id = getattr(raw, "request_id", None)
    if isinstance(request_id, str):
        call.request_id = request_id
    if mode == "true" and not call.stream:
        parsed = raw.parse()
        if inspect.isawaitable(parsed):  # a future openai whose async parse() is a coroutine
            close = getattr(parsed, "close", None)
            if close is not None:
                close()
            return
        read_response(call, parsed)


def read_error(call: LLMCall, exc: BaseException) -> None:
    """Fill ``call`` from an ``openai`` error: HTTP status, error code, request id."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        call.status_code = status
    code = getattr(exc, "code", None)
    if isinstance(code, str):
        call.error_code = code
    elif type(exc).__name__ == "APITimeoutError":
        call.error_code = "timeout"
    request_id = getattr(exc, "request_id", None)
    if isinstance(request_id, str):
        call.request_id = request_id


class ChatStream:
    """Assembles a streamed chat completion from its chunks."""

    __slots__ = ("finish_reason", "parts", "swallow_usage", "tool_calls")

    def __init__(self, swallow_usage: bool) -> None:
        self.parts: list[str] = []
        self.tool_calls: dict[int, ToolCall] = {}
        self.finish_reason: str | None = None
        self.swallow_usage = swallow_usage

    def feed(self, call: LLMCall, chunk: Any) -> tuple[bool, bool]:
        """Read one chunk: (hand it to the caller?, did it carry output?)."""
        model = _get(chunk, "model")
        if model:
            call.response_model = model
        if call.response_id is None:
            call.response_id = _get(chunk, "id")
        usage = _get(chunk, "usage")
        if usage is not None:
            call.usage = usage_from_openai(usage)
        choices = _get(chunk, "choices") or []  # empty on usage and content-filter chunks
        if not choices:
            return not (usage is not None and self.swallow_usage), False
        content = False
        for choice in choices:
            if _get(choice, "index") not in (0, None):  # n > 1: the first choice is recorded
                continue
            delta = _get(choice, "delta")
            text = _get(delta, "content")
            if text:
                self.parts.append(text)
                content = True
            for tc in _get(delta, "tool_calls") or []:
                slot = self.tool_calls.get(_int(_get(tc, "index")))
                if slot is None:
                    slot = self.tool_calls[_int(_get(tc, "index"))] = ToolCall()
                slot.id = _get(tc, "id") or slot.id
                function = _get(tc, "function")
                slot.name = _get(function, "name") or slot.name
                slot.arguments += _get(function, "arguments") or ""
                content = True
            reason = _get(choice, "finish_reason")
            if reason:
                self.finish_reason = reason
        return True, content

    def finish(self, call: LLMCall) -> None:
        """Put the assembled output on ``call``."""
        call.output = LLMOutput(
            text="".join(self.parts) if self.parts else None,
            tool_calls=[self.tool_calls[i] for i in sorted(self.tool_calls)],
            finish_reason=self.finish_reason,
        )


class ResponsesStream:
    """Assembles a streamed ``responses`` call from its events."""

    __slots__ = ("done", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.done = False

    def feed(self, call: LLMCall, event: Any) -> tuple[bool, bool]:
        """Read one event: (hand it to the caller?, did it carry output?)."""
        kind = _get(event, "type")
        if kind == "response.output_text.delta":
            self.parts.append(_get(event, "delta") or "")
            return True, True
        if kind == "response.function_call_arguments.delta":
            return True, True  # output too: the final response carries the whole call
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            read_response(call, _get(event, "response"))
            self.done = True
        elif kind == "response.created":
            response = _get(event, "response")
            call.response_model = _get(response, "model") or call.response_model
            call.response_id = _get(response, "id") or call.response_id
        return True, False

    def finish(self, call: LLMCall) -> None:
        """Put the assembled output on ``call`` (the final response's, when it came)."""
        if not self.done:
            call.output = LLMOutput(text="".join(self.parts) if self.parts else None)

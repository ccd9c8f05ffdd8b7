"""Anthropic, as pure functions: which methods to patch, and what to read from requests, messages,
stream events and errors — a :class:`~pipelens._llm.provider.Provider` (this module is one).

``messages.create`` (plain or ``stream=True``), ``messages.parse`` and the ``messages.stream(...)``
helper, of ``Anthropic``, ``AsyncAnthropic`` and the Bedrock and Vertex clients (which use the same
resource classes), and their ``beta`` twins. ``anthropic`` is imported only when the user patches
it. The SDK is generated like ``openai``'s: the same "not given" sentinels and the same mark on raw
calls, read by the ``openai`` module's functions.

Anthropic counts ``input_tokens`` without the prompt cache; our ``input_tokens`` includes both the
tokens read from the cache (``cached_tokens``) and those written to it (``cache_write_tokens``).
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

from pipelens._core.llm_record import LLMCall, LLMOutput, TokenUsage, ToolCall
from pipelens._llm.openai_compat import (
    as_int,
    fields_of,
    get,
    given,
    raw_mode,
    reader,
    request_id_of,
)
from pipelens._llm.provider import EndpointConfig, StreamState

__all__ = [
    "ENDPOINTS",
    "NAME",
    "MessagesStream",
    "raw_mode",
    "read_error",
    "read_raw",
    "read_response",
    "request_call",
    "stream_types",
    "trace_stream_helper",
    "usage_from_anthropic",
]

NAME: str = "anthropic"
#: Request arguments that are not the call's parameters (or may carry credentials); ``system``
#: stays a parameter, as openai's ``instructions`` does.
_NOT_PARAMS = frozenset(("model", "stream", "messages", "extra_headers", "extra_query", "timeout"))
#: Content blocks that are a tool call, and the ``ToolCall.type`` each is recorded as.
_TOOL_BLOCKS = {"tool_use": "function", "server_tool_use": "server_tool_use"}
_USAGE_FIELDS = (
    "input_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
)


def stream_types() -> tuple[type, ...]:
    """The classes of a streamed result (sync and async; Bedrock's subclass them)."""
    import anthropic

    return (anthropic.Stream, anthropic.AsyncStream)


def request_call(operation: str, kwargs: dict[str, Any]) -> LLMCall:
    """The :class:`LLMCall` of a request, before it is sent."""
    messages = kwargs.get("messages")
    if isinstance(messages, list):
        messages = list(messages)  # the caller may append the next turn while a stream runs
    model = kwargs.get("model")
    return LLMCall(
        provider=NAME,
        operation=operation,
        request_model=model if isinstance(model, str) else None,
        params={k: v for k, v in kwargs.items() if k not in _NOT_PARAMS and given(v)},
        messages=messages if given(messages) else None,
        stream=kwargs.get("stream") is True,
        raw_response=raw_mode(kwargs) is not None,
    )


def usage_from_anthropic(usage: Any) -> TokenUsage | None:
    """Our token counts of an Anthropic ``usage`` (object or dict): input includes the cache."""
    if usage is None:
        return None
    field = fields_of(usage).get
    fresh = value if type(value := field("input_tokens")) is int else 0
    read = value if type(value := field("cache_read_input_tokens")) is int else 0
    write = value if type(value := field("cache_creation_input_tokens")) is int else 0
    output = value if type(value := field("output_tokens")) is int else 0
    details = field("output_tokens_details")
    total_input = fresh + read + write
    return TokenUsage(
        input_tokens=total_input,
        output_tokens=output,
        cached_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=0 if details is None else as_int(get(details, "thinking_tokens")),
        total_tokens=total_input + output,
    )


def _tool_call(block: Any, kind: str, arguments: str | None = None) -> ToolCall:
    if arguments is None:  # a whole block: its input is an object, recorded as JSON text
        arguments = msgspec.json.encode(get(block, "input") or {}).decode()
    return ToolCall(
        id=get(block, "id"), name=get(block, "name"), arguments=arguments, type=_TOOL_BLOCKS[kind]
    )


def read_response(call: LLMCall, message: Any) -> None:
    """Fill ``call`` from a complete (non-streamed) message."""
    field = reader(message)
    call.response_model = field("model") or call.response_model
    call.response_id = field("id") or call.response_id
    request_id = request_id_of(message)
    if request_id is not None:
        call.request_id = request_id
    usage = usage_from_anthropic(field("usage"))
    if usage is not None:
        call.usage = usage
    texts: list[str] = []
    tool_calls: list[ToolCall] = []
    for block in field("content") or []:
        kind = get(block, "type")
        if kind == "text":
            texts.append(get(block, "text") or "")
        elif kind in _TOOL_BLOCKS:
            tool_calls.append(_tool_call(block, kind))
    call.output = LLMOutput(
        text="".join(texts) if texts else None,
        tool_calls=tool_calls,
        finish_reason=field("stop_reason"),
    )


def read_raw(call: LLMCall, raw: Any, mode: str | None) -> None:
    """Fill ``call`` from a ``with_raw_response`` result (the SDK caches the parse).

    An async raw response parses only when awaited, and a ``with_streaming_response`` result or a
    raw stream keeps its unread body for the caller: of those only the request id is read.
    """
    request_id = getattr(raw, "request_id", None)
    if isinstance(request_id, str):
        call.request_id = request_id
    if mode == "raw" and not call.stream and not inspect.iscoroutinefunction(raw.parse):
        read_response(call, raw.parse())


def read_error(call: LLMCall, exc: BaseException) -> None:
    """Fill ``call`` from an ``anthropic`` error: HTTP status, error type, request id."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:  # an error event mid-stream came with a 200
        call.status_code = status
    kind = getattr(exc, "type", None)  # the body's error.type: "overloaded_error", ...
    if isinstance(kind, str):
        call.error_code = kind
    elif type(exc).__name__ == "APITimeoutError":
        call.error_code = "timeout"
    request_id = getattr(exc, "request_id", None)
    if isinstance(request_id, str):
        call.request_id = request_id


def trace_stream_helper(manager: Any, trace: Any) -> None:
    """Trace the request a ``messages.stream(...)`` manager sends on ``__enter__``."""
    # The manager keeps it in a private attribute, name-mangled by its class.
    name = f"_{type(manager).__name__}__api_request"
    setattr(manager, name, trace(getattr(manager, name)))


class MessagesStream(StreamState):
    """Assembles a streamed message from its events (``message_start`` ... ``message_stop``)."""

    __slots__ = ("blocks", "counts", "finish_reason", "parts")

    def __init__(self, swallow_usage: bool = False) -> None:  # its usage comes in the events
        self.parts: list[str] = []
        #: Content block index → (the tool block that opened it, its argument pieces).
        self.blocks: dict[int, tuple[Any, list[str]]] = {}
        self.counts: dict[str, Any] = {}
        self.finish_reason: str | None = None

    def _add_usage(self, usage: Any) -> None:
        # message_start has the whole usage; message_delta the counts that changed (others null).
        fields = fields_of(usage)
        counts = self.counts
        for name in _USAGE_FIELDS:
            value = fields.get(name)
            if type(value) is int:
                counts[name] = value
        details = fields.get("output_tokens_details")
        if details is not None:
            counts["output_tokens_details"] = details

    def record_chunk(self, call: LLMCall, event: Any) -> tuple[bool, bool]:
        """Read one event: (hand it to the caller?, did it carry output?)."""
        fields = fields_of(event)  # once per event: the hot path of a stream
        kind = fields.get("type")
        if kind == "content_block_delta":
            delta = fields_of(fields.get("delta"))
            delta_kind = delta.get("type")
            if delta_kind == "text_delta":
                self.parts.append(delta.get("text") or "")
            elif delta_kind == "input_json_delta":
                block = self.blocks.get(as_int(fields.get("index")))
                if block is not None:
                    block[1].append(delta.get("partial_json") or "")
            return True, True  # thinking and citation deltas are output too
        if kind == "content_block_start":
            block = fields.get("content_block")
            if get(block, "type") in _TOOL_BLOCKS:
                self.blocks[as_int(fields.get("index"))] = (block, [])
        elif kind == "message_delta":
            self.finish_reason = get(fields.get("delta"), "stop_reason") or self.finish_reason
            usage = fields.get("usage")
            if usage is not None:
                self._add_usage(usage)
        elif kind == "message_start":
            message = fields_of(fields.get("message"))
            call.response_model = message.get("model") or call.response_model
            call.response_id = message.get("id") or call.response_id
            usage = message.get("usage")
            if usage is not None:
                self._add_usage(usage)
        return True, False

    def finish(self, call: LLMCall) -> None:
        """Put the assembled output and the usage the events counted on ``call``."""
        if self.counts:  # read once, here: two events a stream carry usage
            call.usage = usage_from_anthropic(self.counts)
        tool_calls = []
        for index in sorted(self.blocks):
            block, pieces = self.blocks[index]
            # No argument pieces (a tool without input): the start block's own input.
            arguments = "".join(pieces) if pieces else None
            tool_calls.append(_tool_call(block, get(block, "type"), arguments))
        call.output = LLMOutput(
            text="".join(self.parts) if self.parts else None,
            tool_calls=tool_calls,
            finish_reason=self.finish_reason,
        )


def _endpoints(module: str) -> tuple[EndpointConfig, ...]:
    """``create``, ``parse`` and the ``stream`` helper of one module's sync and async class."""
    header = "request-id"
    return tuple(
        EndpointConfig(
            module,
            cls,
            method,
            "chat",
            MessagesStream,
            trace_later=trace_stream_helper if method == "stream" else None,
            request_id_header=header,
        )
        for cls in ("Messages", "AsyncMessages")
        for method in ("create", "parse", "stream")
    )


#: ``client.messages`` and ``client.beta.messages``; Bedrock and Vertex clients use these classes.
ENDPOINTS: tuple[EndpointConfig, ...] = (
    *_endpoints("anthropic.resources.messages.messages"),
    *_endpoints("anthropic.resources.beta.messages.messages"),
)

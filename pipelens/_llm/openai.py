"""OpenAI, as pure functions: which methods to patch, and what to read from requests, responses,
stream chunks and errors — a :class:`~pipelens._llm.provider.Provider` (this module is one).

The patching itself is generic (``patch``); ``openai`` is imported only when the user patches it.
Responses are read by :mod:`pipelens._llm.openai_compat`, shared with ``llm_call``.
"""

from __future__ import annotations

import inspect
from typing import Any

from pipelens._core.llm_record import LLMCall, LLMOutput, ToolCall
from pipelens._llm.openai_compat import (
    as_int,
    get,
    given,
    raw_mode,
    read_response,
    reader,
    usage_from_openai,
)
from pipelens._llm.provider import EndpointConfig, StreamState

__all__ = [
    "ENDPOINTS",
    "NAME",
    "ChatStream",
    "ResponsesStream",
    "raw_mode",
    "read_error",
    "read_raw",
    "read_response",
    "request_call",
    "stream_types",
    "with_stream_usage",
]

NAME: str = "openai"
#: The request argument that holds each operation's input.
_INPUT = {"chat": "messages", "responses": "input", "embeddings": "input"}
#: Request arguments that are not the call's parameters (or may carry credentials).
_NOT_PARAMS = frozenset(
    ("model", "stream", "messages", "input", "extra_headers", "extra_query", "timeout")
)


def stream_types() -> tuple[type, ...]:
    """The classes of a streamed result (sync and async)."""
    import openai

    return (openai.Stream, openai.AsyncStream)


def request_call(operation: str, kwargs: dict[str, Any]) -> LLMCall:
    """The :class:`LLMCall` of a request, before it is sent."""
    messages = kwargs.get(_INPUT[operation])
    if isinstance(messages, list):
        messages = list(messages)  # the caller may append the next turn while a stream runs
    return LLMCall(
        provider=NAME,
        operation=operation,
        request_model=kwargs.get("model") if isinstance(kwargs.get("model"), str) else None,
        params={k: v for k, v in kwargs.items() if k not in _NOT_PARAMS and given(v)},
        messages=messages if given(messages) else None,
        stream=kwargs.get("stream") is True,
        raw_response=raw_mode(kwargs) is not None,
    )


#: The API known to take ``stream_options``; OpenAI-compatible servers (older Azure API
#: versions, local servers, proxies) may answer 400 to an argument they do not know.
_USAGE_SAFE_HOSTS = frozenset(("api.openai.com",))


def with_stream_usage(kwargs: dict[str, Any], resource: Any, always: bool) -> dict[str, Any] | None:
    """Request arguments asking for usage in a chat stream, or ``None``: the caller chose, the
    call is raw (its caller reads every chunk or byte), or — unless ``always`` — the client's
    server is not one known to take the argument.

    The ask goes in ``extra_body``, which the SDK merges into the JSON body as is: the typed
    ``stream_options`` argument runs the SDK's TypedDict transform, 26 µs a call against 8.6
    (openai 3.57); the body sent is the same.
    """
    if kwargs.get("stream") is not True or raw_mode(kwargs):
        return None
    if "stream_options" in kwargs and given(kwargs["stream_options"]):
        return None  # the caller chose (the stream helpers pass openai's ``omit`` when not)
    extra = kwargs.get("extra_body")
    if extra is not None and given(extra) and not isinstance(extra, dict):
        return None  # a body of the caller's own making: left as it is
    if isinstance(extra, dict) and "stream_options" in extra:
        return None  # the caller chose, in the raw body
    if not always and _host(resource) not in _USAGE_SAFE_HOSTS:
        return None
    base = extra if isinstance(extra, dict) else {}
    return {**kwargs, "extra_body": {**base, "stream_options": {"include_usage": True}}}


def _host(resource: Any) -> Any:
    """The host of ``resource``'s client, read from its ``_base_url`` where it keeps one: the
    ``base_url`` property of openai 3.x imports a module on every read (2 µs)."""
    client = getattr(resource, "_client", None)
    fields = getattr(client, "__dict__", None)
    base_url = fields.get("_base_url") if isinstance(fields, dict) else None
    if base_url is None:
        base_url = getattr(client, "base_url", None)
    return getattr(base_url, "host", None)


def read_raw(call: LLMCall, raw: Any, mode: str | None) -> None:
    """Fill ``call`` from a ``with_raw_response`` result (parsing it: openai caches the parse).

    A ``with_streaming_response`` result, or a raw stream, keeps its unread body for the caller:
    only its request id is read here (the engine watches a raw stream once the caller parses it).
    """
    request_id = getattr(raw, "request_id", None)
    if isinstance(request_id, str):
        call.request_id = request_id
    if mode == "true" and not call.stream:
        try:
            parsed = raw.parse()
        except Exception:  # ``with_raw_response.parse`` refusing the answer: the caller meets
            return  # the same error when it parses, and the step has no output to show
        if inspect.isawaitable(parsed):  # a future openai whose async parse() is a coroutine
            close = getattr(parsed, "close", None)
            if close is not None:
                close()
            return
        read_response(call, parsed)


def read_error(call: LLMCall, exc: BaseException) -> None:
    """Fill ``call`` from an ``openai`` error: HTTP status, error code, request id; and from the
    completion a ``parse`` refused (``LengthFinishReasonError``): its model, usage and output."""
    completion = getattr(exc, "completion", None)
    if completion is not None:
        read_response(call, completion)
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


class ChatStream(StreamState):
    """Assembles a streamed chat completion from its chunks."""

    __slots__ = ("finish_reason", "parts", "swallow_usage", "tool_calls")

    def __init__(self, swallow_usage: bool) -> None:
        self.parts: list[str] = []
        self.tool_calls: dict[int, ToolCall] = {}
        self.finish_reason: str | None = None
        self.swallow_usage = swallow_usage

    def record_chunk(self, call: LLMCall, chunk: Any) -> tuple[bool, bool]:
        """Read one chunk: (hand it to the caller?, did it carry output?).

        Each object is read through one :func:`reader` (a dict lookup a field), not :func:`get`
        a field: this runs for every chunk on the caller's thread.
        """
        field = reader(chunk)
        model = field("model")
        if model:
            call.response_model = model
        if call.response_id is None:
            call.response_id = field("id")
        usage = field("usage")
        if usage is not None:
            call.usage = usage_from_openai(usage)
        elif self.swallow_usage:
            # Asked for usage, the API adds "usage": null to every other chunk: unset it again,
            # so the caller's chunk is the one it would get without PipeLens (to_dict(),
            # model_dump(exclude_unset=True) and model_fields_set included).
            fields_set = getattr(chunk, "__pydantic_fields_set__", None)
            if isinstance(fields_set, set):
                fields_set.discard("usage")
        choices = field("choices") or []  # empty on usage and content-filter chunks
        if not choices:
            return not (usage is not None and self.swallow_usage), False
        content = False
        for choice in choices:
            choice_field = reader(choice)
            if choice_field("index") not in (0, None):  # n > 1: the first choice is recorded
                continue
            delta = reader(choice_field("delta"))
            text = delta("content")
            if text:
                self.parts.append(text)
                content = True
            for tc in delta("tool_calls") or []:
                slot = self.tool_calls.get(as_int(get(tc, "index")))
                if slot is None:
                    slot = self.tool_calls[as_int(get(tc, "index"))] = ToolCall()
                slot.id = get(tc, "id") or slot.id
                function = get(tc, "function")
                slot.name = get(function, "name") or slot.name
                slot.arguments += get(function, "arguments") or ""
                content = True
            reason = choice_field("finish_reason")
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


class ResponsesStream(StreamState):
    """Assembles a streamed ``responses`` call from its events."""

    __slots__ = ("done", "parts")

    def __init__(self, swallow_usage: bool = False) -> None:  # its usage comes in the final event
        self.parts: list[str] = []
        self.done = False

    def record_chunk(self, call: LLMCall, event: Any) -> tuple[bool, bool]:
        """Read one event: (hand it to the caller?, did it carry output?)."""
        kind = get(event, "type")
        if kind == "response.output_text.delta":
            self.parts.append(get(event, "delta") or "")
            return True, True
        if kind == "response.function_call_arguments.delta":
            return True, True  # output too: the final response carries the whole call
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            read_response(call, get(event, "response"))
            self.done = True
        elif kind == "response.created":
            response = get(event, "response")
            call.response_model = get(response, "model") or call.response_model
            call.response_id = get(response, "id") or call.response_id
        return True, False

    def finish(self, call: LLMCall) -> None:
        """Put the assembled output on ``call`` (the final response's, when it came)."""
        if not self.done:
            call.output = LLMOutput(text="".join(self.parts) if self.parts else None)


def _endpoints(module: str, operation: str, *methods: str) -> tuple[EndpointConfig, ...]:
    """The endpoints of ``methods`` on the sync class of ``module`` and its ``Async`` twin."""
    class_name = {"chat": "Completions", "responses": "Responses", "embeddings": "Embeddings"}
    stream = ChatStream if operation == "chat" else ResponsesStream
    ask = with_stream_usage if operation == "chat" else None
    return tuple(
        EndpointConfig(module, prefix + class_name[operation], method, operation, stream, ask)
        for prefix in ("", "Async")
        for method in methods
    )


#: Each class's ``create`` and ``parse``. ``parse`` posts the request itself and the stream
#: helpers (``chat.completions.stream``, ``responses.stream``) call ``create(stream=True)``, so
#: each call is one step; ``responses.stream(response_id=...)`` calls a streamed ``retrieve``.
#: ``client.beta.chat.completions`` is the same class; the beta
#: ``responses`` is its own (``create`` only). Azure uses the same classes.
ENDPOINTS: tuple[EndpointConfig, ...] = (
    *_endpoints("openai.resources.chat.completions", "chat", "create", "parse"),
    *_endpoints("openai.resources.responses", "responses", "create", "parse"),
    *_endpoints("openai.resources.beta.responses", "responses", "create"),
    *(
        endpoint._replace(positional=("response_id",), only_streams=True)
        for endpoint in _endpoints("openai.resources.responses", "responses", "retrieve")
    ),
    *_endpoints("openai.resources.embeddings", "embeddings", "create"),
)

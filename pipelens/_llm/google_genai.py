"""google-genai (``from google import genai``), as pure functions: which methods to patch, and
what to read from requests, responses, stream chunks and errors — a
:class:`~pipelens._llm.provider.Provider` (this module is one).

Gemini counts tokens its own way; :func:`usage_from_gemini` converts them to ours (input includes
cached, output includes thoughts). ``google.genai`` is imported only when the user patches it.
"""

from __future__ import annotations

import json
import types
from enum import Enum
from typing import Any

from pipelens._core.llm_record import LLMCall, LLMOutput, TokenUsage, ToolCall
from pipelens._llm.openai_compat import as_int, fields_of, get, reader
from pipelens._llm.provider import EndpointConfig, StreamState, Watch

__all__ = [
    "ENDPOINTS",
    "NAME",
    "GeminiStream",
    "attach_stream",
    "raw_mode",
    "read_error",
    "read_raw",
    "read_response",
    "request_call",
    "stream_types",
    "usage_from_gemini",
]

NAME: str = "gemini"
#: Config fields that are not the call's parameters: how the request is sent (headers, keys).
_NOT_PARAMS = frozenset(("http_options",))


def stream_types() -> tuple[type, ...]:
    """The classes of a streamed result: the SDK's own generators (sync and async)."""
    return (types.GeneratorType, types.AsyncGeneratorType)


def raw_mode(kwargs: dict[str, Any]) -> str | None:
    """google-genai has no raw mode."""
    return None


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data: the SDK's pydantic models dumped, lists and dicts walked."""
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json", exclude_none=True)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def request_call(operation: str, kwargs: dict[str, Any]) -> LLMCall:
    """The :class:`LLMCall` of a request: its contents, and its config (system instruction and
    generation settings) as params."""
    config = _plain(kwargs.get("config"))
    params = (
        {k: v for k, v in config.items() if v is not None and k not in _NOT_PARAMS}
        if isinstance(config, dict)
        else {}
    )
    model = kwargs.get("model")
    return LLMCall(
        provider=NAME,
        operation=operation,
        request_model=model if isinstance(model, str) else None,
        params=params,
        messages=_plain(kwargs.get("contents")),
    )


def usage_from_gemini(usage: Any) -> TokenUsage | None:
    """Our token counts of Gemini's ``usage_metadata``: its prompt count already holds the cached
    tokens, its candidates count leaves out the thoughts (ours includes them)."""
    if usage is None:
        return None
    thoughts = as_int(get(usage, "thoughts_token_count"))
    total = get(usage, "total_token_count")
    return TokenUsage(
        input_tokens=as_int(get(usage, "prompt_token_count"))
        + as_int(get(usage, "tool_use_prompt_token_count")),
        output_tokens=as_int(get(usage, "candidates_token_count")) + thoughts,
        cached_tokens=as_int(get(usage, "cached_content_token_count")),
        reasoning_tokens=thoughts,
        total_tokens=total if isinstance(total, int) else None,
    )


def _reason(value: Any) -> str | None:
    if isinstance(value, Enum):
        return str(value.value)
    return value if isinstance(value, str) else None


def _read_meta(call: LLMCall, response: Any) -> None:
    field = reader(response)
    call.response_model = field("model_version") or call.response_model
    call.response_id = field("response_id") or call.response_id
    usage = usage_from_gemini(field("usage_metadata"))
    if usage is not None:
        call.usage = usage


def _parts(response: Any) -> list[Any]:
    candidates = get(response, "candidates") or []
    return (get(get(candidates[0], "content"), "parts") or []) if candidates else []


def _tool_call(part: Any) -> ToolCall | None:
    function = get(part, "function_call")
    if function is None:
        return None
    return ToolCall(
        id=get(function, "id"),
        name=get(function, "name"),
        arguments=json.dumps(get(function, "args") or {}),
    )


def read_response(call: LLMCall, response: Any) -> None:
    """Fill ``call`` from a complete response (its first candidate's text, thoughts left out)."""
    _read_meta(call, response)
    parts = _parts(response)
    texts = [get(p, "text") for p in parts if get(p, "text") and not get(p, "thought")]
    tools = [tc for tc in map(_tool_call, parts) if tc is not None]
    candidates = get(response, "candidates") or []
    call.output = LLMOutput(
        text="".join(texts) if texts else None,
        tool_calls=tools,
        finish_reason=_reason(get(candidates[0], "finish_reason")) if candidates else None,
    )


def read_raw(call: LLMCall, raw: Any, mode: str | None) -> None:
    """google-genai has no raw mode: nothing to read."""


def read_error(call: LLMCall, exc: BaseException) -> None:
    """Fill ``call`` from a ``google.genai.errors.APIError``: HTTP status and Google's status."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        call.status_code = code
    status = getattr(exc, "status", None)
    if isinstance(status, str):
        call.error_code = status


class GeminiStream(StreamState):
    """Assembles a streamed ``generate_content`` from its chunks (each a partial response).

    Each chunk's fields are read once from its ``__dict__`` (a stream's hot path), and the
    usage each chunk repeats is converted once, at the end, from the last chunk's.
    """

    __slots__ = ("finish_reason", "parts", "tool_calls", "usage")

    def __init__(self, swallow_usage: bool = False) -> None:  # usage comes unasked
        self.parts: list[str] = []
        self.tool_calls: list[ToolCall] = []
        self.finish_reason: str | None = None
        self.usage: Any = None

    def record_chunk(self, call: LLMCall, chunk: Any) -> tuple[bool, bool]:
        """Read one chunk: (hand it to the caller?, did it carry output?)."""
        fields = fields_of(chunk)
        version = fields.get("model_version")
        if version:
            call.response_model = version
        if call.response_id is None:
            call.response_id = fields.get("response_id")
        usage = fields.get("usage_metadata")
        if usage is not None:
            self.usage = usage
        candidates = fields.get("candidates")
        if not candidates:
            return True, False
        candidate = fields_of(candidates[0])
        content = False
        for part in fields_of(candidate.get("content")).get("parts") or ():
            part_fields = fields_of(part)
            text = part_fields.get("text")
            if text and not part_fields.get("thought"):
                self.parts.append(text)
                content = True
            if part_fields.get("function_call") is not None:
                tool = _tool_call(part)
                if tool is not None:
                    self.tool_calls.append(tool)
                content = True
        reason = candidate.get("finish_reason")
        if reason:
            self.finish_reason = _reason(reason)
        return True, content

    def finish(self, call: LLMCall) -> None:
        """Put the assembled output and the last usage on ``call``."""
        usage = usage_from_gemini(self.usage)
        if usage is not None:
            call.usage = usage
        call.output = LLMOutput(
            text="".join(self.parts) if self.parts else None,
            tool_calls=self.tool_calls,
            finish_reason=self.finish_reason,
        )


def attach_stream(watch: Watch, call: LLMCall, stream: Any) -> Any:
    """A generator of the SDK's generator's chunks, each read on its way to the caller."""
    if isinstance(stream, types.AsyncGeneratorType):
        return watch.aiterate(stream)
    return watch.iterate(stream)


def _endpoint(class_name: str, method: str) -> EndpointConfig:
    return EndpointConfig(
        "google.genai.models",
        class_name,
        method,
        "chat",
        GeminiStream,
        attach_stream=attach_stream,
        streams=method.endswith("_stream"),
    )


#: ``client.models`` and ``client.aio.models``; a chat session's messages go through them too.
ENDPOINTS: tuple[EndpointConfig, ...] = (
    _endpoint("Models", "generate_content"),
    _endpoint("Models", "generate_content_stream"),
    _endpoint("AsyncModels", "generate_content"),
    _endpoint("AsyncModels", "generate_content_stream"),
)

"""A GenAI span's attributes read as our LLM call record (the ``StepFinished.llm`` shape that
``pipelens/_core/llm_record.py`` documents), from either convention an instrumentation follows:

* the OpenTelemetry GenAI semantic conventions: ``gen_ai.provider.name`` (older
  ``gen_ai.system``), ``gen_ai.operation.name`` (OpenLLMetry's ``llm.request.type``),
  ``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.request.*`` parameters,
  ``gen_ai.usage.input_tokens``/``output_tokens`` (older ``prompt_tokens``/``completion_tokens``),
  ``gen_ai.input.messages``/``gen_ai.output.messages`` (JSON text of messages made of parts), the
  older indexed ``gen_ai.prompt.N.*``/``gen_ai.completion.N.*`` attributes and the older
  ``gen_ai.content.prompt``/``gen_ai.content.completion`` and per-message events,
  ``gen_ai.response.finish_reasons``, ``gen_ai.response.id``;
* OpenInference: ``openinference.span.kind`` ``LLM``/``EMBEDDING``, ``llm.provider``/``llm.system``,
  ``llm.model_name``, ``llm.invocation_parameters`` (JSON text), ``llm.token_count.*``,
  ``llm.input_messages.N.message.*`` and ``llm.output_messages.N.message.*`` (tool calls too).

Nothing here prices a call: the server prices tokens and model at read time. Token counts that
are not whole numbers from 0 to :data:`MAX_TOKENS` make the span refused (the usage pages sum
them), as ``_checks.check_llm`` refuses them in our own events.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipelens_server._ingest._checks import MAX_TOKENS

Attributes = dict[str, Any]

#: Where each token count may be, first found wins (OTel GenAI, its older names, OpenInference,
#: OpenLLMetry).
_TOKENS = {
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    ),
    "cached_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ),
    "cache_write_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ),
    "reasoning_tokens": (
        "gen_ai.usage.reasoning_tokens",
        "gen_ai.usage.reasoning.output_tokens",
        "llm.token_count.completion_details.reasoning",
    ),
    "total_tokens": (
        "llm.token_count.total",
        "llm.usage.total_tokens",
        "gen_ai.usage.total_tokens",
    ),
}
_MARKS = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.system",
        "gen_ai.request.model",
        "llm.request.type",  # OpenLLMetry's older spans
    }
)
_STREAMING = ("gen_ai.request.stream", "gen_ai.is_streaming", "llm.is_streaming")
_OPENINFERENCE_LLM = frozenset({"LLM", "EMBEDDING"})
_OPERATIONS = {
    "text_completion": "completion",
    "completion": "completion",
    "embedding": "embeddings",
}
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


class TokenCountError(ValueError):
    """A token count that is not a whole number from 0 to :data:`MAX_TOKENS` (names it)."""


def is_llm_span(attributes: Attributes) -> bool:
    """Whether the span is an LLM call by either convention."""
    kind = attributes.get("openinference.span.kind")
    if kind is not None:
        return kind in _OPENINFERENCE_LLM
    return not _MARKS.isdisjoint(attributes)


def llm_call(
    attributes: Attributes, events: list[tuple[str, Attributes]], duration_ns: int
) -> dict[str, Any]:
    """The LLM call a GenAI span records (``events``: its events' names and attributes).

    Raises:
        TokenCountError: a token count out of range.
    """
    get = attributes.get
    provider = get("gen_ai.provider.name") or get("gen_ai.system") or get("llm.provider")
    operation = get("gen_ai.operation.name") or get("llm.request.type")
    if operation is None and get("openinference.span.kind") == "EMBEDDING":
        operation = "embeddings"
    call: dict[str, Any] = {
        "provider": str(provider or get("llm.system") or "unknown"),
        "operation": _OPERATIONS.get(str(operation), str(operation or "chat")),
    }
    invocation = _json_object(get("llm.invocation_parameters"))
    request_model = get("gen_ai.request.model") or invocation.get("model")
    response_model = get("gen_ai.response.model") or get("llm.model_name")
    if request_model is not None:
        call["request_model"] = str(request_model)
    if response_model is not None:
        call["response_model"] = str(response_model)
    elif request_model is not None:
        call["response_model"] = str(request_model)
    params = {k: v for k, v in invocation.items() if k not in ("model", "messages")}
    prefix = "gen_ai.request."
    for name, value in attributes.items():
        if name.startswith(prefix) and name != "gen_ai.request.model":
            params[name[len(prefix) :]] = value
    if params:
        call["params"] = params
    messages = _input_messages(attributes, events)
    if messages:
        call["messages"] = messages
    output = _output(attributes, events)
    if output:
        call["output"] = output
    usage = _usage(attributes)
    if usage:
        call["usage"] = usage
    if (response_id := get("gen_ai.response.id")) is not None:
        call["response_id"] = str(response_id)
    if any(get(name) is True for name in _STREAMING):
        call["stream"] = True
    call["latency_ns"] = duration_ns
    return call


def _usage(attributes: Attributes) -> dict[str, int]:
    usage: dict[str, int] = {}
    for field, names in _TOKENS.items():
        for name in names:
            count = attributes.get(name)
            if count is None:
                continue
            if isinstance(count, float) and count.is_integer():
                count = int(count)
            if (
                isinstance(count, bool)
                or not isinstance(count, int)
                or not 0 <= count <= MAX_TOKENS
            ):
                raise TokenCountError(
                    f"attribute {name} must be a token count from 0 to {MAX_TOKENS}, "
                    f"got {msgspec.json.encode(count).decode()[:40]}"
                )
            usage[field] = count
            break
    return usage


def _input_messages(attributes: Attributes, events: list[tuple[str, Attributes]]) -> list[Any]:
    structured = _json_list(attributes.get("gen_ai.input.messages"))
    if structured:
        return [_from_parts(m) for m in structured]
    for prefix in ("gen_ai.prompt.", "llm.input_messages."):
        indexed = _indexed(attributes, prefix)
        if indexed:
            return indexed
    messages: list[Any] = []
    for name, attrs in events:
        if name == "gen_ai.content.prompt":
            messages.extend(_json_list(attrs.get("gen_ai.prompt")))
        elif name in _MESSAGE_EVENTS:
            messages.append({"role": attrs.get("role", _MESSAGE_EVENTS[name]), **attrs})
    return messages


def _output(attributes: Attributes, events: list[tuple[str, Attributes]]) -> dict[str, Any]:
    output: dict[str, Any] = {}
    messages = [_from_parts(m) for m in _json_list(attributes.get("gen_ai.output.messages"))]
    if not messages:
        for prefix in ("gen_ai.completion.", "llm.output_messages."):
            if messages := _indexed(attributes, prefix):
                break
    if not messages:
        for name, attrs in events:
            if name == "gen_ai.content.completion":
                messages.extend(_json_list(attrs.get("gen_ai.completion")))
            elif name == "gen_ai.choice":
                message = _json_object(attrs.get("message")) or dict(attrs)
                if "finish_reason" in attrs:
                    message["finish_reason"] = attrs["finish_reason"]
                messages.append(message)
    if messages and isinstance(messages[0], dict):
        first = messages[0]
        content = first.get("content")
        if isinstance(content, str):
            output["text"] = content
        calls = first.get("tool_calls")
        if isinstance(calls, list) and calls:
            output["tool_calls"] = calls
        if first.get("finish_reason") is not None:
            output["finish_reason"] = first["finish_reason"]
    reasons = attributes.get("gen_ai.response.finish_reasons") or attributes.get(
        "llm.finish_reason"
    )
    if isinstance(reasons, list) and reasons:
        output["finish_reason"] = reasons[0]
    elif isinstance(reasons, str):
        output["finish_reason"] = reasons
    return output


def _indexed(attributes: Attributes, prefix: str) -> list[Any]:
    """``prefix.N.field`` attributes as a list of messages (OpenInference's ``message.`` and
    ``tool_call.`` levels dropped), tool calls gathered as our ``ToolCall`` shape."""
    found: dict[int, dict[str, Any]] = {}
    for name, value in attributes.items():
        if not name.startswith(prefix):
            continue
        index, _, field = name[len(prefix) :].partition(".")
        if not index.isdigit() or not field:
            continue
        message = found.setdefault(int(index), {})
        field = field.removeprefix("message.")
        if field.startswith("tool_calls."):
            call_index, _, call_field = field[len("tool_calls.") :].partition(".")
            if call_index.isdigit():
                calls = message.setdefault("tool_calls", {})
                call = calls.setdefault(int(call_index), {})
                call_field = call_field.removeprefix("tool_call.").removeprefix("function.")
                call[call_field] = value
            continue
        message[field] = value
    messages = []
    for _, message in sorted(found.items()):
        if "tool_calls" in message:
            message["tool_calls"] = [call for _, call in sorted(message["tool_calls"].items())]
        messages.append(message)
    return messages


def _from_parts(message: Any) -> Any:
    """A GenAI semconv message (``{"role", "parts": [...]}``) in the chat shape our pages read:
    text parts joined into ``content``, ``tool_call`` parts as ``tool_calls``."""
    if not isinstance(message, dict) or not isinstance(message.get("parts"), list):
        return message
    out = {k: v for k, v in message.items() if k != "parts"}
    texts, calls, others = [], [], []
    for part in message["parts"]:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("content"), str):
            texts.append(part["content"])
        elif kind == "tool_call":
            arguments = part.get("arguments")
            if not isinstance(arguments, str):
                arguments = msgspec.json.encode(arguments).decode()
            calls.append({"id": part.get("id"), "name": part.get("name"), "arguments": arguments})
        else:
            others.append(part)
    if texts:
        out["content"] = "".join(texts)
    if calls:
        out["tool_calls"] = calls
    if others:
        out["parts"] = others
    return out


def _json_list(value: Any) -> list[Any]:
    decoded = _decode(value)
    return decoded if isinstance(decoded, list) else []


def _json_object(value: Any) -> dict[str, Any]:
    decoded = _decode(value)
    return decoded if isinstance(decoded, dict) else {}


def _decode(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return msgspec.json.decode(value)
    except (msgspec.DecodeError, RecursionError):
        return None


#: The attributes and events whose content an LLM call holds (its messages and output): kept
#: in the call only, not again among the step's records.
_MESSAGE_ATTRIBUTES = frozenset({"gen_ai.input.messages", "gen_ai.output.messages"})
_MESSAGE_PREFIXES = (
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "llm.input_messages.",
    "llm.output_messages.",
)
_TEXT_EVENTS = frozenset(
    {"gen_ai.content.prompt", "gen_ai.content.completion", "gen_ai.choice", *_MESSAGE_EVENTS}
)


def without_llm_texts(attributes: Attributes) -> dict[str, Any]:
    """An LLM span's attributes without those its call holds (the messages, the output)."""
    return {
        k: v
        for k, v in attributes.items()
        if k not in _MESSAGE_ATTRIBUTES and not k.startswith(_MESSAGE_PREFIXES)
    }


def is_llm_text_event(name: str) -> bool:
    """Whether an LLM span's event named ``name`` carries a message its call holds."""
    return name in _TEXT_EVENTS

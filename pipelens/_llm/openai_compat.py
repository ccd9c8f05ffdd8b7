"""Readers of OpenAI-compatible data: a response, its usage, its output, as an :class:`LLMCall`.

Pure functions over ``openai`` objects (pydantic models) and plain dicts of the same shape alike,
so the seed's ``LLMTrack`` records, ``llm_call`` results and the ``openai`` provider's responses
are read by the same code. Used by the provider module and by ``llm_call``; it imports neither.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from pipelens._core.llm_record import LLMCall, LLMOutput, TokenUsage, ToolCall

#: The header the Stainless-made SDKs (openai, anthropic) send with ``with_raw_response`` calls.
_RAW_HEADER = "X-Stainless-Raw-Response"


def given(value: Any) -> bool:
    """Whether an argument was passed: the SDKs' ``NOT_GIVEN`` / ``omit`` sentinels mean not."""
    return type(value).__name__ not in ("NotGiven", "Omit")


def raw_mode(kwargs: dict[str, Any]) -> str | None:
    """``"true"`` under ``with_raw_response``, ``"stream"`` under ``with_streaming_response``
    (the Stainless-made SDKs say so in a request header)."""
    headers = kwargs.get("extra_headers")
    if isinstance(headers, dict):
        mode = headers.get(_RAW_HEADER)
        return mode if isinstance(mode, str) else None
    return None


def get(obj: Any, name: str) -> Any:
    """``obj``'s field ``name`` (a dict's key or an attribute), ``None`` when it has none."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    fields = getattr(obj, "__dict__", None)
    if fields is not None:
        if name in fields:
            return fields[name]
        # A pydantic model's missing attribute goes through a slow __getattr__ that raises; a
        # field beyond the model's own (litellm's ``usage``) is among its extras.
        if _is_model(type(obj)):
            extra = getattr(obj, "__pydantic_extra__", None)
            return extra.get(name) if extra else None
    return getattr(obj, name, None)


#: Whether a class is a pydantic model, by class: ``hasattr`` on a model class goes through
#: pydantic's metaclass (timeit: 145 ns a call against 87 for this lookup, 78 of each the timed
#: call itself), and it is asked for every object a response or a stream chunk is read from, on
#: the caller's thread.
_MODEL_CLASSES: dict[type, bool] = {}


def _is_model(cls: type) -> bool:
    known = _MODEL_CLASSES.get(cls)
    if known is None:
        known = _MODEL_CLASSES[cls] = hasattr(cls, "__pydantic_fields__")
    return known


#: The fields of ``None``: none (never written).
_NO_FIELDS: dict[str, Any] = {}


def reader(obj: Any) -> Callable[[str], Any]:
    """:func:`get` for ``obj``, made once where a response is read field by field: a dict's own
    ``get`` over its fields where that answers as :func:`get` would (a dict, an SDK's pydantic
    model with its extras), saving each field's checks (a response's reading is on the caller's
    thread); else :func:`get` bound to ``obj``."""
    if obj is None:
        return _NO_FIELDS.get
    if isinstance(obj, dict):
        return obj.get
    fields = getattr(obj, "__dict__", None)
    if isinstance(fields, dict) and _is_model(type(obj)):
        extra = getattr(obj, "__pydantic_extra__", None)
        return {**extra, **fields}.get if extra else fields.get
    return functools.partial(get, obj)


def fields_of(obj: Any) -> dict[str, Any]:
    """``obj``'s fields as a dict, read once and looked up fast (a stream's hot path): a dict is
    itself, an SDK object (a pydantic model) keeps its fields in ``__dict__``; ``None`` has
    none."""
    if isinstance(obj, dict):
        return obj
    fields = getattr(obj, "__dict__", None)
    return fields if isinstance(fields, dict) else {}


def request_id_of(response: Any) -> str | None:
    """The ``_request_id`` the Stainless SDKs set on a response (kept in its ``__dict__``, or
    among pydantic's private values), read without ``getattr``: on a model without it (litellm's
    ``ModelResponse``) that goes through pydantic's failing ``__getattr__``, microseconds."""
    fields = getattr(response, "__dict__", None)
    if not isinstance(fields, dict):
        value = getattr(response, "_request_id", None)
    else:
        value = fields.get("_request_id")
        if value is None:
            private = getattr(response, "__pydantic_private__", None)
            value = private.get("_request_id") if isinstance(private, dict) else None
    return value if isinstance(value, str) else None


def as_int(value: Any) -> int:
    """``value`` when it is an int (not a bool), else 0."""
    if type(value) is int:  # the common case, tested first: a response's counts
        return value
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_openai(usage: Any) -> TokenUsage | None:
    """Token counts of a chat, responses or embeddings ``usage`` (object or dict)."""
    if usage is None:
        return None
    field = reader(usage)
    input_tokens = field("input_tokens")
    if input_tokens is None:  # chat completions and embeddings
        input_tokens = field("prompt_tokens")
        output_tokens = field("completion_tokens")
        in_details = field("prompt_tokens_details")
        out_details = field("completion_tokens_details")
    else:
        output_tokens = field("output_tokens")
        in_details = field("input_tokens_details")
        out_details = field("output_tokens_details")
    total = field("total_tokens")
    return TokenUsage(
        input_tokens=as_int(input_tokens),
        output_tokens=as_int(output_tokens),
        cached_tokens=as_int(get(in_details, "cached_tokens")),
        reasoning_tokens=as_int(get(out_details, "reasoning_tokens")),
        total_tokens=total if isinstance(total, int) else None,
    )


def read_response(call: LLMCall, response: Any) -> None:
    """Fill ``call`` from a complete (non-streamed) response of its operation."""
    field = reader(response)
    call.response_model = field("model") or call.response_model
    call.response_id = field("id") or call.response_id
    request_id = request_id_of(response)
    if request_id is not None:
        call.request_id = request_id
    usage = usage_from_openai(field("usage"))
    if usage is not None:
        call.usage = usage
    kind = field("object")
    if call.operation == "embeddings" or kind == "list":
        data = field("data") or []
        first = get(data[0], "embedding") if data else None
        call.output = LLMOutput(
            embeddings=len(data), dimensions=len(first) if isinstance(first, list) else None
        )
    elif call.operation == "responses" or kind == "response":
        call.output = _responses_output(response)
    else:
        call.output = _chat_output(field("choices"))


def _chat_output(choices: Any) -> LLMOutput:
    if not choices:
        return LLMOutput()
    first = reader(choices[0])
    message = reader(first("message"))
    tool_calls = [
        ToolCall(
            id=get(tc, "id"),
            name=get(get(tc, "function"), "name"),
            arguments=get(get(tc, "function"), "arguments") or "",
            type=get(tc, "type") or "function",
        )
        for tc in message("tool_calls") or []
    ]
    return LLMOutput(
        text=message("content"),
        tool_calls=tool_calls,
        finish_reason=first("finish_reason"),
    )


def _responses_output(response: Any) -> LLMOutput:
    texts: list[str] = []
    tool_calls: list[ToolCall] = []
    for item in get(response, "output") or []:
        kind = get(item, "type")
        if kind == "message":
            texts.extend(
                get(part, "text") or ""
                for part in get(item, "content") or []
                if get(part, "type") == "output_text"
            )
        elif kind == "function_call":
            tool_calls.append(
                ToolCall(
                    id=get(item, "call_id"),
                    name=get(item, "name"),
                    arguments=get(item, "arguments") or "",
                )
            )
    reason = get(get(response, "incomplete_details"), "reason") or get(response, "status")
    return LLMOutput(
        text="".join(texts) if texts else None, tool_calls=tool_calls, finish_reason=reason
    )

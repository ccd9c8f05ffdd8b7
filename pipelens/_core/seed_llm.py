"""The seed's ``LLMTrack`` record: an OpenAI-compatible chat completion as the seed stored it.

The seed validated a response into its pydantic models and stored ``model_dump()``: every field
of its models present (``None`` when absent), every other field dropped::

    {"id", "object", "created", "model", "system_fingerprint",
     "choices": [{"index", "finish_reason",
                  "message": {"role", "content", "function_call", "tool_calls"}}],
     "usage": {"prompt_tokens", "completion_tokens", "total_tokens"} | None}

:func:`response_record` gives that shape for a response (``LLMTrack.track``);
:func:`call_record` for an LLM call we recorded ourselves (``auto_patch``, ``llm_call``), so the
seed-style outputs show it where a seed user looks. Unlike the seed, nothing here raises: a
value of the wrong type is kept as it came.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipelens._core.capture import short_repr
from pipelens._core.llm_record import TRACK_PREFIX, LLMCall

_RESPONSE = ("id", "object", "created", "model", "choices", "usage", "system_fingerprint")
_CHOICE = ("index", "message", "finish_reason")
_MESSAGE = ("role", "content", "function_call", "tool_calls")
_USAGE = ("prompt_tokens", "completion_tokens", "total_tokens")


def _plain(value: Any) -> Any:
    """``value`` as dicts, lists and scalars (pydantic models and Structs are dumped)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value, enc_hook=short_repr)
    dump = getattr(value, "model_dump", None)  # pydantic v2 (openai's types)
    if callable(dump):
        try:
            return dump(mode="json")
        except TypeError:  # a model_dump() without pydantic v2's mode argument
            return _plain(dump())
    return short_repr(value)


def _pick(value: Any, fields: tuple[str, ...]) -> Any:
    """A dict of exactly ``fields`` (``None`` when absent); anything but a dict as it is."""
    return {f: value.get(f) for f in fields} if isinstance(value, dict) else value


def _choice(value: Any) -> Any:
    choice = _pick(value, _CHOICE)
    if isinstance(choice, dict):
        choice["message"] = _pick(choice["message"], _MESSAGE)
    return choice


def response_record(response: Any) -> dict[str, Any]:
    """The seed's record of ``response``: a dict, a pydantic model (``openai``'s
    ``ChatCompletion``) or any object with the fields as attributes."""
    if isinstance(response, dict):
        data = {f: _plain(response.get(f)) for f in _RESPONSE}
    else:
        data = {f: _plain(getattr(response, f, None)) for f in _RESPONSE}
    choices = data["choices"]
    if isinstance(choices, list):
        data["choices"] = [_choice(c) for c in choices]
    data["usage"] = _pick(data["usage"], _USAGE)
    return data


def call_record(call: LLMCall, key: str, created_s: int) -> tuple[str, dict[str, Any]]:
    """The record key and the seed's record of a chat ``call`` we recorded (``key``: the step's,
    the id when the provider gave none; ``created_s``: when it started, Unix seconds)."""
    output = call.output
    tool_calls = None
    if output is not None and output.tool_calls:
        tool_calls = [
            {"id": t.id, "type": t.type, "function": {"name": t.name, "arguments": t.arguments}}
            for t in output.tool_calls
        ]
    message = {
        "role": "assistant",
        "content": None if output is None else output.text,
        "function_call": None,
        "tool_calls": tool_calls,
    }
    usage = call.usage
    response_id = call.response_id or key
    record = {
        "id": response_id,
        "object": "chat.completion",
        "created": created_s,
        "model": call.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": None if output is None else output.finish_reason,
            }
        ],
        "usage": None
        if usage is None
        else {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens
            if usage.total_tokens is not None
            else usage.input_tokens + usage.output_tokens,
        },
        "system_fingerprint": None,
    }
    return f"{TRACK_PREFIX}{response_id}", record

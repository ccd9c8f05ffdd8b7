"""The seed's ``LLMTrack``: record an OpenAI-compatible chat response on a step, sum its usage.

Its records and the LLM steps of ``auto_patch``/``llm_call`` are summed alike, so
``get_total_usage`` and ``run.llm_usage()`` agree on the tokens.

A response is recorded under ``__LLM_RESPONSE_<id>`` as a plain dict of the seed's fields (``id``,
``object``, ``created``, ``model``, ``choices``, ``usage``, ``system_fingerprint``). It may be a
dict, an ``openai`` ``ChatCompletion`` (any pydantic model), an
:class:`OpenAICompatibleChatCompletionResponse`, or any object with those attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from pipelens._core import containment
from pipelens._core.capture import short_repr
from pipelens._core.done import Done
from pipelens._core.step import Step

if TYPE_CHECKING:
    from pipelens._seed.pipeline import Pipeline

LLM_RESPONSE_RECORD_KEY_PREFIX = "__LLM_RESPONSE_"
_FIELDS = ("id", "object", "created", "model", "choices", "usage", "system_fingerprint")


class LLMUsage(msgspec.Struct, kw_only=True):
    """Token counts, summed per model by :meth:`LLMTrack.get_total_usage`."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


Usage = LLMUsage


class OpenAICompatibleChatCompletionResponse(msgspec.Struct, kw_only=True):
    """The seed's response model: build one by keywords, as its tests did (not validated)."""

    id: str
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Any] = []
    usage: Any = None
    system_fingerprint: str | None = None


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


def _fields(response: Any) -> dict[str, Any]:
    """The seed's fields of ``response``, as plain data."""
    if isinstance(response, dict):
        return {f: _plain(response.get(f)) for f in _FIELDS}
    return {f: _plain(getattr(response, f, None)) for f in _FIELDS}


def _as_step(step: Step | Pipeline) -> Step:
    # The seed's Pipeline was a Step; ours hands over the root step of its current/last run.
    return step if isinstance(step, Step) else step.root


class LLMTrack:
    """Track OpenAI-compatible chat completions on steps, as the seed's extension did."""

    @staticmethod
    def track(step: Step | Pipeline, response: Any) -> Any:
        """Record ``response`` on ``step`` as ``__LLM_RESPONSE_<id>``; awaitable, like the seed.

        Never raises into the caller: a response it cannot read is logged once and skipped.
        """
        try:
            data = _fields(response)
            target = _as_step(step)
            target.record(f"{LLM_RESPONSE_RECORD_KEY_PREFIX}{data['id']}", data)
            # The record counts in run.llm_usage() and RunFinished.llm_usage like an LLM step.
            target.run._has_llm = True
        except Exception as exc:
            containment.internal_error("LLMTrack.track", exc)
        return Done(None)  # awaiting it gives None, as the seed's coroutine did

    @staticmethod
    def get_total_usage(step: Step | Pipeline) -> dict[str, LLMUsage]:
        """Token usage by model over ``step`` and its substeps (a model with no usage: zeros)."""
        totals: dict[str, LLMUsage] = {}
        for s in _as_step(step).walk():
            call = s.llm
            if call is not None:  # an auto-patched or llm_call() call counts too
                total = totals.setdefault(call.model, LLMUsage())
                if call.usage is not None:
                    u = call.usage
                    total.prompt_tokens += u.input_tokens
                    total.completion_tokens += u.output_tokens
                    total.total_tokens += (
                        u.total_tokens
                        if u.total_tokens is not None
                        else u.input_tokens + u.output_tokens
                    )
            for key, value in list(s.records.items()):
                if not key.startswith(LLM_RESPONSE_RECORD_KEY_PREFIX) or not isinstance(
                    value, dict
                ):
                    continue
                model = value.get("model")
                if not model:
                    continue
                total = totals.setdefault(str(model), LLMUsage())
                usage = value.get("usage")
                if not isinstance(usage, dict):
                    continue
                total.prompt_tokens += _count(usage, "prompt_tokens")
                total.completion_tokens += _count(usage, "completion_tokens")
                total.total_tokens += _count(usage, "total_tokens")
        return totals


def _count(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

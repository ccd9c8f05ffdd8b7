"""The seed's ``LLMTrack``: record an OpenAI-compatible chat response on a step, sum usage."""

from __future__ import annotations

from typing import Any

import msgspec

from pipelens._step import Step

LLM_RESPONSE_RECORD_KEY_PREFIX = "__LLM_RESPONSE_"
_FIELDS = ("id", "object", "created", "model", "choices", "usage", "system_fingerprint")


class Usage(msgspec.Struct, kw_only=True):
    """Token counts, summed per model by :meth:`LLMTrack.get_total_usage`."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def _as_dict(response: Any) -> dict[str, Any]:
    if isinstance(response, dict):
        return response
    dump = getattr(response, "model_dump", None)  # openai's pydantic objects
    if callable(dump):
        out: dict[str, Any] = dump()
        return out
    return {f: getattr(response, f, None) for f in _FIELDS}


class LLMTrack:
    """Track OpenAI-compatible chat completions on steps, as the seed's extension did."""

    @staticmethod
    def track(step: Step, response: Any) -> Any:
        """Record ``response`` on ``step`` as ``__LLM_RESPONSE_<id>`` (awaitable, like the seed)."""
        data = _as_dict(response)
        sanitized = {f: data.get(f) for f in _FIELDS}
        return step.record(f"{LLM_RESPONSE_RECORD_KEY_PREFIX}{sanitized.get('id')}", sanitized)

    @staticmethod
    def get_total_usage(step: Step) -> dict[str, Usage]:
        """Token usage by model over ``step`` and its substeps."""
        totals: dict[str, Usage] = {}
        for s in step.walk():
            for key, value in list(s.records.items()):
                if not key.startswith(LLM_RESPONSE_RECORD_KEY_PREFIX) or not isinstance(
                    value, dict
                ):
                    continue
                model = value.get("model")
                if not model:
                    continue
                total = totals.setdefault(model, Usage())
                usage = value.get("usage") or {}
                if not isinstance(usage, dict):
                    usage = _as_dict(usage)
                total.prompt_tokens += usage.get("prompt_tokens") or 0
                total.completion_tokens += usage.get("completion_tokens") or 0
                total.total_tokens += usage.get("total_tokens") or 0
        return totals

"""Recording LLM calls: ``llm_call`` by hand, the LLM steps the patch engine opens, their cost.

An LLM call is a step of kind ``llm`` holding an :class:`~pipelens.LLMCall` (its record, in
:mod:`pipelens._core.llm_record`). A call is priced here when its step ends, so the summing in the
core adds up stored costs and never needs the prices; the seed's ``LLMTrack`` records are read and
priced here too, for that summing.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from pipelens import _pricing
from pipelens._core import containment, llm_record
from pipelens._core.capture import capture
from pipelens._core.clock import perf_ns
from pipelens._core.errors import check_strings
from pipelens._core.llm_record import LLMCall
from pipelens._core.settings import settings
from pipelens._core.step import Step, StepScope, open_step, sanitize_name
from pipelens._llm.openai_compat import read_response, usage_from_openai
from pipelens._llm.prices import price_for

F = TypeVar("F", bound=Callable[..., Any])


def price(call: LLMCall) -> None:
    """Set ``call.cost_usd`` from its tokens, unless it has a cost (``None``: unknown model)."""
    usage = call.usage
    if call.cost_usd is None and usage is not None:
        # ``prices.cost_usd`` without its own call: a call is priced on the caller's thread.
        call.cost_usd = _pricing.cost_usd(
            price_for(call.model, call.provider),
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            usage.cache_write_tokens,
        )


def tracked_call(record: dict[str, Any]) -> LLMCall:
    """The priced call a seed ``LLMTrack`` record (an OpenAI-compatible response) stands for."""
    call = LLMCall(
        provider="openai",
        operation="chat",
        request_model=str(record["model"]),
        usage=usage_from_openai(record.get("usage")),
    )
    price(call)
    return call


llm_record.read_tracked_records_with(tracked_call)


def open_llm_step(call: LLMCall, name: str) -> Step:
    """Open a ``kind="llm"`` step for ``call`` under the current step (or as a new run)."""
    step = open_step(sanitize_name(name), None, kind="llm")
    step.llm = call
    step.run._has_llm = True
    return step


def close_llm_step(step: Step, exc: BaseException | None = None, result_text: Any = None) -> None:
    """End an LLM step: its latency, and completed or failed with ``exc``."""
    call = step.llm
    assert call is not None
    price(call)
    if call.latency_ns is None:
        call.latency_ns = perf_ns() - step._t0
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
        check_strings("llm_call", provider=provider, operation=operation)
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
            read_response(call, result)
    except Exception as exc:
        containment.internal_error("llm_call.fill", exc)

"""LLM calls recorded by hand, usage summed by model, and costs from the price table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import pipelens
from pipelens import LLMTrack
from pipelens._llm import prices
from pipelens.testing import CapturedEvents


def llm_of(events: CapturedEvents, key: str) -> dict[str, Any]:
    """The decoded ``llm`` JSON of the finished step ``key``."""
    text = events.step(key).llm
    assert text is not None
    data: dict[str, Any] = json.loads(text)
    return data


def chat_response(model: str, prompt: int, completion: int) -> dict[str, Any]:
    """An OpenAI-compatible chat completion as a dict."""
    return {
        "id": f"chatcmpl-{model}-{prompt}",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


# --- llm_call ----------------------------------------------------------------------------------


def test_llm_call_block_is_an_llm_step_with_its_json(events: CapturedEvents) -> None:
    """``with llm_call(...)`` makes a kind=llm step whose llm JSON holds what was set."""
    with pipelens.llm_call(
        provider="anthropic", model="claude-sonnet-4", messages=["hi"], params={"top_k": 3}
    ) as call:
        call.set_usage(input_tokens=1000, output_tokens=100)
        call.set_output(text="hello", finish_reason="end_turn")
    step = events.step("anthropic_chat")
    assert (step.kind, step.status, step.result) == ("llm", "completed", '"hello"')
    llm = llm_of(events, "anthropic_chat")
    expected = {
        "provider": "anthropic",
        "operation": "chat",
        "request_model": "claude-sonnet-4",
        "params": {"top_k": 3},
        "messages": ["hi"],
        "output": {"text": "hello", "finish_reason": "end_turn"},
        "usage": {"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
        "cost_usd": pytest.approx((1000 * 3.0 + 100 * 15.0) / 1e6),
    }
    assert expected == {k: v for k, v in llm.items() if k != "latency_ns"}
    assert llm["latency_ns"] >= 0


def test_llm_call_block_error_fails_the_step_and_propagates(events: CapturedEvents) -> None:
    """An exception leaving the block fails the step and reaches the caller unchanged."""
    error = TimeoutError("slow model")
    with pytest.raises(TimeoutError) as caught, pipelens.llm_call(provider="x", model="m"):
        raise error
    assert caught.value is error
    step = events.step("x_chat")
    assert (step.status, step.error and step.error.type) == ("failed", "TimeoutError")


def test_llm_call_decorator_reads_an_openai_compatible_result(events: CapturedEvents) -> None:
    """A decorated function's OpenAI-compatible result fills the call's usage and output."""

    @pipelens.llm_call(provider="vllm", model="llama-3")
    def complete(prompt: str) -> dict[str, Any]:
        return chat_response("llama-3-8b", 7, 3)

    assert complete("hi")["choices"][0]["message"]["content"] == "ok"
    llm = llm_of(events, "complete")
    assert (
        llm["response_model"],
        llm["output"],
    ) == ("llama-3-8b", {"text": "ok", "finish_reason": "stop"})
    assert llm["usage"] == {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    assert "cost_usd" not in llm  # an unknown model's cost is unknown, not zero


async def test_llm_call_decorator_on_async_function(events: CapturedEvents) -> None:
    """An async decorated function is one LLM call per await, nested under the current step."""

    @pipelens.llm_call(provider="vllm", model="llama-3", name="ask")
    async def ask() -> dict[str, Any]:
        return chat_response("llama-3", 1, 1)

    @pipelens.step
    async def pipeline() -> None:
        await ask()
        await ask()

    await pipeline()
    assert [s.key for s in events.steps()] == ["pipeline.ask", "pipeline.ask___1", "pipeline"]
    assert events.step("pipeline.ask___1").kind == "llm"


def test_llm_call_outside_a_transport_still_returns_a_call() -> None:
    """With PipeLens disabled the block still yields an LLMCall to fill in, and records nothing."""
    pipelens.configure(enabled=False)
    with pipelens.llm_call(provider="p", model="m") as call:
        call.set_usage(1, 2)
    assert (call.usage and call.usage.total_tokens) == 3


def test_long_input_is_cut_to_the_size_cap(events: CapturedEvents) -> None:
    """An input past max_value_bytes is sent truncated; the rest of the call is kept."""
    pipelens.configure(max_value_bytes=1024)
    with pipelens.llm_call(provider="p", model="m", messages=["x" * 5000]) as call:
        call.set_output(text="short")
    llm = llm_of(events, "p_chat")
    assert (llm["messages"]["$truncated"], llm["output"]["text"]) == (True, "short")


# --- usage by model ----------------------------------------------------------------------------


def test_run_and_subtree_usage_are_summed_by_model(events: CapturedEvents) -> None:
    """run.llm_usage() sums every call by model; a step's llm_usage() only its subtree."""
    seen: dict[str, Any] = {}

    def call(model: str, tokens: int) -> None:
        with pipelens.llm_call(provider="openai", model=model) as c:
            c.set_usage(input_tokens=tokens, output_tokens=tokens, cached_tokens=1)

    @pipelens.step
    def inner() -> None:
        call("gpt-4o-mini", 10)
        seen["inner"] = pipelens.current_step()

    @pipelens.step
    def outer() -> None:
        call("gpt-4o", 100)
        inner()
        call("gpt-4o", 100)
        seen["run"] = pipelens.current_run()

    outer()
    usage = {
        m: (u.calls, u.input_tokens, u.cached_tokens) for m, u in seen["run"].llm_usage().items()
    }
    assert usage == {"gpt-4o": (2, 200, 2), "gpt-4o-mini": (1, 10, 1)}
    assert list(seen["inner"].llm_usage()) == ["gpt-4o-mini"]
    sent = json.loads(events.runs()[0].llm_usage or "null")
    expected = {
        "calls": 2,
        "input_tokens": 200,
        "output_tokens": 200,
        "cached_tokens": 2,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "calls_without_usage": 0,
        "cost_usd": pytest.approx((198 * 2.5 + 2 * 1.25 + 200 * 10) / 1e6),
    }
    assert expected == sent["gpt-4o"]


def test_run_without_llm_calls_sends_no_usage(events: CapturedEvents) -> None:
    """A run with no LLM call leaves RunFinished.llm_usage unset."""
    pipelens.step(lambda: None)()
    assert [r.llm_usage for r in events.runs()] == [None]


def test_unknown_model_cost_is_null_and_calls_without_usage_are_counted(
    events: CapturedEvents,
) -> None:
    """A model with no price has cost null; a call without tokens is counted as such."""
    with pipelens.llm_call(provider="p", model="my-finetune") as c:
        c.set_usage(5, 5)
    sent = json.loads(events.runs()[0].llm_usage or "null")
    assert (
        sent["my-finetune"]["cost_usd"],
        sent["my-finetune"]["calls"],
        sent["my-finetune"]["calls_without_usage"],
    ) == (None, 1, 0)


def test_calls_without_usage_have_unknown_tokens_and_cost_not_zero(
    events: CapturedEvents,
) -> None:
    """A model whose calls reported no usage has tokens and cost null, in process and sent."""
    with pipelens.Pipeline("p").run() as run:
        with pipelens.llm_call(provider="openai", model="gpt-4o"):
            pass
        with pipelens.llm_call(provider="openai", model="gpt-4o-mini") as c:
            c.set_usage(10, 5)
        with pipelens.llm_call(provider="openai", model="gpt-4o-mini"):
            pass
    in_process = run.llm_usage()
    unknown = in_process["gpt-4o"]
    assert (unknown.calls, unknown.calls_without_usage, unknown.input_tokens) == (1, 1, None)
    assert (unknown.output_tokens, unknown.cost_usd) == (None, None)
    mixed = in_process["gpt-4o-mini"]
    assert (mixed.calls, mixed.calls_without_usage, mixed.input_tokens) == (2, 1, 10)
    assert pytest.approx((10 * 0.15 + 5 * 0.6) / 1e6) == mixed.cost_usd
    sent = json.loads(events.runs()[0].llm_usage or "null")
    assert (sent["gpt-4o"]["input_tokens"], sent["gpt-4o"]["cost_usd"]) == (None, None)
    assert "cost_usd" not in llm_of(events, "p.openai_chat")


def test_llmtrack_and_llm_calls_agree(events: CapturedEvents) -> None:
    """LLMTrack.track records count in run.llm_usage(), and get_total_usage counts llm calls."""
    with pipelens.Pipeline("p").run() as run:
        LLMTrack.track(run.root, chat_response("gpt-4o", 10, 5))
        with pipelens.llm_call(provider="openai", model="gpt-4o") as c:
            c.set_usage(20, 10)
    assert {m: (u.calls, u.input_tokens, u.output_tokens) for m, u in run.llm_usage().items()} == {
        "gpt-4o": (2, 30, 15)
    }
    total = LLMTrack.get_total_usage(run.root)["gpt-4o"]
    assert (total.prompt_tokens, total.completion_tokens, total.total_tokens) == (30, 15, 45)
    assert json.loads(events.runs()[0].llm_usage or "null")["gpt-4o"]["calls"] == 2


# --- prices ------------------------------------------------------------------------------------


def test_shipped_table_is_dated_and_prices_known_models() -> None:
    """prices.json has a date and prices a dated model name as its base model."""
    assert prices.shipped_prices().date
    assert pytest.approx((1000 * 0.15 + 1000 * 0.6) / 1e6) == prices.cost_usd(
        "gpt-4o-mini-2024-07-18", 1000, 1000
    )
    assert prices.cost_usd("no-such-model", 1, 1) is None


def test_configured_prices_override_the_table(tmp_path: Path) -> None:
    """configure(prices=dict) and prices=path both override; {} drops the overrides."""
    pipelens.configure(prices={"gpt-4o": {"input": 1.0, "output": 2.0}})
    assert pytest.approx(3.0) == prices.cost_usd("gpt-4o", 1_000_000, 1_000_000)
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"mine": {"input": 4.0, "cached_input": 1.0}}}))
    pipelens.configure(prices=path)
    assert pytest.approx(5.0) == prices.cost_usd("mine", 2_000_000, 0, cached_tokens=1_000_000)
    pipelens.configure(prices={})
    assert pytest.approx(12.5) == prices.cost_usd("gpt-4o", 1_000_000, 1_000_000)


def test_cache_reads_and_writes_are_priced_at_their_own_prices(events: CapturedEvents) -> None:
    """Anthropic's cache write and read tokens cost their prices, not the input price."""
    with pipelens.llm_call(provider="anthropic", model="claude-sonnet-4-20250514") as c:
        c.set_usage(input_tokens=1000, output_tokens=100, cached_tokens=600, cache_write_tokens=300)
    cost = (100 * 3.0 + 600 * 0.3 + 300 * 3.75 + 100 * 15.0) / 1e6
    assert pytest.approx(cost) == llm_of(events, "anthropic_chat")["cost_usd"]


def test_configured_prices_win_over_genai_prices() -> None:
    """A user's price for a model genai-prices knows is the one used."""
    pipelens.configure(prices={"claude-sonnet-4-5": {"input": 1.0, "output": 1.0}})
    assert pytest.approx(0.2) == prices.cost_usd(
        "claude-sonnet-4-5", 100_000, 100_000, provider="anthropic"
    )
    pipelens.configure(prices={})
    assert pytest.approx(1.8) == prices.cost_usd(
        "claude-sonnet-4-5", 100_000, 100_000, provider="anthropic"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"m": {"input": -1}}, r"model 'm': Expected `float` >= 0.0 - at `\$.input`"),
        ({"m": {"inptu": 1}}, r"model 'm': Object contains unknown field `inptu`"),
        (42, r"expected a dict"),
        ("/no/such/prices.json", r"cannot read the file"),
    ],
)
def test_bad_prices_are_refused_with_the_fault_named(value: Any, message: str) -> None:
    """A bad price table raises ConfigurationError naming the field or file."""
    with pytest.raises(pipelens.ConfigurationError, match=message):
        pipelens.configure(prices=value)


# --- reading responses -------------------------------------------------------------------------


def test_reader_answers_every_field_as_get_does() -> None:
    """``reader(obj)(name) == get(obj, name)`` for a dict, an SDK model with extras, an object
    with a property, and ``None``: the fast reading of a response loses no field."""
    import pydantic

    from pipelens._llm.openai_compat import get, reader

    class Usage(pydantic.BaseModel, extra="allow"):
        prompt_tokens: int = 0
        completion_tokens: int | None = None

    class Plain:
        def __init__(self) -> None:
            self.id = "x"

        @property
        def model(self) -> str:
            return "m"

    objects: list[Any] = [
        {"id": "x", "model": "m"},
        Usage(prompt_tokens=3, usage={"total": 4}, completion_tokens=2),
        Usage(),
        Plain(),
        None,
    ]
    names = ["id", "model", "usage", "prompt_tokens", "completion_tokens", "missing"]
    expected = [[get(obj, name) for name in names] for obj in objects]
    assert expected == [[reader(obj)(name) for name in names] for obj in objects]
    assert expected[1][2:5] == [{"total": 4}, 3, 2]  # the extra field is read, as the model's

"""``auto_patch(litellm)``: the real ``litellm`` against the local OpenAI stub server."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
from collections.abc import Iterator
from typing import Any

import litellm
import openai
import pytest
from _openai_stub import TEXT, TEXT_PARTS, StubServer

import pipelens
from pipelens.testing import CapturedEvents

# One event loop for the module: litellm's logging worker binds to the loop it first runs on and
# moves its pending tasks to the next one, so per-test loops would leave it tasks on closed loops.
module_loop = pytest.mark.asyncio(loop_scope="module")

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT_USAGE = {
    "input_tokens": 12,
    "output_tokens": 4,
    "cached_tokens": 2,
    "reasoning_tokens": 1,
    "total_tokens": 16,
}
ORIGINAL_COMPLETION = litellm.completion


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    """One stub server for the module."""
    with StubServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _quiet_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    """litellm logs each streamed chunk with ``asyncio.run`` in a thread pool, whose loops may
    outlive a test and warn as unclosed sockets in the next: its own switch turns that off."""
    monkeypatch.setattr(litellm, "disable_streaming_logging", True)
    monkeypatch.setattr(litellm, "suppress_debug_info", True)


@pytest.fixture(autouse=True)
def _closed_loop_for_sync_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """A sync litellm call asks ``asyncio.get_event_loop()`` for a loop to log on, which makes
    one and leaves it open: a sync test gets a loop it closes after."""
    if inspect.iscoroutinefunction(request.function):
        yield
        return
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def route(stub: StubServer) -> dict[str, Any]:
    """The arguments sending a litellm call to the stub: no retries, a short timeout."""
    return {"api_base": stub.base_url, "api_key": "sk-test", "num_retries": 0, "timeout": 5}


@pytest.fixture
def patched() -> Iterator[None]:
    """litellm patched for one test, unpatched after."""
    pipelens.auto_patch(litellm)
    yield
    pipelens.unpatch(litellm)


def llm_of(events: CapturedEvents, key: str = "litellm_chat") -> dict[str, Any]:
    """The decoded ``llm`` JSON of the finished step ``key``."""
    step = events.step(key)
    assert step.kind == "llm"
    assert step.llm is not None
    data: dict[str, Any] = json.loads(step.llm)
    return data


def _texts(chunks: list[Any]) -> list[str | None]:
    return [c.choices[0].delta.content for c in chunks if c.choices]


@pytest.mark.usefixtures("patched")
def test_completion_records_provider_model_params_output_and_usage(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """A completion (model and messages passed by position) is one llm step: the provider
    litellm routed to, the model asked for and the one that answered, params, usage."""
    reply = litellm.completion("openai/gpt-4o", MESSAGES, temperature=0.2, **route)
    assert reply.choices[0].message.content == TEXT
    llm = llm_of(events)
    assert {k: v for k, v in llm.items() if k not in ("latency_ns", "cost_usd")} == {
        "provider": "openai",
        "operation": "chat",
        "request_model": "openai/gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "params": {"temperature": 0.2, "num_retries": 0},
        "messages": MESSAGES,
        "output": {"text": TEXT, "finish_reason": "stop"},
        "usage": CHAT_USAGE,
        "request_id": llm["request_id"],
        "response_id": "chatcmpl-1",
    }
    assert llm["request_id"].startswith("req_")
    assert llm["cost_usd"] > 0
    assert "api_key" not in llm["params"]


@pytest.mark.usefixtures("patched")
@module_loop
async def test_acompletion_is_one_step(route: dict[str, Any], events: CapturedEvents) -> None:
    """``acompletion`` (which runs ``completion`` inside) is recorded once, like a sync call."""
    reply = await litellm.acompletion(model="openai/gpt-4o", messages=MESSAGES, **route)
    assert reply.choices[0].message.content == TEXT
    assert [s.key for s in events.steps()] == ["litellm_chat"]
    assert (llm_of(events)["output"]["text"], llm_of(events)["usage"]) == (TEXT, CHAT_USAGE)


@pytest.mark.usefixtures("patched")
def test_stream_is_litellms_own_wrapper_and_is_assembled(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """A stream stays a ``CustomStreamWrapper`` giving every chunk; the step has the text, the
    chunk count and the time to first token, and no usage (the provider reported none)."""
    stream = litellm.completion("openai/gpt-4o", MESSAGES, stream=True, **route)
    assert isinstance(stream, litellm.CustomStreamWrapper)
    assert [None, *TEXT_PARTS, None] == _texts(list(stream))
    assert (events.step("litellm_chat").status, events.step("litellm_chat").error) == (
        "completed",
        None,
    )  # litellm's own close at the end is no caller's
    llm = llm_of(events)
    assert (llm["provider"], llm["stream"], llm["chunks"], llm["output"]) == (
        "openai",
        True,
        6,
        {"text": TEXT, "finish_reason": "stop"},
    )
    assert 0 < llm["time_to_first_token_ns"] <= llm["latency_ns"]
    assert "usage" not in llm  # unknown, not zero
    assert llm["request_id"].startswith("req_")


def test_stream_chunks_are_the_same_patched_or_not(route: dict[str, Any]) -> None:
    """Patching changes nothing the caller receives from a stream, usage chunk included."""

    def chunks() -> list[dict[str, Any]]:
        stream = litellm.completion(
            "openai/gpt-4o",
            MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            **route,
        )
        return [{**c.model_dump(), "created": 0} for c in stream]

    plain = chunks()
    pipelens.auto_patch(litellm)
    try:
        traced = chunks()
    finally:
        pipelens.unpatch(litellm)
    assert plain == traced
    assert plain[-1]["usage"]["prompt_tokens"] == 12


@pytest.mark.usefixtures("patched")
def test_stream_usage_asked_by_the_caller_is_recorded(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """With the caller's ``stream_options`` the usage chunk reaches the caller and the step."""
    stream = litellm.completion(
        "openai/gpt-4o", MESSAGES, stream=True, stream_options={"include_usage": True}, **route
    )
    assert list(stream)[-1].usage.total_tokens == 16
    llm = llm_of(events)
    assert (llm["usage"], llm["chunks"]) == (CHAT_USAGE, 7)
    assert llm["tokens_per_second"] > 0


@pytest.mark.usefixtures("patched")
@module_loop
async def test_async_stream_is_assembled(route: dict[str, Any], events: CapturedEvents) -> None:
    """An ``acompletion`` stream gives every chunk and ends its one step with the text."""
    stream = await litellm.acompletion(
        model="openai/gpt-4o", messages=MESSAGES, stream=True, **route
    )
    assert isinstance(stream, litellm.CustomStreamWrapper)
    chunks = [c async for c in stream]
    assert [None, *TEXT_PARTS, None] == _texts(chunks)
    assert [(s.key, s.status) for s in events.steps()] == [("litellm_chat", "completed")]
    assert (llm_of(events)["output"]["text"], llm_of(events)["chunks"]) == (TEXT, 6)


def cancelled_as_closed(llm: dict[str, Any], events: CapturedEvents) -> bool:
    """Whether the litellm step ended ``cancelled`` as a stream closed after two chunks."""
    step = events.step("litellm_chat")
    return (step.status, step.error and step.error.type, llm["stream_closed_early"]) == (
        "cancelled",
        "pipelens._StreamClosed",
        True,
    ) and (llm["chunks"], llm["output"]["text"]) == (2, "Hello")


@pytest.mark.usefixtures("patched")
def test_stream_left_halfway_is_cancelled_at_close(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """A ``break`` after two chunks leaves the step running; leaving the ``with`` (litellm's
    ``close``) ends it ``cancelled`` then, with what had come."""
    with litellm.completion("openai/gpt-4o", MESSAGES, stream=True, **route) as stream:
        for i, _chunk in enumerate(stream):
            if i == 1:
                break
        assert events.steps() == []
    assert cancelled_as_closed(llm_of(events), events)


@pytest.mark.usefixtures("patched")
def test_stream_dropped_halfway_is_cancelled_when_the_caller_lets_go(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """A stream dropped after two chunks, unclosed, ends ``cancelled`` as the caller lets go of
    it, with no collection (litellm's logging object and its stream hold each other: the
    caller's stream must be one nothing of litellm's refers to)."""
    stream = litellm.completion("openai/gpt-4o", MESSAGES, stream=True, **route)
    next(stream)
    next(stream)
    assert events.steps() == []
    gc.disable()
    try:
        del stream
        assert cancelled_as_closed(llm_of(events), events)
    finally:
        gc.enable()


@pytest.mark.usefixtures("patched")
@module_loop
async def test_async_stream_dropped_halfway_is_cancelled_when_the_caller_lets_go(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """An ``acompletion`` stream dropped after two chunks, unclosed, ends ``cancelled`` as the
    caller lets go of it, with no collection."""
    stream = await litellm.acompletion(
        model="openai/gpt-4o", messages=MESSAGES, stream=True, **route
    )
    await stream.__anext__()
    await stream.__anext__()
    assert events.steps() == []
    gc.disable()
    try:
        del stream
        assert cancelled_as_closed(llm_of(events), events)
    finally:
        gc.enable()


@pytest.mark.usefixtures("patched")
def test_stream_twin_shares_the_streams_state(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """What the caller holds reads and sets litellm's stream's own attributes, and is
    exhausted ``completed`` at once."""
    stream = litellm.completion("openai/gpt-4o", MESSAGES, stream=True, **route)
    stream.custom_attribute = 1
    assert stream.model == "gpt-4o"
    chunks = list(stream)
    assert [None, *TEXT_PARTS, None] == _texts(chunks)
    assert stream.__dict__["custom_attribute"] == 1
    assert events.step("litellm_chat").status == "completed"


@pytest.mark.usefixtures("patched")
@module_loop
async def test_async_stream_left_halfway_is_cancelled_at_aclose(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """An ``acompletion`` stream left after two chunks (``async with``: litellm's ``aclose``)
    ends ``cancelled`` then."""
    stream = await litellm.acompletion(
        model="openai/gpt-4o", messages=MESSAGES, stream=True, **route
    )
    async with stream:
        seen = 0
        async for _chunk in stream:
            seen += 1
            if seen == 2:
                break
        assert events.steps() == []
    assert cancelled_as_closed(llm_of(events), events)


@pytest.mark.usefixtures("patched")
@module_loop
async def test_completion_with_acompletion_true_is_one_async_step(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """``completion(..., acompletion=True)`` (litellm's async form of the sync name) is one
    step, ended when the awaited answer comes."""
    pending = litellm.completion("openai/gpt-4o", MESSAGES, acompletion=True, **route)
    assert inspect.isawaitable(pending)
    assert events.steps() == []
    response = await pending
    assert response.choices[0].message.content == TEXT
    assert [s.key for s in events.steps()] == ["litellm_chat"]
    llm = llm_of(events)
    assert (llm["output"]["text"], llm["usage"]) == (TEXT, CHAT_USAGE)


@pytest.mark.usefixtures("patched")
@module_loop
async def test_embedding_and_aembedding_are_recorded(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """``embedding`` and ``aembedding`` are llm steps with the count, dimensions and usage."""
    litellm.embedding("openai/text-embedding-3-small", ["a", "b"], **route)
    await litellm.aembedding(model="openai/text-embedding-3-small", input=["a"], **route)
    assert [s.key for s in events.steps()] == ["litellm_embeddings", "litellm_embeddings"]
    calls = [json.loads(s.llm or "{}") for s in events.steps()]
    assert [
        (c["provider"], c["response_model"], c["output"], c["usage"]["input_tokens"]) for c in calls
    ] == [
        ("openai", "text-embedding-3-small", {"embeddings": 2, "dimensions": 3}, 6),
        ("openai", "text-embedding-3-small", {"embeddings": 1, "dimensions": 3}, 6),
    ]


@pytest.fixture
def openai_patched_too() -> Iterator[None]:
    """openai patched as well, for one test."""
    pipelens.auto_patch(openai)
    yield
    pipelens.unpatch(openai)


@pytest.mark.usefixtures("patched", "openai_patched_too")
def test_with_openai_patched_too_each_call_is_one_step(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """litellm calls the OpenAI SDK underneath for ``openai/`` models (1.110 posts through the
    client, past the patched methods): with both patched, each call is one litellm step with its
    usage, never a second step for the inner call."""

    @pipelens.step
    def ask() -> None:
        litellm.completion("openai/gpt-4o", MESSAGES, **route)
        list(litellm.completion("openai/gpt-4o", MESSAGES, stream=True, **route))
        litellm.embedding("openai/text-embedding-3-small", ["a"], **route)

    ask()
    assert [s.key for s in events.steps()] == [
        "ask.litellm_chat",
        "ask.litellm_chat___1",
        "ask.litellm_embeddings",
        "ask",
    ]
    assert llm_of(events, "ask.litellm_chat")["usage"] == CHAT_USAGE
    assert llm_of(events, "ask.litellm_embeddings")["usage"]["input_tokens"] == 6


@pytest.mark.usefixtures("openai_patched_too")
def test_a_patched_call_inside_an_llm_step_is_not_a_second_step(
    stub: StubServer, events: CapturedEvents
) -> None:
    """A patched call made while an LLM step is current is that step's call seen one level down
    (a library calling another underneath): the inner openai call makes no step of its own."""
    with openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as client:
        with pipelens.llm_call(provider="litellm", model="gpt-4o"):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert [s.key for s in events.steps()] == ["litellm_chat", "openai_chat"]


@pytest.mark.usefixtures("patched", "openai_patched_too")
@module_loop
async def test_with_openai_patched_too_an_async_call_is_one_step(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """``acompletion`` and ``aembedding`` with openai patched too: one litellm step each."""
    await litellm.acompletion(model="openai/gpt-4o", messages=MESSAGES, **route)
    await litellm.aembedding(model="openai/text-embedding-3-small", input=["a"], **route)
    assert [s.key for s in events.steps()] == ["litellm_chat", "litellm_embeddings"]
    assert llm_of(events)["usage"] == CHAT_USAGE


@pytest.mark.usefixtures("patched")
def test_http_error_fails_the_step_and_reaches_the_caller_as_litellms_own(
    route: dict[str, Any], events: CapturedEvents
) -> None:
    """A 429 fails the step with its status; the caller gets litellm's own RateLimitError."""
    with pytest.raises(litellm.RateLimitError) as caught:
        litellm.completion("openai/error-429", MESSAGES, **route)
    assert type(caught.value) is litellm.RateLimitError
    step = events.step("litellm_chat")
    assert (step.status, step.error and step.error.type) == (
        "failed",
        "litellm.exceptions.RateLimitError",
    )
    llm = llm_of(events)
    assert (caught.value.status_code, llm["provider"]) == (429, "openai")
    assert llm["status_code"] == 429


def test_unpatch_restores_the_originals(route: dict[str, Any], events: CapturedEvents) -> None:
    """After ``unpatch(litellm)`` its functions are the originals and calls make no steps."""
    pipelens.auto_patch(litellm)
    assert litellm.completion is not ORIGINAL_COMPLETION
    pipelens.unpatch(litellm)
    assert litellm.completion is ORIGINAL_COMPLETION
    litellm.completion("openai/gpt-4o", MESSAGES, **route)
    assert events.events == []


def test_auto_patch_with_no_argument_patches_every_installed_library() -> None:
    """``auto_patch()`` patches openai, litellm and google-genai when they are installed."""
    from google import genai

    original_generate = genai.models.Models.__dict__["generate_content"]
    try:
        assert {"openai", "litellm", "google.genai"} <= set(pipelens.auto_patch())
        assert litellm.completion is not ORIGINAL_COMPLETION
        assert genai.models.Models.__dict__["generate_content"] is not original_generate
    finally:
        pipelens.unpatch()
    assert litellm.completion is ORIGINAL_COMPLETION
    assert genai.models.Models.__dict__["generate_content"] is original_generate

"""``auto_patch(openai)``: the real ``openai`` client against a local stub server."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from _openai_stub import TEXT, TEXT_PARTS, StubServer

import pipelens
from pipelens._core import containment
from pipelens._llm import openai as _openai
from pipelens.testing import CapturedEvents

MESSAGES = [{"role": "user", "content": "hi"}]
TOOLS = [
    {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
    }
]
ORIGINAL_CREATE = openai.resources.chat.completions.Completions.__dict__["create"]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    """One stub server for the module."""
    with StubServer() as server:
        yield server


@pytest.fixture
def patched() -> Iterator[None]:
    """openai patched for one test, unpatched after."""
    pipelens.auto_patch(openai)
    yield
    pipelens.unpatch(openai)


@pytest.fixture
def client(stub: StubServer) -> Iterator[openai.OpenAI]:
    """A sync client on the stub: no retries, a short timeout."""
    with openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0, timeout=5) as c:
        yield c


@pytest.fixture
async def aclient(stub: StubServer) -> Any:
    """An async client on the stub."""
    async with openai.AsyncOpenAI(
        base_url=stub.base_url, api_key="sk-test", max_retries=0, timeout=5
    ) as c:
        yield c


def llm_of(events: CapturedEvents, key: str = "openai_chat") -> dict[str, Any]:
    """The decoded ``llm`` JSON of the finished step ``key``."""
    step = events.step(key)
    assert step.kind == "llm"
    assert step.llm is not None
    data: dict[str, Any] = json.loads(step.llm)
    return data


CHAT_USAGE = {
    "input_tokens": 12,
    "output_tokens": 4,
    "cached_tokens": 2,
    "reasoning_tokens": 1,
    "total_tokens": 16,
}


# --- plain calls -------------------------------------------------------------------------------


@pytest.mark.usefixtures("patched")
def test_sync_chat_call_records_request_output_and_usage(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """A chat call is an llm step with model, params, messages, output, usage and request id."""
    reply = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, temperature=0.2, max_tokens=50
    )
    assert reply.choices[0].message.content == TEXT
    llm = llm_of(events)
    assert events.step("openai_chat").status == "completed"
    assert {k: v for k, v in llm.items() if k not in ("latency_ns", "request_id", "cost_usd")} == {
        "provider": "openai",
        "operation": "chat",
        "request_model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "params": {"temperature": 0.2, "max_tokens": 50},
        "messages": MESSAGES,
        "output": {"text": TEXT, "finish_reason": "stop"},
        "usage": CHAT_USAGE,
        "response_id": "chatcmpl-1",
    }
    assert llm["request_id"].startswith("req_")
    assert llm["latency_ns"] > 0
    # gpt-4o: 10 uncached input at 2.5, 2 cached at 1.25, 4 output at 10 USD per million
    assert pytest.approx((10 * 2.5 + 2 * 1.25 + 4 * 10) / 1e6) == llm["cost_usd"]


@pytest.mark.usefixtures("patched")
async def test_async_chat_call_is_recorded(aclient: Any, events: CapturedEvents) -> None:
    """An AsyncOpenAI chat call is recorded like a sync one."""
    reply = await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == TEXT
    llm = llm_of(events)
    assert (llm["output"]["text"], llm["usage"]) == (TEXT, CHAT_USAGE)


@pytest.mark.usefixtures("patched")
def test_tool_calls_are_recorded(client: openai.OpenAI, events: CapturedEvents) -> None:
    """A reply asking for a tool records the call's id, name and arguments, and the tools sent."""
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS)
    llm = llm_of(events)
    expected = {
        "tool_calls": [
            {"id": "call_1", "name": "weather", "arguments": '{"city": "Paris"}'},
        ],
        "finish_reason": "tool_calls",
    }
    assert expected == llm["output"]
    assert llm["params"]["tools"] == TOOLS


@pytest.mark.usefixtures("patched")
def test_call_inside_a_step_nests_and_the_run_carries_usage(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """Inside a @step the call is a child; RunFinished.llm_usage equals run.llm_usage()."""
    runs = []

    @pipelens.step
    def answer() -> None:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        runs.append(pipelens.current_run())

    answer()
    assert [s.key for s in events.steps()] == [
        "answer.openai_chat",
        "answer.openai_chat___1",
        "answer",
    ]
    usage = json.loads(events.runs()[0].llm_usage or "null")
    expected = {
        "calls": 2,
        "input_tokens": 24,
        "output_tokens": 8,
        "cached_tokens": 4,
        "reasoning_tokens": 2,
        "calls_without_usage": 0,
    }
    assert expected == {k: v for k, v in usage["gpt-4o-2024-08-06"].items() if k != "cost_usd"}
    in_process = runs[0].llm_usage()["gpt-4o-2024-08-06"]
    assert usage["gpt-4o-2024-08-06"]["cost_usd"] == in_process.cost_usd


@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize("tools", [None, TOOLS], ids=["text", "tool_calls"])
async def test_chat_call_shows_in_the_seed_outputs_as_llmtrack_records_it(
    client: openai.OpenAI, tools: Any
) -> None:
    """In ``output_nested``/``output_flattened``/the pipeline meta, an ``openai_chat`` step has the
    record ``LLMTrack.track`` would make of the reply (but ``created``: the call's start) and the
    output text as its result; usage is still counted once."""
    replies = []

    def ask(step: pipelens.Step) -> str | None:
        extra = {} if tools is None else {"tools": tools}
        replies.append(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, **extra))
        pipelens.LLMTrack.track(step, replies[0])  # what a seed user wrote by hand
        return replies[0].choices[0].message.content

    async def body(st: pipelens.Step) -> None:
        await st.step("ask", ask)

    pipeline = pipelens.Pipeline("p")
    await pipeline.track(body)
    key = f"{pipelens.LLM_RESPONSE_RECORD_KEY_PREFIX}chatcmpl-1"
    tracked = pipeline.output_nested().substeps[0]
    chat = tracked.substeps[0]
    assert chat.name == "openai_chat"
    assert {**tracked.records[key], "created": chat.records[key]["created"]} == chat.records[key]
    assert chat.time.startTs // 1000 == chat.records[key]["created"]
    assert (TEXT if tools is None else None) == chat.result
    flat = [(m.records, m.result) for m in pipeline.output_flattened() if m.name == "openai_chat"]
    assert [(chat.records, chat.result)] == flat
    assert chat.records == pipeline.output_pipeline_meta().steps[2].records
    usage = pipelens.LLMTrack.get_total_usage(pipeline)["gpt-4o-2024-08-06"]
    assert (usage.prompt_tokens, usage.total_tokens) == (2 * 12, 2 * 16)  # the call + by hand


@pytest.mark.usefixtures("patched")
def test_call_outside_any_run_starts_its_own(client: openai.OpenAI, events: CapturedEvents) -> None:
    """A call with no run open is the root of a run of its own."""
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert [r.pipeline for r in events.runs()] == ["openai_chat"]


@pytest.mark.usefixtures("patched")
def test_responses_call_is_recorded(client: openai.OpenAI, events: CapturedEvents) -> None:
    """responses.create records its input, instructions, output text and token details."""
    reply = client.responses.create(model="gpt-4o", input="hi", instructions="be brief")
    assert reply.output_text == TEXT
    llm = llm_of(events, "openai_responses")
    assert (
        llm["operation"],
        llm["messages"],
        llm["params"],
    ) == ("responses", "hi", {"instructions": "be brief"})
    assert llm["output"] == {"text": TEXT, "finish_reason": "completed"}
    expected = {
        "input_tokens": 20,
        "output_tokens": 5,
        "cached_tokens": 10,
        "reasoning_tokens": 3,
        "total_tokens": 25,
    }
    assert expected == llm["usage"]


@pytest.mark.usefixtures("patched")
def test_embeddings_call_is_recorded(client: openai.OpenAI, events: CapturedEvents) -> None:
    """embeddings.create records the inputs, how many vectors of what size, and the tokens."""
    reply = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(reply.data) == 2
    llm = llm_of(events, "openai_embeddings")
    assert (llm["messages"], llm["output"]) == (["a", "b"], {"embeddings": 2, "dimensions": 3})
    assert llm["usage"] == {"input_tokens": 6, "total_tokens": 6}


# --- streams -----------------------------------------------------------------------------------


def _texts(chunks: list[Any]) -> list[str | None]:
    return [c.choices[0].delta.content if c.choices else None for c in chunks]


@pytest.mark.usefixtures("patched")
def test_sync_stream_gives_every_chunk_and_assembles_the_text(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """The caller gets every chunk; the step has the text, time to first token, chunk count."""
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert isinstance(stream, openai.Stream)
    chunks = list(stream)
    assert [None, *TEXT_PARTS, None] == _texts(chunks)
    llm = llm_of(events)
    assert (
        llm["stream"],
        llm["chunks"],
        llm["output"],
    ) == (True, 6, {"text": TEXT, "finish_reason": "stop"})
    assert 0 < llm["time_to_first_token_ns"] <= llm["latency_ns"]
    assert "usage" not in llm
    assert "stream_closed_early" not in llm


def test_stream_chunks_are_the_same_patched_or_not(client: openai.OpenAI) -> None:
    """Patching changes nothing the caller receives from a stream."""
    kwargs: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    plain = [c.model_dump() for c in client.chat.completions.create(**kwargs)]
    pipelens.auto_patch(openai)
    try:
        traced = [c.model_dump() for c in client.chat.completions.create(**kwargs)]
    finally:
        pipelens.unpatch(openai)
    assert plain == traced


@pytest.mark.usefixtures("patched")
def test_stream_usage_opt_in_asks_for_it_and_hides_the_usage_chunk(
    client: openai.OpenAI, stub: StubServer, events: CapturedEvents
) -> None:
    """With llm_stream_usage the request asks for usage; the caller never sees that chunk."""
    pipelens.configure(llm_stream_usage=True)
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert [None, *TEXT_PARTS, None] == _texts(chunks)
    assert stub.requests[-1][1]["stream_options"] == {"include_usage": True}
    llm = llm_of(events)
    assert llm["usage"] == CHAT_USAGE
    assert llm["tokens_per_second"] > 0


@pytest.mark.usefixtures("patched")
def test_stream_usage_asked_by_the_caller_reaches_the_caller(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """A caller who asks for stream usage gets the usage chunk, and the step records it."""
    pipelens.configure(llm_stream_usage=True)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage.total_tokens == 16
    assert llm_of(events)["usage"] == CHAT_USAGE


@pytest.mark.usefixtures("patched")
async def test_async_stream_in_a_context_manager(aclient: Any, events: CapturedEvents) -> None:
    """``async with`` + ``async for`` over an AsyncStream gives every chunk and ends the step."""
    got = []
    async with await aclient.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ) as stream:
        got.extend([chunk async for chunk in stream])
    assert [None, *TEXT_PARTS, None] == _texts(got)
    llm = llm_of(events)
    assert (llm["output"]["text"], llm.get("stream_closed_early", False)) == (TEXT, False)


@pytest.mark.usefixtures("patched")
def test_stream_tool_calls_are_assembled(client: openai.OpenAI, events: CapturedEvents) -> None:
    """Tool-call argument pieces streamed over several chunks are joined in the step."""
    list(
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS, stream=True)
    )
    expected = [{"id": "call_1", "name": "weather", "arguments": '{"city": "Paris"}'}]
    assert expected == llm_of(events)["output"]["tool_calls"]


@pytest.mark.usefixtures("patched")
def test_chunk_with_empty_choices_is_passed_on(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """A chunk with empty ``choices`` (a content filter's) reaches the caller, nothing breaks."""
    chunks = list(client.chat.completions.create(model="filtered", messages=MESSAGES, stream=True))
    assert chunks[0].choices == []
    assert llm_of(events)["output"]["text"] == TEXT


@pytest.mark.usefixtures("patched")
def test_stream_closed_halfway_ends_the_step_marked(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """Leaving a ``with`` stream after two chunks ends the step, marked closed early."""
    with client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True) as stream:
        for i, _chunk in enumerate(stream):
            if i == 1:
                break
        assert events.steps() == []
    llm = llm_of(events)
    assert (llm["stream_closed_early"], llm["chunks"], llm["output"]["text"]) == (True, 2, "Hello")
    assert events.step("openai_chat").status == "completed"


@pytest.mark.usefixtures("patched")
def test_stream_abandoned_halfway_ends_when_collected(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """A stream dropped half-read ends its step, marked closed early, once collected."""
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    next(stream)
    next(stream)
    del stream
    gc.collect()
    llm = llm_of(events)
    assert (llm["stream_closed_early"], llm["chunks"]) == (True, 2)


@pytest.mark.usefixtures("patched")
def test_responses_stream_is_assembled(client: openai.OpenAI, events: CapturedEvents) -> None:
    """A streamed responses call gives every event and records the final response's usage."""
    kinds = [e.type for e in client.responses.create(model="gpt-4o", input="hi", stream=True)]
    assert kinds == ["response.created"] + ["response.output_text.delta"] * 4 + [
        "response.completed"
    ]
    llm = llm_of(events, "openai_responses")
    assert (llm["output"]["text"], llm["usage"]["total_tokens"]) == (TEXT, 25)
    assert llm["time_to_first_token_ns"] > 0


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize(
    ("model", "error", "status"),
    [("error-429", openai.RateLimitError, 429), ("error-500", openai.InternalServerError, 500)],
)
def test_http_errors_fail_the_step_and_reach_the_caller(
    client: openai.OpenAI, events: CapturedEvents, model: str, error: type, status: int
) -> None:
    """A 429 or 500 fails the step with its status code; the caller gets openai's own error."""
    with pytest.raises(error) as caught:
        client.chat.completions.create(model=model, messages=MESSAGES)
    step = events.step("openai_chat")
    assert ("failed", f"openai.{error.__name__}") == (step.status, step.error and step.error.type)
    assert status == caught.value.status_code == llm_of(events)["status_code"]


@pytest.mark.usefixtures("patched")
def test_timeout_fails_the_step(stub: StubServer, events: CapturedEvents) -> None:
    """A client timeout fails the step, marked ``timeout``, and raises APITimeoutError."""
    with (
        openai.OpenAI(base_url=stub.base_url, api_key="sk-t", max_retries=0, timeout=0.2) as c,
        pytest.raises(openai.APITimeoutError),
    ):
        c.chat.completions.create(model="slow", messages=MESSAGES)
    assert (
        events.step("openai_chat").status,
        llm_of(events)["error_code"],
    ) == ("failed", "timeout")


# --- patching ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("patched")
def test_with_raw_response_is_recorded(client: openai.OpenAI, events: CapturedEvents) -> None:
    """with_raw_response still returns the raw response; the step has its parsed output."""
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == TEXT
    llm = llm_of(events)
    assert (True, TEXT, raw.request_id) == (
        llm["raw_response"],
        llm["output"]["text"],
        llm["request_id"],
    )


def test_unpatch_restores_the_originals(client: openai.OpenAI, events: CapturedEvents) -> None:
    """After unpatch the classes hold their original methods and calls make no steps."""
    pipelens.auto_patch(openai)
    assert ORIGINAL_CREATE is not openai.resources.chat.completions.Completions.__dict__["create"]
    pipelens.unpatch(openai)
    assert ORIGINAL_CREATE is openai.resources.chat.completions.Completions.__dict__["create"]
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert events.steps() == []


def test_patching_twice_records_each_call_once(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """auto_patch is idempotent: twice patched, a call is still one step."""
    assert pipelens.auto_patch(openai) == ["openai"]
    assert "openai" in pipelens.auto_patch()  # with every other supported library installed
    try:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        pipelens.unpatch()
    assert [s.key for s in events.steps()] == ["openai_chat"]


def test_clients_made_before_and_after_patching_are_covered(
    stub: StubServer, events: CapturedEvents
) -> None:
    """A client created before auto_patch, and an Azure one created after, are both traced."""
    before = openai.OpenAI(base_url=stub.base_url, api_key="sk-t", max_retries=0)
    pipelens.auto_patch(openai)
    try:
        after = openai.AzureOpenAI(
            base_url=stub.base_url, api_key="sk-t", api_version="2024-06-01", max_retries=0
        )
        before.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        after.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        pipelens.unpatch(openai)
        before.close()
    assert [s.key for s in events.steps()] == ["openai_chat", "openai_chat"]


def test_unsupported_library_is_refused_by_name() -> None:
    """auto_patch of a library PipeLens does not know names it and the supported ones."""
    with pytest.raises(
        pipelens.ConfigurationError,
        match=r"auto_patch\('json'\): PipeLens patches \[.*'openai'.*\]",
    ):
        pipelens.auto_patch("json")


@pytest.mark.usefixtures("patched")
def test_disabled_pipelens_makes_plain_calls(client: openai.OpenAI, events: CapturedEvents) -> None:
    """With ``enabled=False`` the patched method is a plain call."""
    pipelens.configure(enabled=False)
    assert (
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].message.content
        == TEXT
    )
    assert events.events == []


@pytest.mark.usefixtures("patched")
def test_a_pipelens_bug_never_reaches_the_caller(
    client: openai.OpenAI, events: CapturedEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When reading the response fails inside PipeLens, the caller gets the reply, the step ends."""

    def broken(call: Any, response: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(containment, "RAISE_INTERNAL", False)
    monkeypatch.setattr(_openai, "read_response", broken)
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content == TEXT
    assert events.step("openai_chat").status == "completed"


@pytest.mark.usefixtures("patched")
async def test_async_with_raw_response_is_recorded(aclient: Any, events: CapturedEvents) -> None:
    """AsyncOpenAI's with_raw_response returns the raw response and records the parsed output."""
    raw = await aclient.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == TEXT
    assert (llm_of(events)["raw_response"], llm_of(events)["output"]["text"]) == (True, TEXT)


@pytest.mark.usefixtures("patched")
def test_with_streaming_response_leaves_the_body_to_the_caller(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """with_streaming_response: the caller reads the body; the step records the request id."""
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES
    ) as response:
        body = json.loads(response.read())
        request_id = response.headers["x-request-id"]
    assert body["choices"][0]["message"]["content"] == TEXT
    llm = llm_of(events)
    assert (llm["raw_response"], llm["request_id"], "output" in llm) == (True, request_id, False)


@pytest.mark.usefixtures("patched")
async def test_async_stream_abandoned_halfway_ends_when_collected(
    aclient: Any, events: CapturedEvents
) -> None:
    """An AsyncStream dropped after one chunk ends its step, marked closed early."""
    stream = await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    await stream.__anext__()
    del stream
    gc.collect()
    llm = llm_of(events)
    assert (llm["stream_closed_early"], llm["chunks"]) == (True, 1)


@pytest.mark.usefixtures("patched")
def test_secrets_in_messages_are_scrubbed(client: openai.OpenAI, events: CapturedEvents) -> None:
    """A key pasted into a prompt leaves the process as [REDACTED]; the caller's call is intact."""
    secret = "sk-" + "a" * 30
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"my key is {secret}"}]
    )
    llm = llm_of(events)
    assert llm["messages"] == [{"role": "user", "content": "my key is [REDACTED]"}]

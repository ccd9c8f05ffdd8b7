"""``auto_patch(openai)``: the real ``openai`` client against a local stub server."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest
from _openai_stub import STRUCTURED, STRUCTURED_PARTS, TEXT, TEXT_PARTS, StubServer

import pipelens
from pipelens._core import containment
from pipelens._llm import openai as _openai
from pipelens._llm import patch
from pipelens._llm.openai import ChatStream
from pipelens._llm.provider import EndpointConfig
from pipelens.events import StepFinished
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


RESPONSE_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * len(TEXT_PARTS),
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def cancelled_as_closed(step: StepFinished) -> bool:
    """Whether ``step`` ended ``cancelled`` because its consumer closed or dropped the stream."""
    return (step.status, step.error and step.error.type) == ("cancelled", "pipelens._StreamClosed")


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
        "cache_write_tokens": 0,
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


def _seen(chunks: Any) -> list[tuple[Any, Any, set[str]]]:
    """What a caller can see of each chunk: every field, the fields the API set, their names."""
    return [(c.model_dump(), c.to_dict(), set(c.model_fields_set)) for c in chunks]


@pytest.mark.parametrize("stream_usage", [True, False, "auto"])
def test_stream_chunks_are_the_same_patched_or_not(
    client: openai.OpenAI, stub: StubServer, events: CapturedEvents, stream_usage: Any
) -> None:
    """Whatever llm_stream_usage says, the caller gets the chunks of an unpatched call: no
    usage chunk, no ``usage`` field set on the others, nothing more, nothing less."""
    kwargs: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    plain = _seen(client.chat.completions.create(**kwargs))
    pipelens.configure(llm_stream_usage=stream_usage)
    pipelens.auto_patch(openai)
    try:
        traced = _seen(client.chat.completions.create(**kwargs))
    finally:
        pipelens.unpatch(openai)
    assert plain == traced
    asked = "stream_options" in stub.requests[-1][1]
    usage = llm_of(events).get("usage")
    # "auto" asks only OpenAI's own API, not this stub: unknown usage, never zero.
    assert (asked, usage) == ((True, CHAT_USAGE) if stream_usage is True else (False, None))


def test_auto_stream_usage_asks_only_openais_own_api() -> None:
    """The "auto" default adds stream_options for api.openai.com only, never to a raw call."""
    kwargs: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    with (
        openai.OpenAI(api_key="sk-test") as official,
        openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-test") as local,
    ):
        ask = _openai.with_stream_usage
        assert ask(kwargs, official.chat.completions, False) == {
            **kwargs,
            "extra_body": {"stream_options": {"include_usage": True}},
        }
        assert ask(kwargs, local.chat.completions, False) is None
        assert ask(kwargs, local.chat.completions, True) is not None
        raw = {**kwargs, "extra_headers": {"X-Stainless-Raw-Response": "true"}}
        assert ask(raw, official.chat.completions, True) is None


def test_stream_usage_setting_is_checked() -> None:
    """llm_stream_usage takes True, False or "auto", and names the bad value otherwise."""
    with pytest.raises(pipelens.ConfigurationError, match=r"llm_stream_usage='yes'.*'auto'"):
        pipelens.configure(llm_stream_usage="yes")  # type: ignore[arg-type]


@pytest.mark.usefixtures("patched")
def test_raw_stream_is_never_asked_for_usage(
    client: openai.OpenAI, stub: StubServer, events: CapturedEvents
) -> None:
    """A raw stream's caller reads every chunk itself: usage is not asked for, even when on."""
    pipelens.configure(llm_stream_usage=True)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    chunks = list(raw.parse())
    assert "stream_options" not in stub.requests[-1][1]
    assert [None, *TEXT_PARTS, None] == _texts(chunks)


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
def test_stream_usage_ask_keeps_the_callers_extra_body(
    client: openai.OpenAI, stub: StubServer, events: CapturedEvents
) -> None:
    """The ask joins the caller's own ``extra_body`` keys, and a ``stream_options`` the caller put
    there is theirs: sent as given, its usage chunk handed to the caller."""
    pipelens.configure(llm_stream_usage=True)
    list(
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_body={"tag": "x"}
        )
    )
    body = stub.requests[-1][1]
    assert (body["tag"], body["stream_options"]) == ("x", {"include_usage": True})
    own = {"stream_options": {"include_usage": True, "note": 1}}
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_body=own
        )
    )
    assert stub.requests[-1][1]["stream_options"] == {"include_usage": True, "note": 1}
    assert any(chunk.usage is not None for chunk in chunks)  # not swallowed: the caller asked


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
    assert events.step("openai_chat").status == "completed"


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
def test_stream_closed_halfway_is_cancelled_at_close(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """A ``break`` after two chunks leaves the step running; leaving the ``with`` (the close)
    ends it ``cancelled``, marked closed early, with what had come."""
    with client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True) as stream:
        for i, _chunk in enumerate(stream):
            if i == 1:
                break
        assert events.steps() == []
    llm = llm_of(events)
    assert (llm["stream_closed_early"], llm["chunks"], llm["output"]["text"]) == (True, 2, "Hello")
    assert cancelled_as_closed(events.step("openai_chat"))


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
    assert cancelled_as_closed(events.step("openai_chat"))


@pytest.mark.usefixtures("patched")
def test_streams_read_to_their_end_or_dropped_leave_no_watch_behind(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """A stream's watch is kept until its step ends, then let go: ten streams read to their
    end and one dropped half-read leave none, and eleven steps."""
    for _ in range(10):
        list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    next(stream)
    assert len(patch._UNENDED) == 1
    del stream
    gc.collect()
    assert patch._UNENDED == {}
    assert len(events.steps()) == 11


_HELD_AT_EXIT = """
import openai
import pipelens
from pipelens._demo.openai_stub import StubServer

pipelens.configure(transport=pipelens.FileTransport({path!r}))
pipelens.auto_patch(openai)
stub = StubServer().__enter__()
client = openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0)
ASK = [{{"role": "user", "content": "hi"}}]
KEPT = client.chat.completions.create(model="gpt-4o", messages=ASK, stream=True)
next(KEPT)
"""


def test_a_stream_still_held_at_exit_ends_its_step_cancelled(tmp_path: Path) -> None:
    """A program that exits holding a half-read stream (a global) still sends its step, ended
    ``cancelled`` as closed early: the exit ends every stream not yet ended."""
    path = tmp_path / "events.jsonl"
    program = _HELD_AT_EXIT.format(path=str(path))
    command = [sys.executable, "-c", program]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    (step,) = [
        e for batch in pipelens.read_event_file(path) for e in batch.events
        if isinstance(e, StepFinished) and e.name == "openai_chat"
    ]  # fmt: skip
    assert step.status == "cancelled"
    assert json.loads(step.llm or "{}")["stream_closed_early"] is True


@pytest.mark.usefixtures("patched")
def test_responses_stream_is_assembled(client: openai.OpenAI, events: CapturedEvents) -> None:
    """A streamed responses call gives every event and records the final response's usage."""
    kinds = [e.type for e in client.responses.create(model="gpt-4o", input="hi", stream=True)]
    assert kinds == RESPONSE_EVENTS
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
    assert "openai" in pipelens.auto_patch()  # every supported SDK installed, openai among them
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


def test_an_endpoint_the_installed_library_lacks_is_skipped(
    client: openai.OpenAI, events: CapturedEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint whose method this openai lacks (``chat.completions.parse`` before 1.92) is
    skipped: the others are patched and recorded."""
    missing = EndpointConfig(
        "openai.resources.chat.completions", "Completions", "no_such_method", "chat", ChatStream
    )
    monkeypatch.setattr(_openai, "ENDPOINTS", (missing, *_openai.ENDPOINTS))
    pipelens.auto_patch(openai)
    try:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    finally:
        pipelens.unpatch(openai)
    assert [s.key for s in events.steps()] == ["openai_chat"]


@pytest.mark.parametrize("function", [pipelens.auto_patch, pipelens.unpatch])
def test_unsupported_library_is_refused_by_name(function: Callable[[str], object]) -> None:
    """auto_patch (or unpatch) of a library PipeLens does not know names the function called,
    the library and the supported ones."""
    with pytest.raises(
        pipelens.ConfigurationError,
        match=rf"{function.__name__}\('json'\): PipeLens patches \[.*'openai'.*\]",
    ):
        function("json")


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
    assert cancelled_as_closed(events.step("openai_chat"))


@pytest.mark.usefixtures("patched")
def test_secrets_in_messages_are_scrubbed(client: openai.OpenAI, events: CapturedEvents) -> None:
    """A key pasted into a prompt leaves the process as [REDACTED]; the caller's call is intact."""
    secret = "sk-" + "a" * 30
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"my key is {secret}"}]
    )
    llm = llm_of(events)
    assert llm["messages"] == [{"role": "user", "content": "my key is [REDACTED]"}]


# --- structured output: parse ------------------------------------------------------------------


class Answer(pydantic.BaseModel):
    """The structured answer the stub gives to a ``json_schema`` request."""

    answer: str


ANSWER = Answer(answer=TEXT)


def only_step(events: CapturedEvents, key: str) -> StepFinished:
    """The one step of the test, which must be ``key``: one call, one step."""
    assert [s.key for s in events.steps()] == [key]
    return events.step(key)


@pytest.mark.usefixtures("patched")
def test_chat_parse_is_one_llm_step(client: openai.OpenAI, events: CapturedEvents) -> None:
    """``chat.completions.parse`` is one LLM step like ``create``, with the JSON text, the usage
    and the response format asked for; the caller gets the parsed answer."""
    reply = client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=Answer)
    assert reply.choices[0].message.parsed == ANSWER
    assert only_step(events, "openai_chat").status == "completed"
    llm = llm_of(events)
    assert (llm["output"]["text"], llm["usage"], llm["response_model"]) == (
        STRUCTURED,
        CHAT_USAGE,
        "gpt-4o-2024-08-06",
    )
    assert "Answer" in llm["params"]["response_format"]


@pytest.mark.usefixtures("patched")
async def test_async_chat_parse_is_one_llm_step(aclient: Any, events: CapturedEvents) -> None:
    """``AsyncOpenAI``'s ``chat.completions.parse`` is one LLM step too."""
    reply = await aclient.chat.completions.parse(
        model="gpt-4o", messages=MESSAGES, response_format=Answer
    )
    assert reply.choices[0].message.parsed == ANSWER
    assert only_step(events, "openai_chat").status == "completed"
    assert llm_of(events)["output"]["text"] == STRUCTURED


@pytest.mark.usefixtures("patched")
def test_responses_parse_is_one_llm_step(client: openai.OpenAI, events: CapturedEvents) -> None:
    """``responses.parse`` is one LLM step like ``responses.create``."""
    reply = client.responses.parse(model="gpt-4o", input="hi", text_format=Answer)
    assert reply.output_parsed == ANSWER
    assert only_step(events, "openai_responses").status == "completed"
    llm = llm_of(events, "openai_responses")
    assert (llm["output"]["text"], llm["usage"]["total_tokens"]) == (STRUCTURED, 25)


@pytest.mark.usefixtures("patched")
async def test_async_responses_parse_is_one_llm_step(aclient: Any, events: CapturedEvents) -> None:
    """``AsyncOpenAI``'s ``responses.parse`` is one LLM step too."""
    reply = await aclient.responses.parse(model="gpt-4o", input="hi", text_format=Answer)
    assert reply.output_parsed == ANSWER
    assert only_step(events, "openai_responses").status == "completed"


def test_parse_returns_what_it_returns_unpatched(client: openai.OpenAI) -> None:
    """Patched or not, ``parse`` returns an equal object of the same class."""
    kwargs: dict[str, Any] = {"model": "gpt-4o", "messages": MESSAGES, "response_format": Answer}
    plain = client.chat.completions.parse(**kwargs)
    pipelens.auto_patch(openai)
    try:
        traced = client.chat.completions.parse(**kwargs)
    finally:
        pipelens.unpatch(openai)
    # warnings=False: pydantic warns that ``parsed`` is typed None in the generic base
    assert (type(plain), plain.model_dump(warnings=False)) == (
        type(traced),
        traced.model_dump(warnings=False),
    )


def _parse_chat(client: openai.OpenAI, model: str) -> Any:
    return client.chat.completions.parse(model=model, messages=MESSAGES, response_format=Answer)


def _parse_responses(client: openai.OpenAI, model: str) -> Any:
    return client.responses.parse(model=model, input="hi", text_format=Answer)


@pytest.mark.parametrize(
    ("parse", "key"),
    [(_parse_chat, "openai_chat"), (_parse_responses, "openai_responses")],
    ids=["chat", "responses"],
)
def test_a_parse_validation_error_fails_the_step_and_reaches_the_caller(
    client: openai.OpenAI, events: CapturedEvents, parse: Any, key: str
) -> None:
    """An answer that does not validate fails the step with pydantic's ``ValidationError``, the
    very error (type and message) the caller gets without PipeLens."""
    with pytest.raises(pydantic.ValidationError) as plain:
        parse(client, "bad-json")
    pipelens.auto_patch(openai)
    try:
        with pytest.raises(pydantic.ValidationError) as traced:
            parse(client, "bad-json")
    finally:
        pipelens.unpatch(openai)
    assert str(plain.value) == str(traced.value)
    step = only_step(events, key)
    assert (step.status, step.error and step.error.message) == ("failed", str(traced.value))
    assert step.error is not None
    assert step.error.type.endswith("ValidationError")


@pytest.mark.usefixtures("patched")
def test_a_length_limited_parse_fails_the_step_with_its_usage(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """``LengthFinishReasonError`` fails the step and reaches the caller; the step still has the
    completion's model, tokens and finish reason (they were spent)."""
    with pytest.raises(openai.LengthFinishReasonError):
        _parse_chat(client, "length")
    step = only_step(events, "openai_chat")
    assert (step.status, step.error and step.error.type) == (
        "failed",
        "openai.LengthFinishReasonError",
    )
    llm = llm_of(events)
    assert (llm["usage"], llm["output"]["finish_reason"]) == (CHAT_USAGE, "length")


@pytest.mark.usefixtures("patched")
def test_with_raw_response_parse_is_one_step_and_its_refusal_the_callers(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """``with_raw_response.parse`` is one step with the parsed answer's text; an answer that
    does not validate reaches the caller when it parses, and is no PipeLens error."""
    raw = client.chat.completions.with_raw_response.parse(
        model="gpt-4o", messages=MESSAGES, response_format=Answer
    )
    assert raw.parse().choices[0].message.parsed == ANSWER
    refused = client.chat.completions.with_raw_response.parse(
        model="bad-json", messages=MESSAGES, response_format=Answer
    )
    with pytest.raises(pydantic.ValidationError):
        refused.parse()
    steps = events.steps()
    assert [(s.key, s.status) for s in steps] == [("openai_chat", "completed")] * 2
    outputs = [json.loads(s.llm or "{}").get("output") for s in steps]
    assert outputs == [{"text": STRUCTURED, "finish_reason": "stop"}, None]


# --- stream helpers ----------------------------------------------------------------------------


def _deltas(events: list[Any]) -> list[str]:
    return [e.delta for e in events if e.type in ("content.delta", "response.output_text.delta")]


@pytest.mark.usefixtures("patched")
def test_chat_stream_helper_is_one_step_ending_with_the_stream(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """``chat.completions.stream``: the step runs while the caller reads, and ends with the
    stream, with its chunks, text, time to first token and response model; the caller gets the
    deltas and the final (parsed) completion."""
    with client.chat.completions.stream(
        model="gpt-4o", messages=MESSAGES, response_format=Answer
    ) as stream:
        assert events.steps() == []
        got = list(stream)
        final = stream.get_final_completion()
    assert _deltas(got) == list(STRUCTURED_PARTS)
    assert final.choices[0].message.parsed == ANSWER
    assert only_step(events, "openai_chat").status == "completed"
    llm = llm_of(events)
    assert (llm["chunks"], llm["output"]["text"], llm["response_model"]) == (
        len(STRUCTURED_PARTS) + 2,  # with the role's chunk and the finish's
        STRUCTURED,
        "gpt-4o-2024-08-06",
    )
    assert 0 < llm["time_to_first_token_ns"] <= llm["latency_ns"]
    assert "stream_closed_early" not in llm


@pytest.mark.usefixtures("patched")
async def test_async_chat_stream_helper_is_one_step(aclient: Any, events: CapturedEvents) -> None:
    """The async ``chat.completions.stream`` is one step, ending with the stream."""
    async with aclient.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
        assert events.steps() == []
        got = [event async for event in stream]
        final = await stream.get_final_completion()
    assert (_deltas(got), final.choices[0].message.content) == (list(TEXT_PARTS), TEXT)
    assert only_step(events, "openai_chat").status == "completed"
    assert (llm_of(events)["chunks"], llm_of(events)["output"]["text"]) == (6, TEXT)


@pytest.mark.usefixtures("patched")
def test_responses_stream_helper_is_one_step(client: openai.OpenAI, events: CapturedEvents) -> None:
    """``responses.stream`` is one step, ending with the stream, with the final usage."""
    with client.responses.stream(model="gpt-4o", input="hi") as stream:
        assert events.steps() == []
        got = list(stream)
        final = stream.get_final_response()
    assert (_deltas(got), final.output_text) == (list(TEXT_PARTS), TEXT)
    assert only_step(events, "openai_responses").status == "completed"
    llm = llm_of(events, "openai_responses")
    assert (llm["output"]["text"], llm["usage"]["total_tokens"]) == (TEXT, 25)
    assert llm["time_to_first_token_ns"] > 0


@pytest.mark.usefixtures("patched")
async def test_async_responses_stream_helper_is_one_step(
    aclient: Any, events: CapturedEvents
) -> None:
    """The async ``responses.stream`` is one step, with the parsed final response."""
    async with aclient.responses.stream(model="gpt-4o", input="hi", text_format=Answer) as stream:
        got = [event async for event in stream]
        final = await stream.get_final_response()
    assert (_deltas(got), final.output_parsed) == (list(STRUCTURED_PARTS), ANSWER)
    assert only_step(events, "openai_responses").status == "completed"


@pytest.mark.usefixtures("patched")
def test_responses_stream_resumed_by_id_is_one_step(
    client: openai.OpenAI, stub: StubServer, events: CapturedEvents
) -> None:
    """``responses.stream(response_id=...)`` (streaming a stored response again, a GET) is one
    step with the response's model, text and usage; a plain ``retrieve`` is no call of a model."""
    with client.responses.stream(response_id="resp_1") as stream:
        got = list(stream)
    assert stub.requests[-1][0].startswith("/v1/responses/resp_1?")
    assert _deltas(got) == list(TEXT_PARTS)
    assert only_step(events, "openai_responses").status == "completed"
    llm = llm_of(events, "openai_responses")
    assert (llm["response_model"], llm["output"]["text"], llm["usage"]["total_tokens"]) == (
        "gpt-4o-2024-08-06",
        TEXT,
        25,
    )
    assert llm["params"]["response_id"] == "resp_1"
    assert client.responses.retrieve("resp_1").output_text == TEXT
    assert len(events.steps()) == 1


@pytest.mark.usefixtures("patched")
async def test_async_responses_stream_resumed_by_id_is_one_step(
    aclient: Any, events: CapturedEvents
) -> None:
    """The async ``responses.stream(response_id=...)`` is one step too."""
    async with aclient.responses.stream(response_id="resp_1") as stream:
        got = [event async for event in stream]
    assert _deltas(got) == list(TEXT_PARTS)
    assert only_step(events, "openai_responses").status == "completed"
    assert llm_of(events, "openai_responses")["output"]["text"] == TEXT


def test_stream_helper_events_are_the_same_patched_or_not(client: openai.OpenAI) -> None:
    """Patching changes nothing the caller receives from a stream helper, with stream usage
    asked for behind its back or not."""

    def read() -> list[Any]:
        with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
            return [event.model_dump() for event in stream]

    plain = read()
    pipelens.auto_patch(openai)
    try:
        traced = read()
        pipelens.configure(llm_stream_usage=True)
        with_usage = read()
    finally:
        pipelens.unpatch(openai)
    assert plain == traced == with_usage


@pytest.mark.usefixtures("patched")
def test_stream_helper_gets_usage_when_asked(
    client: openai.OpenAI, stub: StubServer, events: CapturedEvents
) -> None:
    """With ``llm_stream_usage`` the stream helper's request asks for usage (the helper passes
    openai's ``omit`` for stream_options) and the step records it."""
    pipelens.configure(llm_stream_usage=True)
    with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
        stream.until_done()
    assert stub.requests[-1][1]["stream_options"] == {"include_usage": True}
    assert llm_of(events)["usage"] == CHAT_USAGE


@pytest.mark.usefixtures("patched")
def test_stream_helper_left_early_is_cancelled_at_close(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """Breaking out of a stream helper leaves its step running until the ``with`` closes it:
    then ``cancelled``, closed early, with the text that had come."""
    with client.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
        for event in stream:
            if event.type == "content.delta":
                break
        assert events.steps() == []
    assert cancelled_as_closed(only_step(events, "openai_chat"))
    llm = llm_of(events)
    assert (llm["stream_closed_early"], llm["output"]["text"]) == (True, TEXT_PARTS[0])


@pytest.mark.usefixtures("patched")
async def test_async_responses_stream_helper_left_early_is_cancelled(
    aclient: Any, events: CapturedEvents
) -> None:
    """The async ``responses.stream`` left after the first delta ends ``cancelled`` at close."""
    async with aclient.responses.stream(model="gpt-4o", input="hi") as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                break
    assert cancelled_as_closed(only_step(events, "openai_responses"))
    assert llm_of(events, "openai_responses")["stream_closed_early"] is True


# --- raw streams -------------------------------------------------------------------------------


def assert_raw_stream_step(events: CapturedEvents) -> None:
    """One completed chat step carrying the whole stream, marked raw."""
    assert only_step(events, "openai_chat").status == "completed"
    llm = llm_of(events)
    assert (llm["raw_response"], llm["stream"], llm["chunks"], llm["output"]["text"]) == (
        True,
        True,
        6,
        TEXT,
    )
    assert llm["response_model"] == "gpt-4o-2024-08-06"
    assert 0 < llm["time_to_first_token_ns"] <= llm["latency_ns"]
    assert llm["request_id"].startswith("req_")


@pytest.mark.usefixtures("patched")
def test_with_raw_response_stream_ends_with_the_stream(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """``with_raw_response.create(stream=True)``: the step is still running at the headers and
    ends with the stream, carrying its chunks; the caller's chunks are untouched."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    assert events.steps() == []
    chunks = list(raw.parse())
    assert [None, *TEXT_PARTS, None] == _texts(chunks)
    assert_raw_stream_step(events)


@pytest.mark.usefixtures("patched")
async def test_async_with_raw_response_stream_ends_with_the_stream(
    aclient: Any, events: CapturedEvents
) -> None:
    """The async ``with_raw_response`` stream ends its step with the stream."""
    raw = await aclient.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    assert events.steps() == []
    chunks = [chunk async for chunk in raw.parse()]
    assert [None, *TEXT_PARTS, None] == _texts(chunks)
    assert_raw_stream_step(events)


@pytest.mark.usefixtures("patched")
def test_with_streaming_response_stream_ends_with_the_stream(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """``with_streaming_response.create(stream=True)``: the step ends with the parsed stream."""
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ) as response:
        assert events.steps() == []
        chunks = list(response.parse())
    assert [None, *TEXT_PARTS, None] == _texts(chunks)
    assert_raw_stream_step(events)


@pytest.mark.usefixtures("patched")
async def test_async_with_streaming_response_stream_ends_with_the_stream(
    aclient: Any, events: CapturedEvents
) -> None:
    """The async ``with_streaming_response`` stream (``await response.parse()``) ends its step
    with the stream."""
    async with aclient.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ) as response:
        stream = await response.parse()
        chunks = [chunk async for chunk in stream]
    assert [None, *TEXT_PARTS, None] == _texts(chunks)
    assert_raw_stream_step(events)


@pytest.mark.usefixtures("patched")
def test_raw_stream_read_as_lines_ends_with_its_body(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """A raw stream whose body the caller reads itself ends its step when the body ends (the
    response closes); PipeLens saw no chunk, so it claims none."""
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ) as response:
        lines = [line for line in response.iter_lines() if line]
        assert only_step(events, "openai_chat").status == "completed"
    assert lines[-1] == "data: [DONE]"
    llm = llm_of(events)
    assert (llm["raw_response"], "chunks" in llm, "stream_closed_early" in llm) == (
        True,
        False,
        False,
    )


@pytest.mark.usefixtures("patched")
def test_raw_stream_left_early_is_cancelled_at_close(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """A ``with_streaming_response`` stream left after one chunk ends ``cancelled`` at close."""
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ) as response:
        next(iter(response.parse()))
    assert cancelled_as_closed(only_step(events, "openai_chat"))
    assert llm_of(events)["chunks"] == 1


# --- beta aliases ------------------------------------------------------------------------------


@pytest.mark.usefixtures("patched")
def test_beta_chat_completions_parse_and_stream_are_one_step_each(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """``client.beta.chat.completions`` (the same class in this openai) parses and streams as
    one step per call."""
    reply = client.beta.chat.completions.parse(
        model="gpt-4o", messages=MESSAGES, response_format=Answer
    )
    with client.beta.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as stream:
        stream.until_done()
    assert reply.choices[0].message.parsed == ANSWER
    assert [s.key for s in events.steps()] == ["openai_chat", "openai_chat"]


@pytest.mark.usefixtures("patched")
def test_beta_responses_create_is_recorded(
    client: openai.OpenAI, stub: StubServer, events: CapturedEvents
) -> None:
    """``client.beta.responses.create`` (its own class, posting ``?beta=true``) is an LLM step,
    plain and streamed."""
    reply = client.beta.responses.create(model="gpt-4o", input="hi")
    kinds = [e.type for e in client.beta.responses.create(model="gpt-4o", input="hi", stream=True)]
    assert stub.requests[-1][0].endswith("/responses?beta=true")
    assert (reply.output[0].content[0].text, kinds) == (TEXT, RESPONSE_EVENTS)
    steps = events.steps()
    assert [s.key for s in steps] == ["openai_responses", "openai_responses"]
    texts = [json.loads(s.llm or "{}")["output"]["text"] for s in steps]
    assert texts == [TEXT, TEXT]


@pytest.mark.usefixtures("patched")
async def test_async_beta_responses_create_is_recorded(
    aclient: Any, events: CapturedEvents
) -> None:
    """``AsyncOpenAI``'s ``beta.responses.create`` is an LLM step."""
    await aclient.beta.responses.create(model="gpt-4o", input="hi")
    assert llm_of(events, "openai_responses")["usage"]["total_tokens"] == 25


# --- abandoned streams -------------------------------------------------------------------------


@pytest.mark.usefixtures("patched")
def test_consumer_error_in_a_with_stream_cancels_at_close(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """The consumer's own exception out of the loop inside ``with`` reaches it unchanged; the
    ``with`` closes the stream, which ends the step ``cancelled``."""
    boom = ValueError("consumer bug")

    def consume() -> None:
        with client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        ) as stream:
            for _chunk in stream:
                raise boom

    with pytest.raises(ValueError, match="consumer bug") as caught:
        consume()
    assert caught.value is boom
    assert cancelled_as_closed(events.step("openai_chat"))
    assert llm_of(events)["stream_closed_early"] is True


@pytest.mark.usefixtures("patched")
def test_consumer_error_out_of_a_bare_loop_cancels_when_collected(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """Without ``with`` nothing closes the stream: its step ends ``cancelled`` when the stream
    is collected (a stream is a reference cycle, so at the next garbage collection)."""

    def consume() -> None:
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        for _chunk in stream:
            raise ValueError("consumer bug")

    with pytest.raises(ValueError, match="consumer bug"):
        consume()
    gc.collect()
    assert cancelled_as_closed(events.step("openai_chat"))
    assert llm_of(events)["chunks"] == 1


@pytest.mark.usefixtures("patched")
async def test_async_stream_closed_halfway_is_cancelled_at_close(
    aclient: Any, events: CapturedEvents
) -> None:
    """``await stream.close()`` after one chunk ends the step ``cancelled`` then and there."""
    stream = await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    await stream.__anext__()
    assert events.steps() == []
    await stream.close()
    assert cancelled_as_closed(events.step("openai_chat"))
    assert llm_of(events)["chunks"] == 1


@pytest.mark.usefixtures("patched")
def test_stream_closed_after_its_end_stays_completed(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """Closing a stream that was read to its end changes nothing: completed, not closed early."""
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    list(stream)
    stream.close()
    assert events.step("openai_chat").status == "completed"
    assert "stream_closed_early" not in llm_of(events)


@pytest.mark.usefixtures("patched")
def test_raw_stream_abandoned_is_cancelled_when_collected(
    client: openai.OpenAI, events: CapturedEvents
) -> None:
    """A raw stream parsed, read a chunk and dropped unclosed ends ``cancelled`` once collected."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    next(iter(raw.parse()))
    del raw
    gc.collect()
    assert cancelled_as_closed(only_step(events, "openai_chat"))
    assert llm_of(events)["chunks"] == 1

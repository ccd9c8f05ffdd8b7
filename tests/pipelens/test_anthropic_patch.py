"""``auto_patch(anthropic)``: the real ``anthropic`` client against a local stub server."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from _anthropic_stub import (
    TEXT,
    TEXT_PARTS,
    TOOL_INPUT,
    TOOL_TEXT,
    StubServer,
    event_kinds,
    response_model,
)

import pipelens
from pipelens._core import containment
from pipelens._llm import anthropic as _anthropic
from pipelens._llm.patch import is_patched
from pipelens._llm.prices import price_for
from pipelens.testing import CapturedEvents

MODEL = "claude-sonnet-4"
MESSAGES = [{"role": "user", "content": "hi"}]
TOOLS = [{"name": "weather", "input_schema": {"type": "object", "properties": {}}}]
ASK: dict[str, Any] = {"model": MODEL, "max_tokens": 50, "messages": MESSAGES}
#: The stub's usage in our counting: input includes the 5 read from and 3 written to the cache.
USAGE = {
    "input_tokens": 10 + 5 + 3,
    "output_tokens": 4,
    "cached_tokens": 5,
    "cache_write_tokens": 3,
    "reasoning_tokens": 1,  # of the 4 output tokens: Anthropic's thinking tokens
    "total_tokens": 22,
}
TOOL_CALL = {"id": "toolu_1", "name": "weather", "arguments": '{"city": "Paris"}'}
MESSAGES_CLASS = anthropic.resources.messages.messages.Messages
ORIGINALS = {name: MESSAGES_CLASS.__dict__[name] for name in ("create", "parse", "stream")}


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    """One stub server for the module."""
    with StubServer() as server:
        yield server


@pytest.fixture
def patched() -> Iterator[None]:
    """anthropic patched for one test, unpatched after."""
    pipelens.auto_patch(anthropic)
    yield
    pipelens.unpatch(anthropic)


@pytest.fixture
def client(stub: StubServer) -> Iterator[anthropic.Anthropic]:
    """A sync client on the stub: no retries, a short timeout."""
    with anthropic.Anthropic(
        base_url=stub.base_url, api_key="sk-ant-test", max_retries=0, timeout=5
    ) as c:
        yield c


@pytest.fixture
async def aclient(stub: StubServer) -> Any:
    """An async client on the stub."""
    async with anthropic.AsyncAnthropic(
        base_url=stub.base_url, api_key="sk-ant-test", max_retries=0, timeout=5
    ) as c:
        yield c


def llm_of(events: CapturedEvents, key: str = "anthropic_chat") -> dict[str, Any]:
    """The decoded ``llm`` JSON of the finished step ``key``."""
    step = events.step(key)
    assert step.kind == "llm"
    assert step.llm is not None
    data: dict[str, Any] = json.loads(step.llm)
    return data


def _kinds(events: list[Any]) -> list[str]:
    return [e.type for e in events]


# --- plain calls -------------------------------------------------------------------------------


@pytest.mark.usefixtures("patched")
def test_sync_call_records_request_output_usage_and_ids(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """A messages call is an llm step with model, params (the system prompt among them, as
    openai's ``instructions``), messages, output, usage with the cache, and both ids."""
    reply = client.messages.create(**ASK, system="be brief", stop_sequences=["END"])
    assert reply.content[0].text == TEXT
    llm = llm_of(events)
    assert events.step("anthropic_chat").status == "completed"
    assert {k: v for k, v in llm.items() if k not in ("latency_ns", "cost_usd")} == {
        "provider": "anthropic",
        "operation": "chat",
        "request_model": MODEL,
        "response_model": response_model(MODEL),
        "params": {"max_tokens": 50, "system": "be brief", "stop_sequences": ["END"]},
        "messages": MESSAGES,
        "output": {"text": TEXT, "finish_reason": "end_turn"},
        "usage": USAGE,
        "request_id": reply._request_id,
        "response_id": "msg_1",
    }
    assert reply._request_id is not None
    assert reply._request_id.startswith("req_")
    assert llm["latency_ns"] > 0
    assert llm["cost_usd"] > 0  # the dated name is priced as claude-sonnet-4


@pytest.mark.usefixtures("patched")
async def test_async_call_is_recorded(aclient: Any, events: CapturedEvents) -> None:
    """An AsyncAnthropic call is recorded like a sync one."""
    reply = await aclient.messages.create(**ASK)
    assert reply.content[0].text == TEXT
    llm = llm_of(events)
    assert (llm["output"]["text"], llm["usage"], llm["request_id"]) == (
        TEXT,
        USAGE,
        reply._request_id,
    )


@pytest.mark.usefixtures("patched")
def test_tool_use_blocks_are_recorded(client: anthropic.Anthropic, events: CapturedEvents) -> None:
    """A reply with a tool_use block records its id, name and input as JSON, and the tools."""
    reply = client.messages.create(**ASK, tools=TOOLS)
    assert reply.stop_reason == "tool_use"
    llm = llm_of(events)
    expected = {
        "text": TOOL_TEXT,
        "tool_calls": [{**TOOL_CALL, "arguments": json.dumps(TOOL_INPUT, separators=(",", ":"))}],
        "finish_reason": "tool_use",
    }
    assert expected == llm["output"]
    assert llm["params"]["tools"] == TOOLS


@pytest.mark.usefixtures("patched")
def test_system_blocks_and_unknown_models(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """A system prompt given as blocks is kept as given; an unpriced model's cost is unknown."""
    system = [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]
    client.messages.create(**{**ASK, "model": "claude-unknown"}, system=system)
    llm = llm_of(events)
    assert (llm["params"]["system"], "cost_usd" in llm) == (system, False)


@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize(
    "model",
    [
        "claude-opus-4-1",
        "claude-opus-4",
        "claude-sonnet-4",
        "claude-3-7-sonnet",
        "claude-3-5-sonnet",
        "claude-3-5-haiku",
        "claude-3-haiku",
    ],
)
def test_claude_models_are_priced_with_the_cache_read_price(
    client: anthropic.Anthropic, events: CapturedEvents, model: str
) -> None:
    """A dated Claude model of the 3.5, 3.7 and 4 families has a cost: the tokens read from the
    cache priced below the input price, those written to it above."""
    client.messages.create(**{**ASK, "model": model})
    cost = llm_of(events)["cost_usd"]
    price = price_for(model)
    assert price is not None
    assert price.cached_input is not None
    assert price.cache_write_input is not None
    assert price.cached_input < price.input < price.cache_write_input
    fresh, read, write, output = 10, 5, 3, 4
    expected = fresh * price.input + read * price.cached_input + write * price.cache_write_input
    assert pytest.approx((expected + output * price.output) / 1e6) == cost


@pytest.mark.usefixtures("patched")
def test_calls_inside_a_step_nest_and_the_run_sums_the_cache(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """Inside a @step calls are children; the run's usage counts cached tokens inside input."""
    runs = []

    @pipelens.step
    def answer() -> None:
        client.messages.create(**ASK)
        client.messages.create(**ASK)
        runs.append(pipelens.current_run())

    answer()
    assert [s.key for s in events.steps()] == [
        "answer.anthropic_chat",
        "answer.anthropic_chat___1",
        "answer",
    ]
    usage = runs[0].llm_usage()[response_model(MODEL)]
    assert (usage.calls, usage.input_tokens, usage.cached_tokens, usage.output_tokens) == (
        2,
        36,
        10,
        8,
    )


@pytest.mark.usefixtures("patched")
def test_parse_and_beta_messages_are_recorded(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """``messages.parse`` and ``beta.messages.create`` are LLM steps too."""
    assert client.messages.parse(**ASK).content[0].text == TEXT
    assert client.beta.messages.create(**ASK).content[0].text == TEXT
    steps = events.steps()
    assert [s.key for s in steps] == ["anthropic_chat", "anthropic_chat"]
    assert [json.loads(s.llm or "{}")["output"]["text"] for s in steps] == [TEXT, TEXT]


# --- streams: create(stream=True) ----------------------------------------------------------


@pytest.mark.usefixtures("patched")
def test_sync_stream_gives_every_event_and_assembles_the_message(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """The caller gets every event; the step has text, stop reason, usage, TTFT and chunks."""
    stream = client.messages.create(**ASK, stream=True)
    assert isinstance(stream, anthropic.Stream)
    got = list(stream)
    assert event_kinds() == _kinds(got)
    llm = llm_of(events)
    assert (llm["stream"], llm["chunks"], llm["output"], llm["usage"]) == (
        True,
        len(got),
        {"text": TEXT, "finish_reason": "end_turn"},
        USAGE,
    )
    assert llm["request_id"] == stream.response.headers["request-id"]
    assert (llm["response_model"], llm["response_id"]) == (response_model(MODEL), "msg_1")
    assert 0 < llm["time_to_first_token_ns"] <= llm["latency_ns"]
    assert llm["tokens_per_second"] > 0
    assert "stream_closed_early" not in llm


@pytest.mark.usefixtures("patched")
async def test_async_stream_gives_every_event(aclient: Any, events: CapturedEvents) -> None:
    """``async for`` over an AsyncStream in ``async with`` gives every event and ends the step."""
    async with await aclient.messages.create(**ASK, stream=True) as stream:
        got = [event async for event in stream]
    assert event_kinds() == _kinds(got)
    llm = llm_of(events)
    assert (llm["output"]["text"], llm["usage"], llm.get("stream_closed_early", False)) == (
        TEXT,
        USAGE,
        False,
    )


@pytest.mark.usefixtures("patched")
def test_streamed_tool_input_is_assembled(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """The input_json_delta pieces of a streamed tool_use block are joined into its arguments."""
    got = list(client.messages.create(**ASK, tools=TOOLS, stream=True))
    assert event_kinds(tools=True) == _kinds(got)
    output = llm_of(events)["output"]
    assert output == {"text": TOOL_TEXT, "tool_calls": [TOOL_CALL], "finish_reason": "tool_use"}


@pytest.mark.usefixtures("patched")
def test_stream_abandoned_halfway_ends_when_collected(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """A stream dropped half-read ends its step, marked closed early, once collected."""
    stream = client.messages.create(**ASK, stream=True)
    next(stream)
    next(stream)
    del stream
    gc.collect()
    llm = llm_of(events)
    assert (llm["stream_closed_early"], llm["chunks"]) == (True, 2)


@pytest.mark.usefixtures("patched")
async def test_async_stream_abandoned_halfway_ends_when_collected(
    aclient: Any, events: CapturedEvents
) -> None:
    """An AsyncStream dropped after three events ends its step with the text so far."""
    stream = await aclient.messages.create(**ASK, stream=True)
    for _ in range(3):
        await stream.__anext__()
    del stream
    gc.collect()
    llm = llm_of(events)
    assert (llm["stream_closed_early"], llm["chunks"], llm["output"]["text"]) == (True, 3, "Hello")


# --- streams: the messages.stream(...) helper ------------------------------------------------


@pytest.mark.usefixtures("patched")
def test_stream_helper_text_stream_is_recorded_under_the_current_step(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """``with messages.stream(...)``: the request is a child step of the step that entered it,
    and ``text_stream`` and ``get_final_message`` give the caller the whole text."""

    @pipelens.step
    def ask() -> tuple[str, str]:
        with client.messages.stream(**ASK, system="be brief") as stream:
            text = "".join(stream.text_stream)
            return text, stream.get_final_message().content[0].text

    assert ask() == (TEXT, TEXT)
    llm = llm_of(events, "ask.anthropic_chat")
    assert (llm["stream"], llm["output"], llm["usage"], llm["params"]["system"]) == (
        True,
        {"text": TEXT, "finish_reason": "end_turn"},
        USAGE,
        "be brief",
    )
    assert llm["request_id"].startswith("req_")
    assert llm["time_to_first_token_ns"] > 0
    assert "stream_closed_early" not in llm


@pytest.mark.usefixtures("patched")
def test_stream_helper_events_and_tool_use(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """Iterating the helper's events, a streamed tool call is assembled in the step."""
    with client.messages.stream(**ASK, tools=TOOLS) as stream:
        kinds = _kinds(list(stream))
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert final.content[1].input == TOOL_INPUT
    output = llm_of(events)["output"]
    assert (output["tool_calls"], output["finish_reason"]) == ([TOOL_CALL], "tool_use")


@pytest.mark.usefixtures("patched")
def test_stream_helper_until_done(client: anthropic.Anthropic, events: CapturedEvents) -> None:
    """``until_done()`` reads the stream through: the step ends completed with the text."""
    with client.messages.stream(**ASK) as stream:
        stream.until_done()
        assert events.step("anthropic_chat").status == "completed"
        assert stream.get_final_text() == TEXT
    assert llm_of(events)["output"]["text"] == TEXT


@pytest.mark.usefixtures("patched")
def test_stream_helper_sends_nothing_until_entered(
    client: anthropic.Anthropic, stub: StubServer, events: CapturedEvents
) -> None:
    """A stream manager never entered sends no request and makes no step."""
    sent = stub.count
    client.messages.stream(**ASK)
    assert (stub.count, events.steps()) == (sent, [])


@pytest.mark.usefixtures("patched")
def test_stream_helper_left_halfway_is_marked_closed_early(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """Leaving the helper's ``with`` after the first text ends the step, cancelled, closed early."""
    with client.messages.stream(**ASK) as stream:
        for text in stream.text_stream:
            assert text == TEXT_PARTS[0]
            break
        assert events.steps() == []
    llm = llm_of(events)
    assert (llm["stream_closed_early"], llm["output"]["text"]) == (True, TEXT_PARTS[0])
    assert events.step("anthropic_chat").status == "cancelled"


@pytest.mark.usefixtures("patched")
async def test_async_stream_helper_text_stream_and_final_message(
    aclient: Any, events: CapturedEvents
) -> None:
    """``async with messages.stream(...)``: text_stream, get_final_message, one step."""
    async with aclient.messages.stream(**ASK, tools=TOOLS) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert (text, final.content[1].input) == (TOOL_TEXT, TOOL_INPUT)
    llm = llm_of(events)
    assert (llm["stream"], llm["output"]["tool_calls"], llm["usage"]) == (True, [TOOL_CALL], USAGE)


@pytest.mark.usefixtures("patched")
async def test_async_stream_helper_until_done(aclient: Any, events: CapturedEvents) -> None:
    """The async helper's ``until_done()`` ends the step with the whole text."""
    async with aclient.messages.stream(**ASK) as stream:
        await stream.until_done()
        assert await stream.get_final_text() == TEXT
    assert llm_of(events)["output"]["text"] == TEXT


@pytest.mark.usefixtures("patched")
def test_beta_stream_helper_is_recorded(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """``beta.messages.stream(...)`` is traced like the helper it mirrors."""
    with client.beta.messages.stream(**ASK) as stream:
        assert stream.get_final_text() == TEXT
    assert llm_of(events)["output"]["text"] == TEXT


# --- what the caller gets is what it would get unpatched ------------------------------------


def _dumps(client: anthropic.Anthropic) -> list[Any]:
    """Everything a caller gets from a plain call, a stream and the stream helper, as dicts."""
    plain = client.messages.create(**ASK, tools=TOOLS).model_dump()
    streamed = [e.model_dump() for e in client.messages.create(**ASK, tools=TOOLS, stream=True)]
    with client.messages.stream(**ASK, tools=TOOLS) as stream:
        helper = [e.model_dump() for e in stream]
        final = stream.get_final_message().model_dump()
    with client.messages.stream(**ASK) as stream:
        texts = list(stream.text_stream)
    return [plain, streamed, helper, final, texts]


def test_what_the_caller_gets_is_the_same_patched_or_not(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """Patching changes nothing in replies, stream events, helper events, final message, texts."""
    plain = _dumps(client)
    pipelens.auto_patch(anthropic)
    try:
        traced = _dumps(client)
    finally:
        pipelens.unpatch(anthropic)
    assert plain == traced
    assert len(events.steps()) == 4


async def test_async_helper_gives_the_same_patched_or_not(aclient: Any) -> None:
    """The async helper's events and final message are the same patched or not."""

    async def dump() -> list[Any]:
        async with aclient.messages.stream(**ASK, tools=TOOLS) as stream:
            got = [e.model_dump() async for e in stream]
            return [got, (await stream.get_final_message()).model_dump()]

    plain = await dump()
    pipelens.auto_patch(anthropic)
    try:
        traced = await dump()
    finally:
        pipelens.unpatch(anthropic)
    assert plain == traced


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "error", "status", "kind"),
    [
        ("error-429", anthropic.RateLimitError, 429, "rate_limit_error"),
        ("error-500", anthropic.InternalServerError, 500, "api_error"),
        ("error-529", anthropic.OverloadedError, 529, "overloaded_error"),
    ],
)
def test_api_errors_fail_the_step_and_reach_the_caller_unchanged(
    client: anthropic.Anthropic,
    events: CapturedEvents,
    model: str,
    error: type[anthropic.APIStatusError],
    status: int,
    kind: str,
) -> None:
    """An error answer fails the step with its status, error type and request id; the caller
    gets the SDK's own error, as it would unpatched."""
    with pytest.raises(error) as unpatched:
        client.messages.create(**{**ASK, "model": model})
    pipelens.auto_patch(anthropic)
    try:
        with pytest.raises(error) as caught:
            client.messages.create(**{**ASK, "model": model})
    finally:
        pipelens.unpatch(anthropic)
    # The stub numbers its answers' request ids, which newer SDKs write into the message.
    as_unpatched = str(unpatched.value).replace(str(unpatched.value.request_id), "req_N")
    assert (
        str(caught.value).replace(str(caught.value.request_id), "req_N"),
        caught.value.body,
    ) == (
        as_unpatched,
        unpatched.value.body,
    )
    step = events.step("anthropic_chat")
    assert (step.status, step.error and step.error.type) == (
        "failed",
        f"anthropic.{error.__name__}",
    )
    llm = llm_of(events)
    assert (llm["status_code"], llm["error_code"], llm["request_id"]) == (
        status,
        kind,
        caught.value.request_id,
    )


@pytest.mark.usefixtures("patched")
async def test_async_api_error_is_recorded(aclient: Any, events: CapturedEvents) -> None:
    """An AsyncAnthropic error answer fails the step the same way."""
    with pytest.raises(anthropic.RateLimitError):
        await aclient.messages.create(**{**ASK, "model": "error-429"})
    assert (llm_of(events)["status_code"], events.step("anthropic_chat").status) == (429, "failed")


@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize("helper", [False, True], ids=["create", "stream_helper"])
def test_error_event_mid_stream_fails_the_step(
    client: anthropic.Anthropic, events: CapturedEvents, helper: bool
) -> None:
    """An ``error`` event mid-stream reaches the caller and fails the step with its error type
    and the text streamed before it."""
    ask = {**ASK, "model": "midstream-error"}

    def consume() -> None:
        if helper:
            with client.messages.stream(**ask) as stream:
                stream.until_done()
        else:
            list(client.messages.create(**ask, stream=True))

    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        consume()
    llm = llm_of(events)
    assert (events.step("anthropic_chat").status, llm["error_code"], llm["output"]["text"]) == (
        "failed",
        "overloaded_error",
        TEXT_PARTS[0],
    )
    assert "status_code" not in llm  # the answer itself was a 200


@pytest.mark.usefixtures("patched")
def test_timeout_fails_the_step(stub: StubServer, events: CapturedEvents) -> None:
    """A client timeout fails the step, marked ``timeout``, and raises APITimeoutError."""
    with (
        anthropic.Anthropic(base_url=stub.base_url, api_key="k", max_retries=0, timeout=0.2) as c,
        pytest.raises(anthropic.APITimeoutError),
    ):
        c.messages.create(**{**ASK, "model": "slow"})
    assert (events.step("anthropic_chat").status, llm_of(events)["error_code"]) == (
        "failed",
        "timeout",
    )


# --- raw responses -----------------------------------------------------------------------------


@pytest.mark.usefixtures("patched")
def test_with_raw_response_is_recorded(client: anthropic.Anthropic, events: CapturedEvents) -> None:
    """with_raw_response still returns the raw response; the step has its parsed output."""
    raw = client.messages.with_raw_response.create(**ASK)
    assert raw.parse().content[0].text == TEXT
    llm = llm_of(events)
    assert (llm["raw_response"], llm["output"]["text"], llm["usage"], llm["request_id"]) == (
        True,
        TEXT,
        USAGE,
        raw.request_id,
    )


@pytest.mark.usefixtures("patched")
async def test_async_with_raw_response_leaves_the_parse_to_the_caller(
    aclient: Any, events: CapturedEvents
) -> None:
    """AsyncAnthropic's raw response parses only when awaited: the step has its request id."""
    raw = await aclient.messages.with_raw_response.create(**ASK)
    assert (await raw.parse()).content[0].text == TEXT
    llm = llm_of(events)
    assert (llm["raw_response"], llm["request_id"], "output" in llm) == (
        True,
        raw.request_id,
        False,
    )


@pytest.mark.usefixtures("patched")
def test_with_streaming_response_leaves_the_body_to_the_caller(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """with_streaming_response: the caller reads the body; the step records the request id."""
    with client.messages.with_streaming_response.create(**ASK) as response:
        body = json.loads(response.read())
        request_id = response.headers["request-id"]
    assert body["content"][0]["text"] == TEXT
    llm = llm_of(events)
    assert (llm["raw_response"], llm["request_id"], "output" in llm) == (True, request_id, False)


@pytest.mark.usefixtures("patched")
def test_raw_stream_is_watched_once_parsed(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """``with_raw_response.create(stream=True)``: the stream the caller parses gives every event
    and the step ends with it, assembled."""
    raw = client.messages.with_raw_response.create(**ASK, stream=True)
    assert events.steps() == []
    got = list(raw.parse())
    assert event_kinds() == _kinds(got)
    llm = llm_of(events)
    assert (llm["raw_response"], llm["chunks"], llm["output"]["text"], llm["usage"]) == (
        True,
        len(got),
        TEXT,
        USAGE,
    )
    assert llm["request_id"] == raw.request_id


@pytest.mark.usefixtures("patched")
async def test_async_raw_stream_is_watched_once_parsed(
    aclient: Any, events: CapturedEvents
) -> None:
    """The async raw stream, parsed and read through, ends the step with the assembled text."""
    raw = await aclient.messages.with_raw_response.create(**ASK, stream=True)
    got = [event async for event in await raw.parse()]
    assert event_kinds() == _kinds(got)
    assert (llm_of(events)["output"]["text"], events.step("anthropic_chat").status) == (
        TEXT,
        "completed",
    )


@pytest.mark.usefixtures("patched")
def test_streaming_response_of_a_stream_ends_with_its_body(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """with_streaming_response of a stream: the caller reads the SSE body; the step ends when the
    response closes, not at its headers."""
    with client.messages.with_streaming_response.create(**ASK, stream=True) as response:
        assert events.steps() == []  # the headers are in, the body not read yet
        lines = list(response.iter_lines())
    assert "event: message_stop" in lines
    llm = llm_of(events)
    assert (llm["raw_response"], llm["stream"], events.step("anthropic_chat").status) == (
        True,
        True,
        "completed",
    )


# --- patching ----------------------------------------------------------------------------------


@pytest.mark.parametrize("library", [anthropic, "anthropic"], ids=["module", "name"])
def test_auto_patch_by_module_or_name_and_unpatch_restores(
    client: anthropic.Anthropic, events: CapturedEvents, library: Any
) -> None:
    """auto_patch(anthropic) and auto_patch("anthropic") patch create, parse and stream;
    unpatch puts the originals back and calls make no steps."""
    assert pipelens.auto_patch(library) == ["anthropic"]
    assert pipelens.auto_patch(library) == ["anthropic"]  # idempotent
    try:
        assert all(MESSAGES_CLASS.__dict__[n] is not f for n, f in ORIGINALS.items())
        client.messages.create(**ASK)
    finally:
        pipelens.unpatch(library)
    assert all(MESSAGES_CLASS.__dict__[n] is f for n, f in ORIGINALS.items())
    client.messages.create(**ASK)
    assert [s.key for s in events.steps()] == ["anthropic_chat"]


def test_auto_patch_without_arguments_covers_anthropic_and_openai(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """``auto_patch()`` patches every supported SDK installed: anthropic and openai among them."""
    names = pipelens.auto_patch()
    try:
        client.messages.create(**ASK)
        assert is_patched(openai)
    finally:
        pipelens.unpatch()
    assert {"anthropic", "openai"} <= set(names)
    assert not is_patched(anthropic)
    assert [s.key for s in events.steps()] == ["anthropic_chat"]


def test_clients_made_before_patching_are_covered(stub: StubServer, events: CapturedEvents) -> None:
    """A client created before auto_patch is traced too (the classes are patched)."""
    before = anthropic.Anthropic(base_url=stub.base_url, api_key="k", max_retries=0)
    pipelens.auto_patch(anthropic)
    try:
        before.messages.create(**ASK)
    finally:
        pipelens.unpatch(anthropic)
        before.close()
    assert [s.key for s in events.steps()] == ["anthropic_chat"]


@pytest.mark.usefixtures("patched")
def test_vertex_and_bedrock_clients_are_covered(stub: StubServer, events: CapturedEvents) -> None:
    """AnthropicVertex (plain and streamed) and AnthropicBedrock calls are recorded: they use the
    same resource classes."""
    with anthropic.AnthropicVertex(
        region="us-east5", project_id="p", access_token="t", base_url=stub.base_url, max_retries=0
    ) as vertex:
        assert vertex.messages.create(**ASK).content[0].text == TEXT
        with vertex.messages.stream(**ASK) as stream:
            assert stream.get_final_text() == TEXT
    with anthropic.AnthropicBedrock(
        aws_access_key="a",
        aws_secret_key="b",
        aws_region="us-east-1",
        base_url=stub.base_url,
        max_retries=0,
    ) as bedrock:
        assert bedrock.messages.create(**ASK).content[0].text == TEXT
    calls = [json.loads(s.llm or "{}") for s in events.steps()]
    assert [(c["provider"], c.get("stream", False)) for c in calls] == [
        ("anthropic", False),
        ("anthropic", True),
        ("anthropic", False),
    ]
    assert [(c["output"]["text"], c["usage"]) for c in calls] == [(TEXT, USAGE)] * 3


@pytest.mark.usefixtures("patched")
def test_bedrock_streams_are_recorded(stub: StubServer, events: CapturedEvents) -> None:
    """AnthropicBedrock's ``messages.create(stream=True)`` and ``messages.stream(...)`` (AWS's
    binary event-stream framing, decoded by botocore, signed with fake keys) are streamed LLM
    steps with their text, usage, stop reason and chunk count, as over Anthropic's API."""
    with anthropic.AnthropicBedrock(
        aws_access_key="a",
        aws_secret_key="b",
        aws_region="us-east-1",
        base_url=stub.base_url,
        max_retries=0,
    ) as bedrock:
        chunks = list(bedrock.messages.create(**ASK, stream=True))
        with bedrock.messages.stream(**ASK) as stream:
            assert stream.get_final_text() == TEXT
    assert type(chunks[0]).__name__ == "RawMessageStartEvent"
    assert [path for path, _ in stub.requests[-2:]] == [
        "/model/claude-sonnet-4/invoke-with-response-stream"
    ] * 2
    calls = [json.loads(s.llm or "{}") for s in events.steps()]
    assert [s.status for s in events.steps()] == ["completed", "completed"]
    assert [(c["stream"], c["output"]["text"], c["usage"]) for c in calls] == [
        (True, TEXT, USAGE)
    ] * 2
    assert [c["output"]["finish_reason"] for c in calls] == ["end_turn"] * 2
    assert calls[0]["chunks"] == len(chunks)
    assert all(c["time_to_first_token_ns"] > 0 for c in calls)


@pytest.mark.usefixtures("patched")
def test_disabled_pipelens_makes_plain_calls(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """With ``enabled=False`` every patched method, the helper too, is a plain call."""
    pipelens.configure(enabled=False)
    assert client.messages.create(**ASK).content[0].text == TEXT
    with client.messages.stream(**ASK) as stream:
        assert stream.get_final_text() == TEXT
    assert events.events == []


@pytest.mark.usefixtures("patched")
def test_a_pipelens_bug_never_reaches_the_caller(
    client: anthropic.Anthropic, events: CapturedEvents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When reading a reply or a stream event fails inside PipeLens, the caller gets the reply
    and every event, and the steps end."""

    def broken(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(containment, "RAISE_INTERNAL", False)
    monkeypatch.setattr(_anthropic, "read_response", broken)
    monkeypatch.setattr(_anthropic.MessagesStream, "record_chunk", broken)
    assert client.messages.create(**ASK).content[0].text == TEXT
    assert event_kinds() == _kinds(list(client.messages.create(**ASK, stream=True)))
    assert [s.status for s in events.steps()] == ["completed", "completed"]


@pytest.mark.usefixtures("patched")
def test_secrets_in_messages_are_scrubbed(
    client: anthropic.Anthropic, events: CapturedEvents
) -> None:
    """A key pasted into a prompt leaves the process as [REDACTED]; the call itself is intact."""
    secret = "sk-ant-" + "a" * 30
    client.messages.create(**{**ASK, "messages": [{"role": "user", "content": f"key {secret}"}]})
    assert llm_of(events)["messages"] == [{"role": "user", "content": "key [REDACTED]"}]

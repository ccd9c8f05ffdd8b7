"""``auto_patch(genai)``: the real ``google-genai`` client against a local Gemini stub server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from _genai_stub import TEXT, TEXT_PARTS, GenaiStub
from google import genai
from google.genai import errors, types

import pipelens
from pipelens.testing import CapturedEvents

MODEL = "gemini-2.5-flash"
#: Gemini's 12 prompt (2 cached), 4 candidates and 3 thoughts tokens, in our counting.
USAGE = {
    "input_tokens": 12,
    "output_tokens": 7,
    "cached_tokens": 2,
    "reasoning_tokens": 3,
    "total_tokens": 19,
}
ORIGINAL = genai.models.Models.__dict__["generate_content"]


@pytest.fixture(scope="module")
def stub() -> Iterator[GenaiStub]:
    """One stub server for the module."""
    with GenaiStub() as server:
        yield server


@pytest.fixture
def client(stub: GenaiStub) -> genai.Client:
    """A client on the stub with a fake key."""
    return genai.Client(api_key="fake-key", http_options=types.HttpOptions(base_url=stub.base_url))


@pytest.fixture
def patched() -> Iterator[None]:
    """google-genai patched for one test, unpatched after."""
    pipelens.auto_patch(genai)
    yield
    pipelens.unpatch(genai)


def llm_of(events: CapturedEvents, key: str = "gemini_chat") -> dict[str, Any]:
    """The decoded ``llm`` JSON of the finished step ``key``."""
    step = events.step(key)
    assert step.kind == "llm"
    assert step.llm is not None
    data: dict[str, Any] = json.loads(step.llm)
    return data


@pytest.mark.usefixtures("patched")
def test_generate_content_records_config_output_and_converted_usage(
    client: genai.Client, events: CapturedEvents
) -> None:
    """A call is an llm step: model asked and answering, the config (system instruction and
    generation settings) as params, contents, text, finish reason, usage in our counting."""
    config = types.GenerateContentConfig(system_instruction="be brief", temperature=0.2)
    reply = client.models.generate_content(model=MODEL, contents="hi", config=config)
    assert reply.text == TEXT
    llm = llm_of(events)
    assert {k: v for k, v in llm.items() if k not in ("latency_ns", "cost_usd")} == {
        "provider": "gemini",
        "operation": "chat",
        "request_model": MODEL,
        "response_model": f"{MODEL}-001",
        "params": {"system_instruction": "be brief", "temperature": 0.2},
        "messages": "hi",
        "output": {"text": TEXT, "finish_reason": "STOP"},
        "usage": USAGE,
        "response_id": "resp-1",
    }


@pytest.mark.usefixtures("patched")
async def test_async_generate_content_is_recorded(
    client: genai.Client, events: CapturedEvents
) -> None:
    """``client.aio.models.generate_content`` is recorded like the sync call."""
    reply = await client.aio.models.generate_content(model=MODEL, contents="hi")
    assert reply.text == TEXT
    assert (llm_of(events)["output"]["text"], llm_of(events)["usage"]) == (TEXT, USAGE)


@pytest.mark.usefixtures("patched")
def test_stream_gives_every_chunk_and_assembles_the_text(
    client: genai.Client, events: CapturedEvents
) -> None:
    """A stream gives every chunk; the step has the text, chunks, usage and time to first token."""
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="hi"))
    assert list(TEXT_PARTS) == [c.text for c in chunks]
    llm = llm_of(events)
    assert (llm["stream"], llm["chunks"], llm["output"], llm["usage"]) == (
        True,
        4,
        {"text": TEXT, "finish_reason": "STOP"},
        USAGE,
    )
    assert 0 < llm["time_to_first_token_ns"] <= llm["latency_ns"]


def test_stream_chunks_are_the_same_patched_or_not(client: genai.Client) -> None:
    """Patching changes nothing the caller receives from a stream."""

    def chunks() -> list[dict[str, Any]]:
        stream = client.models.generate_content_stream(model=MODEL, contents="hi")
        return [c.model_dump(exclude={"sdk_http_response"}) for c in stream]

    plain = chunks()
    pipelens.auto_patch(genai)
    try:
        traced = chunks()
    finally:
        pipelens.unpatch(genai)
    assert plain == traced


@pytest.mark.usefixtures("patched")
async def test_async_stream_is_assembled(client: genai.Client, events: CapturedEvents) -> None:
    """``client.aio.models.generate_content_stream`` gives every chunk; one step with the text."""
    stream = await client.aio.models.generate_content_stream(model=MODEL, contents="hi")
    assert list(TEXT_PARTS) == [c.text async for c in stream]
    assert [s.key for s in events.steps()] == ["gemini_chat"]
    assert (llm_of(events)["output"]["text"], llm_of(events)["chunks"]) == (TEXT, 4)


@pytest.mark.usefixtures("patched")
@pytest.mark.parametrize(("model", "status", "code"), [("error-429", 429, "RESOURCE_EXHAUSTED")])
def test_http_error_fails_the_step_and_reaches_the_caller(
    client: genai.Client, events: CapturedEvents, model: str, status: int, code: str
) -> None:
    """A 429 fails the step with its status; the caller gets google-genai's own ClientError."""
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=model, contents="hi")
    assert type(caught.value) is errors.ClientError
    step = events.step("gemini_chat")
    assert (step.status, step.error and step.error.type) == (
        "failed",
        "google.genai.errors.ClientError",
    )
    llm = llm_of(events)
    assert (status, status, code) == (caught.value.code, llm["status_code"], llm["error_code"])


@pytest.mark.usefixtures("patched")
def test_stream_error_fails_the_step_with_its_status(
    client: genai.Client, events: CapturedEvents
) -> None:
    """A stream's request is sent when it is first read: its 500 fails the step there."""
    with pytest.raises(errors.ServerError):
        list(client.models.generate_content_stream(model="error-500", contents="hi"))
    assert (events.step("gemini_chat").status, llm_of(events)["status_code"]) == ("failed", 500)


def test_unpatch_restores_the_originals(client: genai.Client, events: CapturedEvents) -> None:
    """After ``unpatch(genai)`` the methods are the originals and calls make no steps."""
    pipelens.auto_patch("google.genai")
    assert genai.models.Models.__dict__["generate_content"] is not ORIGINAL
    pipelens.unpatch(genai)
    assert genai.models.Models.__dict__["generate_content"] is ORIGINAL
    client.models.generate_content(model=MODEL, contents="hi")
    assert events.events == []

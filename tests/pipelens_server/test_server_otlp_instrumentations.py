"""The real OpenAI instrumentations of the OpenTelemetry world (OpenInference's and
OpenLLMetry's), around the real ``openai`` client pointed at the local stub, exporting through
the real OTLP/HTTP exporter to a real server: the run, its nesting and the LLM call's model and
tokens show in the API and on the run page.

Each instrumentation gets a tracer provider of its own (never the process-global one) and is
removed again after its test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from _otlp_kit import exporting_provider, run_detail, run_id_of
from _pg_testkit import live_server
from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInferenceInstrumentor
from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetryInstrumentor

from pipelens_server import Settings, create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelens"))
from _openai_stub import USAGE, StubServer

MODEL = "gpt-4o-mini"
ANSWERED = f"{MODEL}-2024-08-06"  # the stub's answering model


@pytest.fixture
def server(database_url: str) -> Iterator[str]:
    """A real uvicorn server of the app on the test's database."""
    with live_server(create_app(Settings(database_url=database_url))) as url:
        yield url


@pytest.fixture
def stub() -> Iterator[StubServer]:
    """The local OpenAI stub."""
    with StubServer() as server:
        yield server


def _traced_program(server: str, stub: StubServer, instrumentor: Any) -> tuple[str, str]:
    """A root span ``answer`` around a ``retrieve`` span and one chat completion through the
    instrumented client; the run id and the root span's id."""
    with exporting_provider(server, service="qa-service") as provider:
        instrumentor.instrument(tracer_provider=provider)
        try:
            client = openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0)
            tracer = provider.get_tracer("tests.otlp")
            with tracer.start_as_current_span("answer") as root:
                with tracer.start_as_current_span("retrieve"):
                    pass
                client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "Say hello"}],
                    temperature=0.2,
                )
        finally:
            instrumentor.uninstrument()
    context = root.get_span_context()
    return run_id_of(context.trace_id), f"{context.span_id:016x}"


def _assert_run(server: str, run_id: str, root_id: str) -> dict[str, Any]:
    """The run as both instrumentations must show it; the LLM step's record."""
    detail = run_detail(server, run_id)
    assert (detail["run"]["pipeline"], detail["run"]["status"]) == ("answer", "completed")
    assert detail["run"]["attributes"]["service.name"] == "qa-service"
    steps = detail["steps"]
    assert len(steps) == 3
    llm_steps = [step for step in steps if step["kind"] == "llm"]
    assert len(llm_steps) == 1
    step = llm_steps[0]
    assert step["parent_id"] == root_id
    retrieve = next(s for s in steps if s["name"] == "retrieve")
    assert retrieve["parent_id"] == root_id
    llm = step["llm"]
    assert (llm["provider"], llm["response_model"]) == ("openai", ANSWERED)
    assert llm["request_model"] == MODEL
    assert llm["params"]["temperature"] == 0.2
    usage = llm["usage"]
    expected = (USAGE["prompt_tokens"], USAGE["completion_tokens"], 2, 1)
    actual = (
        usage["input_tokens"],
        usage["output_tokens"],
        usage["cached_tokens"],
        usage["reasoning_tokens"],
    )
    assert actual == expected
    assert llm["output"]["text"] == "Hello, world!"
    assert llm["output"]["finish_reason"] == "stop"
    assert llm["messages"][0]["role"] == "user"
    assert llm["messages"][0]["content"] == "Say hello"
    page = httpx.get(f"{server}/runs/{run_id}", params={"step": step["key"]}, timeout=30)
    assert page.status_code == 200
    assert ANSWERED in page.text
    assert step["name"] in page.text
    assert "retrieve" in page.text
    return step


def test_openinference_openai_spans_become_a_run_with_its_llm_call(
    server: str, stub: StubServer
) -> None:
    """OpenInference's OpenAI instrumentation: model, tokens and messages read from its
    ``llm.*`` attributes; its ``input.value`` is the step's inputs."""
    run_id, root_id = _traced_program(server, stub, OpenInferenceInstrumentor())
    step = _assert_run(server, run_id, root_id)
    assert step["records"]["openinference.span.kind"] == "LLM"
    assert step["inputs"]["model"] == MODEL


# OpenLLMetry's responses wrapper declares a pydantic model with a class-based config (its code,
# not ours): the deprecation pydantic warns of when the instrumentation loads it is not ours to fix.
@pytest.mark.filterwarnings(
    "ignore:Support for class-based `config`:pydantic.warnings.PydanticDeprecatedSince20"
)
def test_openllmetry_openai_spans_become_a_run_with_its_llm_call(
    server: str, stub: StubServer
) -> None:
    """OpenLLMetry's OpenAI instrumentation (``opentelemetry-instrumentation-openai``): model,
    tokens and messages read from the OTel GenAI ``gen_ai.*`` attributes."""
    run_id, root_id = _traced_program(server, stub, OpenLLMetryInstrumentor())
    step = _assert_run(server, run_id, root_id)
    assert step["records"]["gen_ai.operation.name"] == "chat"
    assert step["records"]["otel.span_kind"] == "client"

"""``POST /v1/traces``: OTLP/HTTP from the OpenTelemetry SDK and its real exporter into runs and
steps on a real PostgreSQL, in every encoding, in any order, and refused when it must be."""

from __future__ import annotations

import base64
import gzip
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from _otlp_kit import (
    JSON,
    PROTOBUF,
    export,
    exporting_provider,
    memory_provider,
    protobuf_body,
    run_detail,
    run_id_of,
)
from _pg_testkit import LOCAL, live_server, read_rows, serve
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from litestar import Litestar
from litestar.testing import TestClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace import Status as SpanStatus

from pipelens.events import MAX_KEY_BYTES, MAX_NAME_BYTES, MAX_PIPELINE_BYTES, TRUNCATED_MARK, cut
from pipelens_server import Settings, create_app
from pipelens_server._ingest._otlp import decode_request, request_rows

Client = TestClient[Litestar]
TOKEN = "otlp-token"


@pytest.fixture
def server(database_url: str) -> Iterator[str]:
    """A real uvicorn server of the app on the test's database."""
    with live_server(create_app(Settings(database_url=database_url))) as url:
        yield url


def _three_spans() -> tuple[list[ReadableSpan], int]:
    """A root span ``pipeline`` with children ``child`` (twice); in end order (children
    first), with the trace id."""
    with memory_provider() as (provider, memory):
        tracer = provider.get_tracer("tests.otlp")
        with tracer.start_as_current_span("pipeline") as root:
            for i in range(2):
                with tracer.start_as_current_span("child") as child:
                    child.set_attribute("i", i)
        spans = list(memory.get_finished_spans())
    return spans, root.get_span_context().trace_id


def _post(client: Client, body: bytes, headers: dict[str, str] = PROTOBUF) -> httpx.Response:
    return client.post("/v1/traces", content=body, headers=headers)


def _response(data: bytes) -> ExportTraceServiceResponse:
    message = ExportTraceServiceResponse()
    message.ParseFromString(data)
    return message


def test_a_plain_sdk_program_becomes_a_run_with_nesting_error_and_every_value_type(
    server: str,
) -> None:
    """Nested spans, an exception and attributes of every OTLP value type, exported by the real
    OTLP/HTTP exporter, read back from the API: one run, nested by span, values kept."""
    with exporting_provider(server, service="billing") as provider:
        tracer = provider.get_tracer("tests.otlp")
        with tracer.start_as_current_span("nightly-etl", kind=SpanKind.SERVER) as root:
            root.set_attributes(
                {
                    "text": "hello",
                    "flag": True,
                    "count": 42,
                    "ratio": 0.5,
                    "names": ["a", "b"],
                    "numbers": [1, 2, 3],
                }
            )
            with tracer.start_as_current_span("extract") as extract:
                extract.add_event("batch read", {"rows": 10})
                with tracer.start_as_current_span("parse"):
                    pass
            try:
                with tracer.start_as_current_span("load"):
                    raise ValueError("disk full")
            except ValueError:
                pass
        trace_id = root.get_span_context().trace_id
        span_ids = {
            "extract": f"{extract.get_span_context().span_id:016x}",
            "root": f"{root.get_span_context().span_id:016x}",
        }
    detail = run_detail(server, run_id_of(trace_id))
    run, steps = detail["run"], detail["by_key"]
    assert (run["pipeline"], run["status"]) == ("nightly-etl", "completed")
    assert run["attributes"]["service.name"] == "billing"
    names = {step["name"]: step for step in detail["steps"]}
    assert set(names) == {"nightly-etl", "extract", "parse", "load"}
    assert steps["nightly-etl"]["parent_id"] is None
    assert names["extract"]["parent_id"] == span_ids["root"]
    assert names["parse"]["parent_id"] == span_ids["extract"]
    assert names["extract"]["key"] == f"extract___{span_ids['extract']}"
    records = steps["nightly-etl"]["records"]
    expected = {"text": "hello", "flag": True, "count": 42, "ratio": 0.5, "names": ["a", "b"]}
    assert expected.items() <= records.items()
    assert (records["numbers"], records["otel.span_kind"]) == ([1, 2, 3], "server")
    assert names["extract"]["records"]["otel.events"][0]["name"] == "batch read"
    assert names["extract"]["records"]["otel.events"][0]["attributes"] == {"rows": 10}
    load = names["load"]
    assert (load["status"], load["error"]["type"], load["error"]["message"]) == (
        "failed",
        "ValueError",
        "disk full",
    )
    assert "raise ValueError" in load["error"]["traceback"]


def test_kvlist_and_bytes_values_are_kept_as_json(client: Client) -> None:
    """The two value types the SDK cannot set: a key-value list becomes an object, bytes
    base64 text (as OTLP's JSON mapping writes them)."""
    spans, trace_id = _three_spans()
    request = encode_spans(spans)
    attribute = request.resource_spans[0].scope_spans[0].spans[-1].attributes.add()
    attribute.key = "nested"
    pair = attribute.value.kvlist_value.values.add()
    pair.key, pair.value.bytes_value = "raw", b"\x00\xff"
    assert _post(client, request.SerializeToString()).status_code == 200
    detail = client.get(f"/api/v1/runs/{run_id_of(trace_id)}").json()
    root = next(step for step in detail["steps"] if step["parent_id"] is None)
    assert root["records"]["nested"] == {"raw": "AP8="}


def test_json_encoding_is_read_and_answered_in_json(client: Client) -> None:
    """OTLP's JSON mapping (hex ids, camelCase, enums as numbers) stores the same rows as
    protobuf, and the answer is JSON."""
    spans, trace_id = _three_spans()
    document = json_format.MessageToDict(encode_spans(spans))
    for resource in document["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:  # protobuf's JSON mapping has base64; OTLP's hex
                        span[name] = base64.b64decode(span[name]).hex()
                span["kind"] = 1  # an enum as its number
    response = _post(client, msgspec.json.encode(document), JSON)
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    assert response.json() == {}
    detail = client.get(f"/api/v1/runs/{run_id_of(trace_id)}").json()
    assert detail["run"]["pipeline"] == "pipeline"
    assert sorted(step["name"] for step in detail["steps"]) == ["child", "child", "pipeline"]


def test_gzip_bodies_are_read(client: Client, database_url: str) -> None:
    """``Content-Encoding: gzip`` stores the same as the plain body."""
    spans, trace_id = _three_spans()
    headers = {**PROTOBUF, "content-encoding": "gzip"}
    response = _post(client, gzip.compress(protobuf_body(spans)), headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert len(read_rows(database_url, run_id_of(trace_id))["steps"]) == 3


def test_children_before_root_in_two_requests_and_twice_converge(
    client: Client, database_url: str
) -> None:
    """Children first (the run still running, its pipeline unknown), then the root, then both
    again: the same rows as the whole trace sent once, in one request."""
    spans, trace_id = _three_spans()
    run_id = run_id_of(trace_id)
    assert _post(client, protobuf_body(spans[:2])).status_code == 200
    early = read_rows(database_url, run_id)
    assert (early["runs"][0]["status"], early["runs"][0]["pipeline"]) == ("running", None)
    assert _post(client, protobuf_body(spans[2:])).status_code == 200
    after = read_rows(database_url, run_id)
    for _ in range(2):
        assert _post(client, protobuf_body(spans)).status_code == 200
    assert read_rows(database_url, run_id) == after
    assert (after["runs"][0]["status"], after["runs"][0]["pipeline"]) == ("completed", "pipeline")
    steps = {step["name"]: step["pipeline"] for step in after["steps"]}
    assert steps == {"pipeline": "pipeline", "child": "pipeline"}
    assert len(after["steps"]) == 3


def test_a_trace_whose_root_never_comes_is_abandoned_until_it_does(database_url: str) -> None:
    """A real ``pipelens serve`` abandoning runs silent for two seconds: a child exported
    without its root leaves the run ``running``, then ``abandoned``; the root, exported late,
    completes it."""
    spans, trace_id = _three_spans()
    run_id = run_id_of(trace_id)
    with serve("--database-url", database_url, "--abandon-after", "2") as (_, url):
        assert export(url, spans[:1]) == SpanExportResult.SUCCESS
        assert run_detail(url, run_id)["run"]["status"] in ("running", "abandoned")
        deadline = time.monotonic() + 30
        while run_detail(url, run_id)["run"]["status"] != "abandoned":
            assert time.monotonic() < deadline, "the run was never abandoned"
            time.sleep(0.1)
        assert export(url, spans[1:]) == SpanExportResult.SUCCESS
        run = run_detail(url, run_id)["run"]
    assert (run["status"], run["pipeline"]) == ("completed", "pipeline")


def test_bad_protobuf_is_a_400_status_and_writes_nothing(client: Client, database_url: str) -> None:
    """A body that is not an ExportTraceServiceRequest: 400 with a ``google.rpc.Status``."""
    response = _post(client, b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/x-protobuf"
    status = Status()
    status.ParseFromString(response.content)
    assert "invalid OTLP protobuf" in status.message
    assert read_rows(database_url)["runs"] == []


def test_bad_json_and_bad_hex_ids_are_400s_naming_what(client: Client) -> None:
    """JSON that is not JSON, and a trace id that is not hex: a 400 saying which."""
    response = _post(client, b"{nope", JSON)
    assert response.status_code == 400
    assert "invalid OTLP JSON" in response.json()["detail"]
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz", "name": "a"}]}]}]}
    response = _post(client, msgspec.json.encode(body), JSON)
    assert response.status_code == 400
    assert response.json()["path"] == "$.resourceSpans[0].scopeSpans[0].spans[0].traceId"


@pytest.mark.parametrize(
    "body",
    [b"2.5e214", b"[]", b'{"resourceSpans": [5]}', b'{"resourceSpans": [{"scopeSpans": 1}]}'],
)
def test_json_of_the_wrong_shape_is_a_400(client: Client, body: bytes) -> None:
    """JSON that is no ExportTraceServiceRequest (a number, a list, scalars for objects): 400."""
    response = _post(client, body, JSON)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("invalid OTLP JSON")


def test_other_content_types_and_encodings_are_415s(client: Client) -> None:
    """Neither protobuf nor JSON, or an encoding other than gzip: 415 naming what to send."""
    response = _post(client, b"x", {"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/x-protobuf" in response.json()["detail"]
    response = _post(client, b"x", {**PROTOBUF, "content-encoding": "br"})
    assert response.status_code == 415


def test_too_large_bodies_and_gzip_bombs_are_413s(database_url: str) -> None:
    """A body past the limit, and a small gzip body that inflates past it: 413, nothing kept."""
    settings = Settings(database_url=database_url, max_body_bytes=4096)
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        assert _post(client, b"\x00" * 5000).status_code == 413
        bomb = gzip.compress(b"\x00" * 1_000_000)
        assert len(bomb) < 4096
        response = _post(client, bomb, {**PROTOBUF, "content-encoding": "gzip"})
        assert response.status_code == 413
        assert read_rows(database_url)["runs"] == []


def test_the_token_is_required_when_one_is_set(database_url: str) -> None:
    """No token: 401 (nothing stored); the exporter's ``Authorization`` header: stored."""
    spans, trace_id = _three_spans()
    settings = Settings(database_url=database_url, token=TOKEN)
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        assert _post(client, protobuf_body(spans)).status_code == 401
        assert read_rows(database_url)["runs"] == []
        headers = {**PROTOBUF, "authorization": f"Bearer {TOKEN}"}
        assert _post(client, protobuf_body(spans), headers).status_code == 200
    assert len(read_rows(database_url, run_id_of(trace_id))["steps"]) == 3


def test_a_span_with_an_over_long_name_is_refused_alone(client: Client, database_url: str) -> None:
    """One span's name past the limit: ``partial_success`` counts and names it, the others are
    stored."""
    spans, trace_id = _three_spans()
    request = encode_spans(spans)
    request.resource_spans[0].scope_spans[0].spans[0].name = "n" * (MAX_NAME_BYTES + 1)
    response = _post(client, request.SerializeToString())
    assert response.status_code == 200
    partial = _response(response.content).partial_success
    assert partial.rejected_spans == 1
    assert "longer than the limit of 1024 bytes" in partial.error_message
    names = sorted(s["name"] for s in read_rows(database_url, run_id_of(trace_id))["steps"])
    assert names == ["child", "pipeline"]


def test_a_fully_accepted_request_has_no_partial_success(client: Client) -> None:
    """Everything stored: the answer's ``partial_success`` is left unset."""
    spans, _ = _three_spans()
    response = _response(_post(client, protobuf_body(spans)).content)
    assert not response.HasField("partial_success")


def test_secrets_in_attributes_are_redacted(client: Client, database_url: str) -> None:
    """An attribute named like a secret is stored redacted, as in our own events."""
    with memory_provider() as (provider, memory):
        with provider.get_tracer("t").start_as_current_span("job") as span:
            span.set_attribute("api_key", "sk-live-1234567890abcdef")
            span.set_status(SpanStatus(StatusCode.ERROR, "failed with sk-live-1234567890abcdef"))
        spans = list(memory.get_finished_spans())
    assert _post(client, protobuf_body(spans)).status_code == 200
    rows = read_rows(database_url, run_id_of(span.get_span_context().trace_id))
    text = msgspec.json.encode(rows).decode()
    assert "sk-live-1234567890abcdef" not in text
    assert rows["steps"][0]["records"]["api_key"] == "[REDACTED]"


def _llm_of(client: Client, attributes: dict[str, Any], events: dict[str, Any]) -> Any:
    """The stored LLM call of a root span carrying ``attributes`` and ``events``."""
    with memory_provider() as (provider, memory):
        with provider.get_tracer("t").start_as_current_span("chat") as span:
            span.set_attributes(attributes)
            for name, event_attributes in events.items():
                span.add_event(name, event_attributes)
        spans = list(memory.get_finished_spans())
    assert _post(client, protobuf_body(spans)).status_code == 200
    detail = client.get(f"/api/v1/runs/{run_id_of(span.get_span_context().trace_id)}").json()
    (step,) = detail["steps"]
    assert step["kind"] == "llm"
    return step["llm"]


def test_older_genai_attributes_make_the_same_llm_call(client: Client) -> None:
    """``gen_ai.system``, ``prompt_tokens``/``completion_tokens`` and the indexed
    ``gen_ai.prompt.N.*``/``gen_ai.completion.N.*`` attributes (tool calls too)."""
    llm = _llm_of(
        client,
        {
            "gen_ai.system": "openai",
            "llm.request.type": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.request.max_tokens": 100,
            "gen_ai.usage.prompt_tokens": 30,
            "gen_ai.usage.completion_tokens": 7,
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "Be brief.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "Weather?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "call_1",
            "gen_ai.completion.0.tool_calls.0.name": "weather",
            "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Paris"}',
        },
        {},
    )
    assert (llm["provider"], llm["operation"], llm["response_model"]) == (
        "openai",
        "chat",
        "gpt-4o",
    )
    assert llm["params"] == {"max_tokens": 100}
    assert (llm["usage"]["input_tokens"], llm["usage"]["output_tokens"]) == (30, 7)
    assert [m["role"] for m in llm["messages"]] == ["system", "user"]
    assert llm["output"]["finish_reason"] == "tool_calls"
    call = {"id": "call_1", "name": "weather", "arguments": '{"city": "Paris"}'}
    assert llm["output"]["tool_calls"] == [call]


def test_genai_events_carry_the_messages(client: Client) -> None:
    """The older ``gen_ai.content.prompt``/``gen_ai.content.completion`` events."""
    llm = _llm_of(
        client,
        {"gen_ai.operation.name": "text_completion", "gen_ai.provider.name": "acme"},
        {
            "gen_ai.content.prompt": {"gen_ai.prompt": '[{"role": "user", "content": "Hi"}]'},
            "gen_ai.content.completion": {
                "gen_ai.completion": '[{"role": "assistant", "content": "Hello"}]'
            },
        },
    )
    assert (llm["provider"], llm["operation"]) == ("acme", "completion")
    assert llm["messages"] == [{"role": "user", "content": "Hi"}]
    assert llm["output"]["text"] == "Hello"


def test_a_token_count_out_of_range_refuses_its_span(client: Client) -> None:
    """A negative token count: that span is refused (``partial_success`` names the
    attribute), as our own events' are."""
    with memory_provider() as (provider, memory):
        with provider.get_tracer("t").start_as_current_span("chat") as span:
            span.set_attributes({"gen_ai.system": "openai", "gen_ai.usage.input_tokens": -5})
        spans = list(memory.get_finished_spans())
    response = _response(_post(client, protobuf_body(spans)).content)
    assert response.partial_success.rejected_spans == 1
    assert "gen_ai.usage.input_tokens" in response.partial_success.error_message
    run_id = run_id_of(span.get_span_context().trace_id)
    assert client.get(f"/api/v1/runs/{run_id}").status_code == 404


def test_the_openapi_document_describes_the_route(client: Client) -> None:
    """``POST /v1/traces`` is documented: both encodings of its body and answer, its token and
    its error statuses (the schemathesis run fuzzes it from there)."""
    operation = client.get("/schema/openapi.json").json()["paths"]["/v1/traces"]["post"]
    media = {"application/x-protobuf", "application/json"}
    assert set(operation["requestBody"]["content"]) == media
    assert set(operation["responses"]["200"]["content"]) == media
    assert {"200", "400", "401", "413", "415", "429", "503"} == set(operation["responses"])
    assert operation["security"] == [{"token": []}]


def test_a_key_named_by_the_span_is_kept(client: Client, database_url: str) -> None:
    """``pipelens.step.key`` (what our own client's export writes) is the step's key."""
    with memory_provider() as (provider, memory):
        tracer = provider.get_tracer("t")
        with (
            tracer.start_as_current_span("answer") as root,
            tracer.start_as_current_span("retrieve") as child,
        ):
            child.set_attribute("pipelens.step.key", "answer.retrieve___1")
        spans = list(memory.get_finished_spans())
    assert _post(client, protobuf_body(spans)).status_code == 200
    rows = read_rows(database_url, run_id_of(root.get_span_context().trace_id))
    assert [step["key"] for step in rows["steps"]] == ["answer", "answer.retrieve___1"]


def test_pipelens_status_cancelled_is_read_only_under_an_unset_status(client: Client) -> None:
    """``pipelens.status`` ``cancelled`` makes a span with no status ``cancelled`` (its error
    from the ``exception`` event); status ``ERROR`` stays ``failed`` and ``OK`` ``completed``,
    as OpenTelemetry's status says."""
    with memory_provider() as (provider, memory):
        tracer = provider.get_tracer("t")
        with tracer.start_as_current_span("job") as root:
            for name, status in (
                ("unset", None),
                ("error", StatusCode.ERROR),
                ("ok", StatusCode.OK),
            ):
                with tracer.start_as_current_span(name) as span:
                    span.set_attribute("pipelens.status", "cancelled")
                    span.add_event(
                        "exception",
                        {"exception.type": "CancelledError", "exception.message": "stop"},
                    )
                    if status is not None:
                        span.set_status(SpanStatus(status))
        spans = list(memory.get_finished_spans())
    assert _post(client, protobuf_body(spans)).status_code == 200
    detail = client.get(f"/api/v1/runs/{run_id_of(root.get_span_context().trace_id)}").json()
    got = {s["name"]: (s["status"], (s["error"] or {}).get("type")) for s in detail["steps"]}
    assert got == {
        "job": ("completed", None),
        "unset": ("cancelled", "CancelledError"),
        "error": ("failed", "CancelledError"),
        "ok": ("completed", None),
    }


def test_an_llm_span_keeps_its_messages_once_in_its_llm_call(
    client: Client, database_url: str
) -> None:
    """The messages and output an LLM call holds (``gen_ai.input.messages``, indexed
    ``gen_ai.prompt.N.*``, ``gen_ai.choice`` events) are not stored again among the records,
    nor OpenInference's ``input.value``/``output.value`` beside the step's inputs and result;
    every other attribute and event stays a record."""
    messages = '[{"role": "user", "parts": [{"type": "text", "content": "hello there"}]}]'
    with memory_provider() as (provider, memory):
        with provider.get_tracer("t").start_as_current_span("chat") as span:
            span.set_attributes(
                {
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.input.messages": messages,
                    "gen_ai.prompt.0.content": "hello there",
                    "input.value": '{"q": "hello there"}',
                    "input.mime_type": "application/json",
                    "team": "search",
                }
            )
            span.add_event("gen_ai.choice", {"index": 0, "message": '{"content": "hi"}'})
            span.add_event("retry", {"attempt": 2})
        spans = list(memory.get_finished_spans())
    assert _post(client, protobuf_body(spans)).status_code == 200
    (step,) = read_rows(database_url, run_id_of(span.get_span_context().trace_id))["steps"]
    assert step["llm"]["messages"] == [{"role": "user", "content": "hello there"}]
    assert step["llm"]["output"]["text"] == "hi"
    assert step["inputs"] == {"q": "hello there"}
    records = step["records"]
    assert "hello there" not in msgspec.json.encode(records).decode()
    assert records["team"] == "search"
    assert records["gen_ai.request.model"] == "gpt-4o-mini"
    assert [e["name"] for e in records["otel.events"]] == ["retry"]


def test_a_secret_in_one_span_of_a_large_request_is_redacted(
    client: Client, database_url: str
) -> None:
    """The request is looked at for secrets as a whole first; a secret in one of its many
    spans is still redacted in that span, and the others are stored as sent."""
    with memory_provider() as (provider, memory):
        tracer = provider.get_tracer("t")
        with tracer.start_as_current_span("job") as root:
            for i in range(50):
                with tracer.start_as_current_span("work") as span:
                    span.set_attribute("i", i)
                    if i == 37:
                        span.set_attribute("password", "hunter2-hunter2")
        spans = list(memory.get_finished_spans())
    assert _post(client, protobuf_body(spans)).status_code == 200
    rows = read_rows(database_url, run_id_of(root.get_span_context().trace_id))
    assert "hunter2-hunter2" not in msgspec.json.encode(rows).decode()
    works = {s["records"]["i"]: s["records"] for s in rows["steps"] if s["name"] == "work"}
    assert works[37]["password"] == "[REDACTED]"
    assert works[36] == {"i": 36, "otel.span_kind": "internal", "otel.scope": "t"}


def _two_children_with_leaves() -> tuple[list[ReadableSpan], int]:
    """A root ``pipeline`` with ``child`` twice (one after the other), each with a ``leaf``;
    in end order, with the trace id."""
    with memory_provider() as (provider, memory):
        tracer = provider.get_tracer("tests.otlp")
        with tracer.start_as_current_span("pipeline") as root:
            for _ in range(2):
                with tracer.start_as_current_span("child"), tracer.start_as_current_span("leaf"):
                    pass
        spans = list(memory.get_finished_spans())
    return spans, root.get_span_context().trace_id


#: The paths (a root's: its key) of ``_two_children_with_leaves``' steps, as our client keys them.
PATHS = sorted(
    ["pipeline", "pipeline.child", "pipeline.child.leaf", "pipeline.child___1",
     "pipeline.child___1.leaf"]
)  # fmt: skip


def _paths(database_url: str, run_id: str) -> list[str]:
    steps = read_rows(database_url, run_id)["steps"]
    return sorted((s["path"] or s["key"]) for s in steps)


def test_otlp_steps_of_two_traces_are_grouped_by_name_path_in_step_stats(
    client: Client, database_url: str
) -> None:
    """Each span keeps its span-id key, and gets the path our client's key rules give (parent
    path, name, ``___1`` for the second sibling of a name in start order), whatever order and
    however often its spans come: the step stats and compare of two traces group by it."""
    first, first_id = _two_children_with_leaves()
    second, second_id = _two_children_with_leaves()
    assert _post(client, protobuf_body(first)).status_code == 200
    # The second trace span by span, the later child's subtree and the root before the first
    # child's (its path is renumbered when its earlier sibling comes), then all of it again.
    later = [s for s in second if s.start_time > second[1].end_time]  # second child's subtree
    order = later + [s for s in second if s not in later][::-1]
    for span in [*order, *second]:
        assert _post(client, protobuf_body([span])).status_code == 200
    assert _paths(database_url, run_id_of(first_id)) == PATHS
    assert _paths(database_url, run_id_of(second_id)) == PATHS
    for step in read_rows(database_url, run_id_of(second_id))["steps"]:
        assert step["key"] == (
            step["name"] if step["parent_id"] is None else f"{step['name']}___{step['step_id']}"
        )
    for path in ("pipeline.child", "pipeline.child___1", "pipeline.child___1.leaf"):
        response = client.get(f"/api/v1/pipelines/pipeline/steps/{path}/stats")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["stats"]["count"] == 2, path
        run_ids = {run_id_of(first_id), run_id_of(second_id)}
        assert {r["run_id"] for r in body["slowest"]} == run_ids
        for r in body["slowest"]:  # each links to that run's step of the path, by its key
            paths = {s["key"]: s["path"] for s in read_rows(database_url, r["run_id"])["steps"]}
            assert paths[r["step_key"]] == path
    child = next(s for s in read_rows(database_url, run_id_of(second_id))["steps"]
                 if s["path"] == "pipeline.child___1")  # fmt: skip
    panel_link = client.get(
        f"/runs/{run_id_of(second_id)}/step-stats", params={"key": child["key"]},
        follow_redirects=False,
    )  # fmt: skip
    assert panel_link.headers["location"] == "/pipelines/pipeline/steps/pipeline.child___1?range=7d"
    compare = client.get(
        "/api/v1/compare", params={"a": run_id_of(first_id), "b": run_id_of(second_id)}
    ).json()
    assert (compare["counts"]["only_a"], compare["counts"]["only_b"]) == (0, 0)
    assert compare["counts"]["matched"] == 5


def _every_kind_of_path() -> tuple[list[ReadableSpan], int]:
    """A root with two ``a.b`` (a dotted name), two ``c`` and under the first ``c`` a ``leaf``
    and a ``mine`` whose own key (``pipelens.step.key``) extends its parent's span-id key."""
    with memory_provider() as (provider, memory):
        tracer = provider.get_tracer("tests.otlp")
        with tracer.start_as_current_span("pipeline") as root:
            for _ in range(2):
                with tracer.start_as_current_span("a.b"):
                    pass
            for i in range(2):
                with tracer.start_as_current_span("c") as c:
                    if i == 0:
                        with tracer.start_as_current_span("leaf"):
                            pass
                        key = f"c___{c.get_span_context().span_id:016x}.mine"
                        with tracer.start_as_current_span("mine") as mine:
                            mine.set_attribute("pipelens.step.key", key)
        spans = list(memory.get_finished_spans())
    return spans, root.get_span_context().trace_id


def test_paths_of_a_trace_sent_whole_are_those_the_database_computes(
    client: Client, database_url: str
) -> None:
    """The paths the ingest gives a trace that came whole in one request (``_otlp_paths``) are
    the ones ``pipelens_fill_step_paths`` computes over the stored rows."""
    spans, trace_id = _every_kind_of_path()
    run_id = run_id_of(trace_id)
    assert _post(client, protobuf_body(spans)).status_code == 200
    given = _paths(database_url, run_id)
    assert given == sorted(
        ["pipeline", "pipeline.a_b", "pipeline.a_b___1", "pipeline.c", "pipeline.c.leaf",
         "pipeline.c.mine", "pipeline.c___1"]
    )  # fmt: skip
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE steps SET path = NULL WHERE run_id = %s", [run_id])
        conn.execute("SELECT count(*) FROM pipelens_fill_step_paths(ARRAY[%s])", [run_id])
    assert _paths(database_url, run_id) == given


def test_a_whole_trace_gets_its_paths_in_its_rows_and_a_part_of_one_is_left_to_the_database() -> (
    None
):
    """A request's whole traces carry their paths in the step rows (no update of them after
    the insert); a trace with a span whose parent is not in the request has none."""
    spans, trace_id = _two_children_with_leaves()
    whole = request_rows(decode_request(protobuf_body(spans), is_json=False)).rows
    assert (whole.pathed_runs, whole.path_runs) == ({run_id_of(trace_id): 5}, set())
    assert sorted(row[-1] or row[1] for row in whole.steps.values()) == PATHS
    part = request_rows(decode_request(protobuf_body(spans[:-1]), is_json=False)).rows  # no root
    assert (part.pathed_runs, part.path_runs) == ({}, {run_id_of(trace_id)})
    assert {row[-1] for row in part.steps.values()} == {None}


def test_a_whole_trace_sent_again_with_a_new_sibling_renumbers_the_stored_one(
    client: Client, database_url: str
) -> None:
    """The root with its first ``child``, then the root again with a later ``child``: each
    request is a whole trace, but the run holds more than the second one brings, so the
    stored sibling counts and the later child is ``child___1``."""
    with memory_provider() as (provider, memory):
        tracer = provider.get_tracer("tests.otlp")
        with tracer.start_as_current_span("pipeline") as root:
            for _ in range(2):
                with tracer.start_as_current_span("child"):
                    pass
        first, second, root_span = memory.get_finished_spans()
    assert _post(client, protobuf_body([first, root_span])).status_code == 200
    assert _post(client, protobuf_body([second, root_span])).status_code == 200
    steps = read_rows(database_url, run_id_of(root.get_span_context().trace_id))["steps"]
    by_start = sorted((s for s in steps if s["parent_id"]), key=lambda s: s["start_ns"])
    assert [s["path"] for s in by_start] == ["pipeline.child", "pipeline.child___1"]


def test_a_trace_with_a_cycle_of_parents_or_a_span_id_twice_is_left_to_the_database() -> None:
    """No root (the root's parent made its leaf) or two spans of one id: not a whole trace
    the ingest can give paths to, so the database's rule decides."""
    spans, trace_id = _two_children_with_leaves()
    for change in ("cycle", "twice"):
        message = decode_request(protobuf_body(spans), is_json=False)
        [leaf, _, other, _, root] = message.resource_spans[0].scope_spans[0].spans
        if change == "cycle":
            root.parent_span_id = leaf.span_id
        else:  # the second leaf, renamed (another key), with the first one's id
            other.span_id, other.name = leaf.span_id, "other"
        rows = request_rows(message).rows
        assert (rows.pathed_runs, rows.path_runs) == ({}, {run_id_of(trace_id)}), change
        assert {row[-1] for row in rows.steps.values()} == {None}, change


def _deep_trace_of_long_names(depth: int) -> tuple[list[ReadableSpan], int]:
    """A root named at the pipeline limit, then ``depth`` spans nested one in the other, each
    named at the name limit in characters of 1, 2 and 3 bytes (so cuts fall inside one), a
    dotted one among them, and two siblings of one long name at the bottom."""
    names = [f"{'é' * level}{level}." + "€" * ((MAX_NAME_BYTES - 4 - 2 * level) // 3)
             for level in range(depth)]  # fmt: skip
    names = [n + "x" * (MAX_NAME_BYTES - len(n.encode())) for n in names]
    with memory_provider() as (provider, memory):
        tracer = provider.get_tracer("tests.otlp")
        with tracer.start_as_current_span("p" * MAX_PIPELINE_BYTES) as root:
            spans: list[Any] = []
            for name in names:
                spans.append(tracer.start_as_current_span(name))
                spans[-1].__enter__()
            for _ in range(2):
                with tracer.start_as_current_span(names[-1]):
                    pass
            for span in reversed(spans):
                span.__exit__(None, None, None)
        finished = list(memory.get_finished_spans())
    return finished, root.get_span_context().trace_id


def test_paths_of_a_deep_trace_of_long_names_are_capped_alike_by_the_ingest_and_the_database(
    client: Client, database_url: str
) -> None:
    """Names at the limits nested deep: the trace is stored (before: a 503, the path index's
    row too long) and every path is capped as a key is (at most ``MAX_KEY_BYTES``, a digest
    before the truncation mark, each distinct), the same by ``_otlp_paths`` and by
    ``pipelens_fill_step_paths``; its step stats read back by path."""
    spans, trace_id = _deep_trace_of_long_names(8)
    run_id = run_id_of(trace_id)
    response = _post(client, protobuf_body(spans))
    assert response.status_code == 200, response.text
    given = _paths(database_url, run_id)
    assert len(given) == len(set(given)) == 11
    below_root = [p for p in given if p != "p" * MAX_PIPELINE_BYTES]
    assert all(len(p.encode()) <= MAX_KEY_BYTES for p in given)
    assert all(p.endswith(TRUNCATED_MARK) for p in below_root)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE steps SET path = NULL WHERE run_id = %s", [run_id])
        conn.execute("SELECT count(*) FROM pipelens_fill_step_paths(ARRAY[%s])", [run_id])
    assert _paths(database_url, run_id) == given
    for path in below_root:
        stats = client.get(f"/api/v1/pipelines/{'p' * MAX_PIPELINE_BYTES}/steps/{path}/stats")
        assert stats.status_code == 200, stats.text
        assert stats.json()["stats"]["count"] == 1


def test_the_databases_cap_of_a_path_is_the_clients_cut_of_a_key(database_url: str) -> None:
    """``pipelens_capped_path`` gives what ``cut(..., MAX_KEY_BYTES, unique=True)`` does, for
    texts at, just past and far past the limit, cut before characters of 1 to 4 bytes."""
    texts = ["a" * MAX_KEY_BYTES, "a" * (MAX_KEY_BYTES + 1)]
    texts += [("a" * lead) + ch * 2000 for lead in range(4) for ch in ("b", "é", "€", "😀")]
    with psycopg.connect(database_url) as conn:
        capped = [conn.execute("SELECT pipelens_capped_path(%s)", [t]).fetchone() for t in texts]
    assert [row[0] if row else None for row in capped] == [
        cut(t, MAX_KEY_BYTES, unique=True) for t in texts
    ]

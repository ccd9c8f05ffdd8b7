"""OTLP export: ``configure(otlp_endpoint=...)`` sends runs and steps as OTLP/HTTP protobuf
spans (to a real local receiver decoding them with opentelemetry-proto), alone or beside our
own server's transport."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from _otlp_receiver import Received, attributes, otlp_receiver
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

import pipelens
from pipelens.events import StepFinished


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Received]]:
    monkeypatch.setenv("PIPELENS_SPOOL_DIR", str(tmp_path / "spool"))
    with otlp_receiver() as served:
        yield served


@pipelens.step
def retrieve(query: str) -> list[str]:
    pipelens.record("n_docs", 2)
    return [query, "doc"]


@pipelens.step
def broken() -> None:
    raise ValueError("no index")


@pipelens.step
def rag(query: str) -> str:
    docs = retrieve(query)
    with contextlib.suppress(ValueError):
        broken()
    with pipelens.llm_call(
        provider="openai",
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": query}],
        params={"temperature": 0.2, "max_tokens": 64},
    ) as call:
        call.set_usage(12, 5)
        call.set_output("an answer")
    return " ".join(docs)


def test_a_run_arrives_as_spans_with_our_ids_nesting_and_values(
    receiver: tuple[str, Received],
) -> None:
    """Trace id = the run id's digits, span id = step id, parents = parent steps; inputs,
    result, records, key and status as attributes; the pipeline on the root."""
    url, received = receiver
    pipelens.configure(otlp_endpoint=url)
    rag("q")
    assert pipelens.flush(10) is True
    spans = {s.name: s for s in received.spans()}
    assert sorted(spans) == ["broken", "openai_chat", "rag", "retrieve"]
    root = spans["rag"]
    run_id = attributes(root)["pipelens.run_id"]
    assert root.trace_id.hex() == run_id.replace("-", "")
    assert {s.trace_id for s in spans.values()} == {root.trace_id}
    assert root.parent_span_id == b""
    for name in ("retrieve", "broken", "openai_chat"):
        assert spans[name].parent_span_id == root.span_id
    assert attributes(root)["pipelens.pipeline"] == "rag"
    assert attributes(root)["output.value"] == '"q doc"'
    got = attributes(spans["retrieve"])
    assert (got["pipelens.step.key"], got["pipelens.status"]) == ("rag.retrieve", "completed")
    assert msgspec.json.decode(got["input.value"]) == {"query": "q"}
    assert msgspec.json.decode(got["pipelens.records"]) == {"n_docs": 2}
    assert msgspec.json.decode(got["output.value"]) == ["q", "doc"]
    assert (got["input.mime_type"], got["output.mime_type"]) == ("application/json",) * 2
    assert spans["retrieve"].kind == Span.SPAN_KIND_INTERNAL
    assert spans["retrieve"].end_time_unix_nano > spans["retrieve"].start_time_unix_nano > 0
    assert (root.status.code, spans["retrieve"].status.code) == (
        Status.STATUS_CODE_UNSET,
        Status.STATUS_CODE_UNSET,
    )
    (resource,) = [r.resource for q in received.requests for r in q.resource_spans][:1]
    assert attributes(resource)["telemetry.sdk.name"] == "pipelens"


def test_a_failed_step_has_error_status_and_an_exception_event(
    receiver: tuple[str, Received],
) -> None:
    """Status ERROR with the message; the ``exception`` event has type, message, traceback."""
    url, received = receiver
    pipelens.configure(otlp_endpoint=url)
    rag("q")
    assert pipelens.flush(10) is True
    span = received.span("broken")
    assert (span.status.code, span.status.message) == (Status.STATUS_CODE_ERROR, "no index")
    (event,) = span.events
    got = attributes(event)
    assert (event.name, got["exception.type"], got["exception.message"]) == (
        "exception",
        "ValueError",
        "no index",
    )
    assert "raise ValueError" in got["exception.stacktrace"]
    assert event.time_unix_nano == span.end_time_unix_nano


def test_an_llm_step_has_the_genai_attributes(receiver: tuple[str, Received]) -> None:
    """Provider, operation, models, tokens, request parameters and messages in gen_ai.*."""
    url, received = receiver
    pipelens.configure(otlp_endpoint=url)
    rag("q")
    assert pipelens.flush(10) is True
    span = received.span("openai_chat")
    got = attributes(span)
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert {k: v for k, v in got.items() if k.startswith("gen_ai.") and "messages" not in k} == {
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.usage.total_tokens": 17,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 64,
    }
    assert msgspec.json.decode(got["gen_ai.input.messages"]) == [{"role": "user", "content": "q"}]
    assert msgspec.json.decode(got["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "an answer"}]}
    ]
    assert msgspec.json.decode(got["pipelens.llm"])["usage"]["input_tokens"] == 12


def test_beside_our_server_both_get_every_step(receiver: tuple[str, Received]) -> None:
    """``url=`` and ``otlp_endpoint=`` together: our ingest gets the events, the OTLP endpoint
    the spans, of the same steps; ``otlp=False`` later stops only the export."""
    url, received = receiver
    pipelens.configure(url=url, otlp_endpoint=url)
    rag("q")
    assert pipelens.flush(10) is True
    finished = {e.step_id for e in received.events if isinstance(e, StepFinished)}
    assert finished == {s.span_id.hex() for s in received.spans()}
    assert len(finished) == 4
    pipelens.configure(otlp=False)
    assert isinstance(pipelens._core.settings.settings.transport, pipelens.HttpTransport)
    before = len(received.spans())
    rag("again")
    assert pipelens.flush(10) is True
    assert (len(received.spans()), len(received.events) > 8) == (before, True)


def test_otlp_true_reads_the_standard_environment(
    receiver: tuple[str, Received], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``otlp=True`` takes OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_HEADERS
    (percent-decoded); without ``otlp=True`` they are not read."""
    url, received = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=a%20b,x-team=ml")
    pipelens.configure(capture_args=True)
    rag("q")
    assert pipelens._core.settings.settings.transport is None
    pipelens.configure(otlp=True)
    rag("q")
    assert pipelens.flush(10) is True
    assert len(received.spans()) == 4
    assert {(h["x-api-key"], h["x-team"]) for h in received.headers} == {("a b", "ml")}


def test_otlp_headers_go_with_every_request(receiver: tuple[str, Received]) -> None:
    """``otlp_headers`` are sent; the endpoint may be given with its ``/v1/traces`` path."""
    url, received = receiver
    pipelens.configure(otlp_endpoint=f"{url}/v1/traces", otlp_headers={"authorization": "k"})
    rag("q")
    assert pipelens.flush(10) is True
    assert {h["authorization"] for h in received.headers} == {"k"}


def test_a_continued_run_nests_under_the_remote_step(receiver: tuple[str, Received]) -> None:
    """A part continued from headers is in the sender's trace, under the sender's span."""
    url, received = receiver
    pipelens.configure(otlp_endpoint=url)

    @pipelens.step
    def sender() -> dict[str, str]:
        return pipelens.propagation_headers()

    headers = sender()
    with pipelens.continue_run(headers, "handler"):
        retrieve("x")
    assert pipelens.flush(10) is True
    sent, handler = received.span("sender"), received.span("handler")
    assert (handler.trace_id, handler.parent_span_id) == (sent.trace_id, sent.span_id)
    assert received.span("retrieve").parent_span_id == handler.span_id


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"otlp": "yes"}, r"otlp='yes'"),
        ({"otlp": False, "otlp_endpoint": "http://x"}, "give no otlp_endpoint"),
        ({"otlp_headers": {"a": "b"}}, "the headers go with otlp_endpoint"),
        ({"otlp_endpoint": "ftp://x"}, "OtlpTransport"),
        ({"otlp_endpoint": "http://x", "otlp_headers": {"a": 1}}, "headers"),
    ],
)
def test_bad_otlp_options_are_refused_by_name(options: dict[str, object], message: str) -> None:
    """Each bad option raises a ConfigurationError naming it."""
    with pytest.raises(pipelens.ConfigurationError, match=message):
        pipelens.configure(**options)  # type: ignore[arg-type]


def test_otlp_true_without_an_endpoint_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """No endpoint in the environment: the error names the variables."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    with pytest.raises(pipelens.ConfigurationError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        pipelens.configure(otlp=True)


def test_the_core_imports_no_opentelemetry_and_the_export_names_the_extra() -> None:
    """``import pipelens`` loads no opentelemetry module; without opentelemetry-proto,
    ``otlp_endpoint`` is a ConfigurationError naming ``pipelens[otlp]``."""
    code = (
        "import sys\n"
        "import pipelens\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], sys.modules\n"
        "sys.modules['opentelemetry.proto'] = None  # as if not installed\n"
        "try:\n"
        "    pipelens.configure(otlp_endpoint='http://127.0.0.1:9')\n"
        "except pipelens.ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'pipelens[otlp]'" in done.stdout


def test_a_closed_otlp_export_spools_no_event_it_cannot_encode(
    receiver: tuple[str, Received], tmp_path: Path
) -> None:
    """After close(), the OTLP export has nowhere to write an event (its spool holds OTLP
    bodies, encoded on its own thread): each is counted as dropped, none spooled as msgpack."""
    url, _ = receiver
    transport = pipelens.OtlpTransport(url, spool_dir=tmp_path / "otlp-spool")
    transport.close(10)
    pipelens.configure(transport=transport)
    retrieve("q")
    stats = pipelens.transport_stats(transport)
    # The run's start and end and the step's end: an export alone is sent no step starts.
    assert (stats.dropped, stats.spooled) == (3, 0)
    assert not (tmp_path / "otlp-spool").exists() or not any((tmp_path / "otlp-spool").iterdir())


def test_the_export_alone_is_sent_no_starts_and_loses_nothing_of_them(
    receiver: tuple[str, Received],
) -> None:
    """An OTLP export alone gets each step once, at its end (a span is a finished step: the
    caller's thread builds no step start events), with the inputs the start would have carried
    and the run's metadata, set mid-run, on the root."""
    url, received = receiver
    export = pipelens.OtlpTransport(url)
    pipelens.configure(transport=export)

    @pipelens.step
    def job(query: str) -> None:
        pipelens.set_run(metadata={"tenant": "acme"})
        retrieve(query)

    job("q")
    assert pipelens.flush(10) is True
    spans = {s.name: s for s in received.spans()}
    assert msgspec.json.decode(attributes(spans["retrieve"])["input.value"]) == {"query": "q"}
    assert msgspec.json.decode(attributes(spans["job"])["input.value"]) == {"query": "q"}
    assert attributes(spans["job"])["pipelens.run.tenant"] == "acme"
    assert attributes(spans["job"])["pipelens.pipeline"] == "job"
    # Two steps' ends and the run's start and end: four events batched, no step start.
    assert export.sent == 4


def test_a_root_sent_before_its_run_ends_still_names_its_pipeline(
    receiver: tuple[str, Received],
) -> None:
    """A batch that ends with the root's span (the run's end in the next batch) still gives the
    root its pipeline and run attributes, from the run's start."""
    url, received = receiver
    export = pipelens.OtlpTransport(url, max_batch=2)
    pipelens.configure(transport=export)

    @pipelens.step
    def job(query: str) -> None:
        retrieve(query)

    pipelens.tag("nightly")
    job("q")
    assert pipelens.flush(10) is True
    spans = {s.name: s for s in received.spans()}
    assert attributes(spans["job"])["pipelens.pipeline"] == "job"


def test_the_export_takes_an_http_transports_memory_bound_and_its_workers_keep_it(
    receiver: tuple[str, Received],
) -> None:
    """``OtlpTransport(max_buffer_bytes=...)`` bounds its memory as an ``HttpTransport``'s
    does (a bound of a few events' weight: ``send`` waits for the thread, bodies that do not
    fit go through the spool, nothing is lost), and a worker process's copy has the same bound."""
    url, received = receiver
    transport = pipelens.OtlpTransport(url, max_buffer_bytes=16 * 1024)
    copy = transport.worker_recipe()
    assert copy is not None
    assert (transport.max_buffer_bytes, copy().max_buffer_bytes) == (16 * 1024, 16 * 1024)
    pipelens.configure(transport=transport)

    @pipelens.step
    def many() -> None:
        for i in range(200):
            retrieve(str(i))

    many()
    assert transport.flush(10) is True
    assert (len(received.spans()), pipelens.transport_stats(transport).dropped) == (201, 0)

"""One tree with in-process OpenTelemetry: the real opentelemetry-sdk (a provider of the
test's own, never the global one) and opentelemetry-instrumentation-httpx."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    Tracer,
    TraceState,
    set_span_in_context,
)

import pipelens
from pipelens._otel import bridge
from pipelens._otel.trace_context import foreign_entries, quoted_run_id, run_id_of, trace_id_of
from pipelens.testing import CapturedEvents


@pytest.fixture
def otel() -> Iterator[tuple[Tracer, InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider.get_tracer("test"), exporter, provider
    finally:
        provider.shutdown()
        bridge.uninstall_context()


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_a_step_opened_inside_an_otel_span_nests_under_it(
    otel: tuple[Tracer, InMemorySpanExporter, TracerProvider], events: CapturedEvents
) -> None:
    """The run is the span's trace (its id as a UUID) and the root's parent is the span."""
    tracer, _, _ = otel

    @pipelens.step
    def work() -> int:
        return 1

    with tracer.start_as_current_span("request") as span:
        work()
        work()
    context = span.get_span_context()
    run_id = run_id_of(f"{context.trace_id:032x}")
    roots = events.steps(run_id)
    assert [(s.name, s.parent_id) for s in roots] == [("work", f"{context.span_id:016x}")] * 2
    assert len({s.key for s in roots}) == 2  # two parts of one run, a key each


def test_a_pipeline_run_opened_inside_an_otel_span_nests_under_it(
    otel: tuple[Tracer, InMemorySpanExporter, TracerProvider], events: CapturedEvents
) -> None:
    """``Pipeline(...).run()`` (the seed's API, our ``open_run``) follows the span as ``@step``
    does: the run is the span's trace, named by the pipeline, its root under the span with a
    part's key; an OTel span inside the run nests under its root."""
    tracer, exporter, _ = otel

    @pipelens.step
    def answer() -> None:
        with tracer.start_as_current_span("db"):
            pass

    with tracer.start_as_current_span("request") as span:
        for _ in range(2):
            with pipelens.Pipeline("qa").run():
                answer()
    context = span.get_span_context()
    run_id = run_id_of(f"{context.trace_id:032x}")
    roots = [s for s in events.steps(run_id) if s.name == "qa"]
    assert [s.parent_id for s in roots] == [f"{context.span_id:016x}"] * 2
    assert [s.key for s in roots] == [f"qa___{s.step_id}" for s in roots]
    assert [r.pipeline for r in events.runs_started()] == ["qa", "qa"]
    assert {r.run_id for r in events.runs_started()} == {run_id}
    dbs = [s for s in exporter.get_finished_spans() if s.name == "db"]
    answers = [s for s in events.steps(run_id) if s.name == "answer"]
    assert [f"{s.parent.span_id:016x}" for s in dbs if s.parent] == [s.step_id for s in answers]


def test_a_pipeline_run_opened_in_a_step_or_with_its_own_id_is_a_run_of_its_own(
    otel: tuple[Tracer, InMemorySpanExporter, TracerProvider], events: CapturedEvents
) -> None:
    """Inside a step (which OTel sees as the current span) a new ``Pipeline`` run is still a
    new run, and a run id the user gave is kept, span or not."""
    tracer, _, _ = otel

    @pipelens.step
    def outer() -> str:
        with pipelens.Pipeline("inner").run() as run:
            return run.id

    with tracer.start_as_current_span("request"):
        inner_id = outer()
        with pipelens.Pipeline("named", run_id="my-run").run():
            pass
    (outer_id,) = [s.run_id for s in events.steps() if s.name == "outer"]
    assert inner_id != outer_id
    assert events.step("inner").parent_id is None
    assert events.step("named").parent_id is None
    assert "my-run" in {r.run_id for r in events.runs_started()}


def test_otel_spans_started_inside_a_step_nest_under_it(
    otel: tuple[Tracer, InMemorySpanExporter, TracerProvider], events: CapturedEvents
) -> None:
    """A span opened in a step has the step as parent and the run's trace; a span inside that
    span nests under it, and a step inside that again under the step."""
    tracer, exporter, _ = otel

    @pipelens.step
    def inner() -> None:
        with tracer.start_as_current_span("deepest"):
            pass

    @pipelens.step
    def pipeline() -> None:
        with tracer.start_as_current_span("db"), tracer.start_as_current_span("query"):
            inner()

    pipeline()
    spans = _by_name(exporter)
    outer, inner_step = events.step("pipeline"), events.step("pipeline.inner")
    trace_id = int(trace_id_of(outer.run_id), 16)
    assert {s.context.trace_id for s in spans.values()} == {trace_id}
    parents = {name: f"{s.parent.span_id:016x}" for name, s in spans.items() if s.parent}
    assert parents == {
        "db": outer.step_id,
        "query": f"{spans['db'].context.span_id:016x}",
        "deepest": inner_step.step_id,
    }


def test_the_context_naming_a_step_is_made_once_per_step_and_follows_the_current_span(
    otel: tuple[Tracer, InMemorySpanExporter, TracerProvider], events: CapturedEvents
) -> None:
    """OTel-instrumented code asks for the current context several times a call (anthropic's
    SDK does on each request): within one step it is the same context each time, a child step
    gets its own, and a span opened in the step is current inside it, the step again after."""
    from opentelemetry import context, trace

    tracer, _, _ = otel
    seen: dict[str, object] = {}

    @pipelens.step
    def child() -> None:
        seen["child"] = context.get_current()

    @pipelens.step
    def outer() -> None:
        first = context.get_current()
        assert context.get_current() is first
        child()
        with tracer.start_as_current_span("db") as span:
            assert trace.get_current_span() is span
        assert context.get_current() is first
        seen["outer"] = first

    outer()
    ids = {
        name: f"{trace.get_current_span(ctx).get_span_context().span_id:016x}"  # type: ignore[arg-type]
        for name, ctx in seen.items()
    }
    assert ids == {
        "outer": events.step("outer").step_id,
        "child": events.step("outer.child").step_id,
    }


def test_the_otel_side_sees_no_step_outside_steps(
    otel: tuple[Tracer, InMemorySpanExporter, TracerProvider], events: CapturedEvents
) -> None:
    """Outside any step OTel works as without PipeLens: a root span is a root, and a run
    opened with no span current has no parent."""
    tracer, exporter, _ = otel

    @pipelens.step
    def alone() -> None:
        return None

    alone()
    with tracer.start_as_current_span("plain"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert events.step("alone").parent_id is None


def test_an_exception_passes_through_both(
    otel: tuple[Tracer, InMemorySpanExporter, TracerProvider], events: CapturedEvents
) -> None:
    """The user's exception leaves an OTel span inside a step unchanged; both record it."""
    tracer, exporter, _ = otel

    @pipelens.step
    def failing() -> None:
        with tracer.start_as_current_span("db"):
            raise LookupError("row")

    with pytest.raises(LookupError, match="row"):
        failing()
    (span,) = exporter.get_finished_spans()
    assert span.status.is_ok is False
    assert events.step("failing").status == "failed"


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_instrumented_httpx_call_in_a_step_is_its_child_and_carries_the_run(
    otel: tuple[Tracer, InMemorySpanExporter, TracerProvider],
    events: CapturedEvents,
    echo_url: str,
) -> None:
    """opentelemetry-instrumentation-httpx: the client span's parent is the step, and the
    request's traceparent/tracestate name the run (so a PipeLens service continues it)."""
    _, exporter, provider = otel
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:

        @pipelens.step
        def call() -> dict[str, str]:
            with httpx.Client() as client:
                return dict(client.get(echo_url).json())

        headers = call()
    finally:
        instrumentor.uninstrument()
    (span,) = exporter.get_finished_spans()
    step = events.step("call")
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == step.step_id
    assert span.context.trace_id == int(trace_id_of(step.run_id), 16)
    assert headers["traceparent"] == (
        f"00-{trace_id_of(step.run_id)}-{span.context.span_id:016x}-01"
    )
    assert headers["tracestate"].startswith(f"pipelens={step.run_id};call")


def test_an_otel_span_in_a_continued_run_carries_the_other_vendors_entries(
    otel: tuple[Tracer, InMemorySpanExporter, TracerProvider],
) -> None:
    """The trace state an OTel span started in a step inherits holds our entry first, then the
    other vendors' entries the run received (what an instrumented client then sends)."""
    tracer, exporter, _ = otel
    headers = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
    }
    with pipelens.continue_run(headers, "job"), tracer.start_as_current_span("call"):
        pass
    (span,) = exporter.get_finished_spans()
    assert list(span.context.trace_state.keys()) == ["pipelens", "congo", "rojo"]
    assert span.context.trace_state["congo"] == "t61rcWkgMzE"


def test_a_run_opened_under_an_otel_span_passes_its_other_vendors_entries_on(
    otel: tuple[Tracer, InMemorySpanExporter, TracerProvider],
) -> None:
    """The foreign ``tracestate`` of the OTel span a run (``@step`` or ``Pipeline``) opens
    under goes on after our entry: in ``propagation_headers()`` and in the OTel spans started
    in the run."""
    tracer, exporter, _ = otel
    state = TraceState([("congo", "t61rcWkgMzE"), ("rojo", "00f067aa0ba902b7")])
    caller = NonRecordingSpan(
        SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0xB7AD6B7169203331,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=state,
        )
    )

    @pipelens.step
    def work() -> str:
        with tracer.start_as_current_span("db"):
            pass
        return pipelens.propagation_headers()["tracestate"]

    with tracer.start_as_current_span("request", context=set_span_in_context(caller)):
        sent = work()
        with pipelens.Pipeline("qa").run():
            sent_by_pipeline = pipelens.propagation_headers()["tracestate"]
    for value in (sent, sent_by_pipeline):
        assert value.startswith("pipelens=")
        assert value.split(",")[1:] == ["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"]
    db = _by_name(exporter)["db"]
    assert list(db.context.trace_state.keys()) == ["pipelens", "congo", "rojo"]


_member_keys = st.from_regex(r"[a-z][_0-9a-z\-*/]{0,20}", fullmatch=True)
_member_values = st.from_regex(r"[\x21-\x2b\x2d-\x3c\x3e-\x7e]{1,30}", fullmatch=True)


@given(
    run_id=st.text(max_size=40),
    key=st.text(max_size=60),
    others=st.lists(st.tuples(_member_keys, _member_values), max_size=4),
)
def test_a_steps_tracestate_is_the_one_otels_own_constructor_would_make(
    run_id: str, key: str, others: list[tuple[str, str]]
) -> None:
    """The bridge makes each step's ``TraceState`` without OTel's per-entry checks (our entries
    are valid by construction, the other vendors' were checked on arrival): whatever the run id,
    key and other entries, it equals what ``TraceState(pairs)`` makes, entry by entry."""
    received = foreign_entries(",".join(f"{k}={v}" for k, v in others))
    pairs = bridge._state_pairs(quoted_run_id(run_id), key, received)
    made = bridge._load_api().trace_state(pairs)
    checked = TraceState(pairs)
    assert list(made.items()) == list(checked.items())
    assert made.to_header() == checked.to_header()


def test_a_tracestate_class_that_keeps_its_entries_elsewhere_is_used_as_it_is() -> None:
    """Should a later OTel keep its entries other than in ``_dict``, the bridge calls the
    constructor (with its checks) rather than make states that would be empty."""

    class Elsewhere(TraceState):
        def __init__(self, entries: list[tuple[str, str]] | None = None) -> None:
            super().__init__(entries)
            self._entries = self._dict
            self._dict = {}

        def get(self, key: str, default: object = None) -> object:
            return self._entries.get(key, default)

    assert bridge._trusted_state(Elsewhere) is Elsewhere
    assert bridge._trusted_state(TraceState) is not TraceState

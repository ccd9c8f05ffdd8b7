"""A worker-process step that starts an OpenTelemetry span (its own SDK provider, in memory):
imported by the parent's test and, spawned, by the worker when the task is unpickled."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pipelens


@pipelens.step
def query(x: int) -> tuple[str, str]:
    """``(trace id, parent span id)`` of an OTel span started inside this step, in hex."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("worker").start_as_current_span(f"sql {x}"):
        pass
    provider.shutdown()
    (span,) = exporter.get_finished_spans()
    assert span.parent is not None, "the OTel span has no parent in the worker"
    return f"{span.context.trace_id:032x}", f"{span.parent.span_id:016x}"


@pipelens.step
def outgoing(x: int) -> dict[str, str]:
    """The W3C headers a request sent from this step would carry."""
    return pipelens.propagation_headers()

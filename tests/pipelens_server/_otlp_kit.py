"""Helpers for the OTLP ingest tests: OpenTelemetry SDK tracer providers of their own (never the
process-global one), exporting through the real OTLP/HTTP exporter or into memory, and the
request bodies the exporter would send."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

PROTOBUF = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}


def run_id_of(trace_id: int) -> str:
    """The run id the server gives a trace: its id written as a UUID."""
    h = f"{trace_id:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@contextlib.contextmanager
def exporting_provider(
    url: str, service: str = "svc", headers: dict[str, str] | None = None
) -> Iterator[TracerProvider]:
    """A provider whose every ended span goes at once through ``OTLPSpanExporter`` to the
    server at ``url`` (protobuf, one request per span); shut down afterwards."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers=headers, timeout=30)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider
    finally:
        provider.shutdown()


def export(url: str, spans: Sequence[ReadableSpan]) -> SpanExportResult:
    """``spans`` sent in one request by the real ``OTLPSpanExporter`` to the server at ``url``."""
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=30)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


@contextlib.contextmanager
def memory_provider(service: str = "svc") -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """A provider whose ended spans are kept in memory (to build request bodies from)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    try:
        yield provider, memory
    finally:
        provider.shutdown()


def protobuf_body(spans: Sequence[ReadableSpan]) -> bytes:
    """The protobuf body the OTLP/HTTP exporter sends for ``spans``."""
    data: bytes = encode_spans(spans).SerializeToString()
    return data


def run_detail(url: str, run_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``GET /api/v1/runs/{run_id}``, decoded; steps by key."""
    response = httpx.get(f"{url}/api/v1/runs/{run_id}", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    detail["by_key"] = {step["key"]: step for step in detail["steps"]}
    return detail

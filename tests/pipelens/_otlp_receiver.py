"""A tiny OTLP/HTTP receiver for the export tests: a real HTTP server on a free port that
decodes each ``POST /v1/traces`` with opentelemetry-proto's own messages, and keeps our own
ingest's msgpack batches (``POST /api/v1/events``) beside them."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipelens.events import Event, decode_msgpack


class Received:
    """What the receiver was sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.events: list[Event] = []

    def spans(self) -> list[Span]:
        with self.lock:
            return [
                span
                for request in self.requests
                for resource in request.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
            ]

    def span(self, name: str) -> Span:
        (found,) = [s for s in self.spans() if s.name == name]
        return found


def value(any_value: AnyValue) -> Any:
    """An OTLP attribute value as Python."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind is not None else None


def attributes(span: Any) -> dict[str, Any]:
    """A span's (or event's, or resource's) attributes as a dict."""
    return {kv.key: value(kv.value) for kv in span.attributes}


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[str, Received]]:
    """Serve until the block ends; yield the base URL and what arrives."""
    received = Received()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with received.lock:
                if self.path == "/v1/traces":
                    assert self.headers["Content-Type"] == "application/x-protobuf"
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    received.requests.append(request)
                    received.headers.append({k.lower(): v for k, v in self.headers.items()})
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/api/v1/events":
                    received.events += decode_msgpack(body).events
                    answer = b"{}"
                else:
                    self.send_error(404)
                    return
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()

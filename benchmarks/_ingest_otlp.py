"""OTLP ingest beside our msgpack ingest: ``python -m benchmarks.ingest --otlp``.

Both on the same ``pipelens serve`` process and embedded PostgreSQL, in one run:

* **OTLP**: traces of 100 spans (a root and 99 children with an attribute each) made by the
  OpenTelemetry SDK and encoded by its OTLP exporter's own encoder into protobuf requests of
  1,000 spans, posted to ``POST /v1/traces``;
* **msgpack (baseline)**: the same shape of runs made by ``@pipelens.step`` (start and finish
  events) in requests carrying 1,000 steps, posted to ``POST /api/v1/events``.

Each is posted by ``--otlp-senders`` threads (one keep-alive ``httpx`` client each) as fast as
the server answers; the server answers once a request is committed, so the last answer is the
moment everything is stored (checked by counting the rows afterwards). The figure is steps
stored per second, with the CPU the server and PostgreSQL spent per step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks._ingest_server import Server, empty_tables, finished_steps

SPANS_PER_TRACE = 100
SPANS_PER_REQUEST = 1000
TARGET_SPANS_PER_S = 30_000


def otlp_bodies(requests: int) -> list[bytes]:
    """``requests`` protobuf bodies of :data:`SPANS_PER_REQUEST` spans, whole traces each."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("benchmarks.ingest")
    bodies = []
    for _ in range(requests):
        memory.clear()
        for _ in range(SPANS_PER_REQUEST // SPANS_PER_TRACE):
            with tracer.start_as_current_span("pipeline"):
                for i in range(SPANS_PER_TRACE - 1):
                    with tracer.start_as_current_span("work") as span:
                        span.set_attribute("i", i)
        bodies.append(encode_spans(memory.get_finished_spans()).SerializeToString())
    provider.shutdown()
    return bodies


def msgpack_bodies(requests: int, realistic_events: Callable[[int], list[Any]]) -> list[bytes]:
    """``requests`` msgpack bodies of our events carrying :data:`SPANS_PER_REQUEST` steps
    (``realistic_events(runs)``: the events of that many 100-step runs, from ``ingest``)."""
    from pipelens.events import Batch, encode_msgpack

    runs_per_request = SPANS_PER_REQUEST // SPANS_PER_TRACE
    events = realistic_events(requests * runs_per_request)
    per_request = len(events) // requests  # whole runs: 202 events (100 steps) each
    return [
        encode_msgpack(Batch(events=events[i * per_request : (i + 1) * per_request]))
        for i in range(requests)
    ]


def post_all(
    server: Server, path: str, bodies: list[bytes], content_type: str, senders: int
) -> dict[str, Any]:
    """Post ``bodies`` from ``senders`` threads; steps stored per second and CPU per step."""
    import httpx

    empty_tables(server.conninfo)
    failures: list[str] = []
    go = threading.Barrier(senders + 1)

    def send(share: list[bytes]) -> None:
        headers = {"content-type": content_type}
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
            client.get("/healthz")  # the connection is open before the clock starts
            go.wait()
            for body in share:
                response = client.post(path, content=body)
                if response.status_code not in (200, 202):
                    failures.append(f"{response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=send, args=(bodies[i::senders],)) for i in range(senders)]
    for thread in threads:
        thread.start()
    cpu_before = server.cpu_seconds()
    go.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu_after = server.cpu_seconds()
    if failures:
        raise SystemExit(f"{path} answered {failures[0]} ({len(failures)} failures)")
    stored = finished_steps(server.conninfo)
    return {
        "requests": len(bodies),
        "stored": stored,
        "seconds": elapsed,
        "steps_per_s": stored / elapsed,
        "kib": sum(len(b) for b in bodies) / len(bodies) / 1024,
        "cpu_server_us": (cpu_after[0] - cpu_before[0]) * 1e6 / stored,
        "cpu_postgres_us": (cpu_after[1] - cpu_before[1]) * 1e6 / stored,
    }


def compare(
    server: Server, requests: int, senders: int, realistic_events: Callable[[int], list[Any]]
) -> list[str]:
    """Measure OTLP and msgpack ingest on ``server``; the report's lines."""
    measured = {}
    for name, path, content_type, bodies in (
        (
            "msgpack",
            "/api/v1/events",
            "application/msgpack",
            msgpack_bodies(requests, realistic_events),
        ),
        ("OTLP protobuf", "/v1/traces", "application/x-protobuf", otlp_bodies(requests)),
    ):
        measured[name] = post_all(server, path, bodies, content_type, senders)
    base = measured["msgpack"]["steps_per_s"]
    lines = [
        f"{requests} requests of {SPANS_PER_REQUEST:,} steps each from {senders} sender "
        "threads, timed until the last is committed:",
    ]
    for name, m in measured.items():
        lines.append(
            f"  {name:>13}: {m['stored']:,} steps in {m['seconds']:.2f} s = "
            f"{m['steps_per_s']:,.0f} steps/s ({m['steps_per_s'] / base:.2f}x msgpack; "
            f"{m['kib']:.0f} KiB a request; CPU µs per step: server {m['cpu_server_us']:.1f}, "
            f"PostgreSQL {m['cpu_postgres_us']:.1f})"
        )
    otlp = measured["OTLP protobuf"]["steps_per_s"]
    verdict = "met" if otlp >= TARGET_SPANS_PER_S else "missed"
    lines.append(
        f"  OTLP >= {TARGET_SPANS_PER_S:,} spans/s (information, never an exit status): "
        f"{verdict} ({otlp:,.0f} spans/s)"
    )
    return lines

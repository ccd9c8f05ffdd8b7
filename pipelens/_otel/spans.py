"""Our events as OTLP spans: one ``ExportTraceServiceRequest`` (protobuf) per batch.

Runs on the export transport's background thread only; ``opentelemetry-proto`` is imported
when the first batch is encoded. A finished step is one span (OTLP has no open spans):

* ids by :mod:`pipelens._otel.trace_context` — trace id from the run id, span id = step id,
  parent span id = the parent step's id (for a run continued from another process or an OTel
  span, that parent's id);
* name = the step's name; kind ``CLIENT`` for an LLM call, else ``INTERNAL``; times as sent;
* inputs and result as OpenInference's ``input.value`` and ``output.value`` (JSON text, their
  ``*.mime_type`` ``application/json``), which OTel backends and our own ``/v1/traces`` read
  as a step's inputs and result;
* attributes ``pipelens.run_id``, ``pipelens.step.key``, ``pipelens.step.kind``,
  ``pipelens.status``, and when known ``pipelens.records`` and ``pipelens.llm`` (the JSON texts
  our own server stores); a run's root adds ``pipelens.pipeline`` (and the run's attributes as
  ``pipelens.run.<name>``);
* a failed step has status ``ERROR`` with the message, and an ``exception`` event
  (``exception.type``, ``exception.message``, ``exception.stacktrace``); a cancelled one keeps
  status unset (``pipelens.status`` says ``cancelled``);
* an LLM step has the GenAI semantic conventions: ``gen_ai.provider.name`` (and the older
  ``gen_ai.system``), ``gen_ai.operation.name``, ``gen_ai.request.model``,
  ``gen_ai.response.model``, ``gen_ai.response.id``, ``gen_ai.response.finish_reasons``,
  ``gen_ai.usage.input_tokens``/``output_tokens`` (and ``cache_read.input_tokens``,
  ``cache_creation.input_tokens``, ``reasoning.output_tokens``), ``gen_ai.request.<param>`` for
  scalar request
  parameters, ``gen_ai.input.messages``/``gen_ai.output.messages`` as JSON text.

A step's inputs travel in its start event (when the run sends starts: with the export alone it
sends none, and they ride on the finish); they are held here until its end (at most
:data:`MAX_OPEN` steps: beyond, the oldest are forgotten and their spans have no inputs).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from pipelens._otel.trace_context import trace_id_of
from pipelens._version import __version__
from pipelens.events import Event, RunFinished, RunStarted, StepFinished, StepStarted

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

MAX_OPEN = 100_000
_JSON = "application/json"
_json = msgspec.json.Decoder()
_json_encode = msgspec.json.Encoder()
_GENAI_PARAMS = (
    "temperature",
    "max_tokens",
    "top_p",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "seed",
)


def check_installed() -> None:
    """Raise ``ImportError`` when ``opentelemetry-proto`` is missing."""
    import opentelemetry.proto.collector.trace.v1.trace_service_pb2  # noqa: F401


def span_id_of(step_id: str) -> bytes:
    """The 8 bytes of a step id (16 hex digits, as ours are; any other is hashed)."""
    if len(step_id) == 16:
        try:
            return bytes.fromhex(step_id)
        except ValueError:
            pass
    return hashlib.blake2b(step_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _value(kv: KeyValue, value: Any) -> None:
    """Set ``kv.value`` to ``value``: bool, int, float and str typed, anything else as JSON."""
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int) and -(2**63) <= value < 2**63:
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    elif isinstance(value, str):
        kv.value.string_value = value
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        for v in value:
            kv.value.array_value.values.add().string_value = v
    else:
        kv.value.string_value = _json_encode.encode(value).decode()


class SpanEncoder:
    """Turns batches of our events into OTLP/HTTP request bodies, remembering what a later
    batch needs (open steps' inputs, runs' pipelines)."""

    def __init__(self) -> None:
        check_installed()
        self._inputs: dict[tuple[str, str], str] = {}
        self._runs: dict[str, RunStarted] = {}
        self._service = os.environ.get("OTEL_SERVICE_NAME") or "pipelens"

    def bodies(self, events: list[Event], max_bytes: int) -> Iterator[tuple[bytes, int]]:
        """Request bodies for ``events`` of about ``max_bytes`` at most, each with its span
        count (a span bigger than that alone is a body of its own)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
        from opentelemetry.proto.trace.v1 import trace_pb2

        finished_runs: dict[str, RunFinished] = {}
        steps: list[StepFinished] = []
        for event in events:
            if isinstance(event, StepFinished):
                steps.append(event)
            elif isinstance(event, StepStarted):
                if event.inputs is not None:
                    self._hold(event)
            elif isinstance(event, RunStarted):
                self._runs[event.run_id] = event
                if len(self._runs) > MAX_OPEN:
                    del self._runs[next(iter(self._runs))]
            elif isinstance(event, RunFinished):
                finished_runs[event.run_id] = event
        spans = []
        for step in steps:
            span = trace_pb2.Span()
            self._span(span, step, finished_runs.get(step.run_id))
            spans.append(span)
        for run_id in finished_runs:
            self._runs.pop(run_id, None)
        chunk: list[Span] = []
        size = 0
        for span in spans:
            span_size = span.ByteSize()
            if chunk and size + span_size > max_bytes:
                yield self._request(ExportTraceServiceRequest(), chunk), len(chunk)
                chunk, size = [], 0
            chunk.append(span)
            size += span_size
        if chunk:
            yield self._request(ExportTraceServiceRequest(), chunk), len(chunk)

    def _request(self, request: ExportTraceServiceRequest, spans: list[Span]) -> bytes:
        resource_spans = request.resource_spans.add()
        for key, value in (
            ("service.name", self._service),
            ("telemetry.sdk.name", "pipelens"),
            ("telemetry.sdk.language", "python"),
            ("telemetry.sdk.version", __version__),
        ):
            kv = resource_spans.resource.attributes.add()
            kv.key = key
            kv.value.string_value = value
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "pipelens"
        scope_spans.scope.version = __version__
        scope_spans.spans.extend(spans)
        body: bytes = request.SerializeToString()
        return body

    def _hold(self, event: StepStarted) -> None:
        assert event.inputs is not None
        self._inputs[(event.run_id, event.step_id)] = event.inputs
        if len(self._inputs) > MAX_OPEN:
            del self._inputs[next(iter(self._inputs))]

    def _span(self, span: Span, step: StepFinished, finished: RunFinished | None) -> None:
        from opentelemetry.proto.trace.v1 import trace_pb2

        span.trace_id = bytes.fromhex(trace_id_of(step.run_id))
        span.span_id = span_id_of(step.step_id)
        if step.parent_id is not None:
            span.parent_span_id = span_id_of(step.parent_id)
        span.name = step.name
        span.kind = (
            trace_pb2.Span.SPAN_KIND_CLIENT
            if step.llm is not None
            else trace_pb2.Span.SPAN_KIND_INTERNAL
        )
        span.start_time_unix_nano = step.start_ns
        span.end_time_unix_nano = step.end_ns
        inputs = self._inputs.pop((step.run_id, step.step_id), None)
        attributes: list[tuple[str, Any]] = [
            ("pipelens.run_id", step.run_id),
            ("pipelens.step.key", step.key),
            ("pipelens.step.kind", step.kind),
            ("pipelens.status", step.status),
            ("pipelens.records", step.records),
            ("pipelens.llm", step.llm),
        ]
        if step.parent_id is None:  # a run's root
            # Its end when in this batch (the attributes set during the run), else its start.
            run = finished or self._runs.get(step.run_id)
            if run is not None:
                attributes.append(("pipelens.pipeline", run.pipeline))
                attributes += [(f"pipelens.run.{k}", v) for k, v in run.attributes.items()]
        if inputs is None:
            inputs = step.inputs
        if inputs is not None:
            attributes += [("input.value", inputs), ("input.mime_type", _JSON)]
        if step.result is not None:
            attributes += [("output.value", step.result), ("output.mime_type", _JSON)]
        if step.llm is not None:
            attributes += _genai(step.llm)
        for key, value in attributes:
            if value is None:
                continue
            kv = span.attributes.add()
            kv.key = key
            _value(kv, value)
        error = step.error
        if step.status == "failed":
            span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
            if error is not None:
                span.status.message = error.message
        if error is not None:
            event = span.events.add()
            event.name = "exception"
            event.time_unix_nano = step.end_ns
            for key, text in (
                ("exception.type", error.type),
                ("exception.message", error.message),
                ("exception.stacktrace", error.traceback),
            ):
                if text is not None:
                    kv = event.attributes.add()
                    kv.key = key
                    kv.value.string_value = text


def _genai(llm_json: str) -> list[tuple[str, Any]]:
    """The GenAI semantic-convention attributes of an LLM call's JSON text."""
    try:
        call = _json.decode(llm_json)
    except msgspec.DecodeError:
        return []
    if not isinstance(call, dict):
        return []
    usage = call.get("usage") or {}
    output = call.get("output") or {}
    found: list[tuple[str, Any]] = [
        ("gen_ai.provider.name", call.get("provider")),
        ("gen_ai.system", call.get("provider")),
        ("gen_ai.operation.name", _operation(call.get("operation"))),
        ("gen_ai.request.model", call.get("request_model")),
        ("gen_ai.response.model", call.get("response_model")),
        ("gen_ai.response.id", call.get("response_id")),
        ("gen_ai.usage.input_tokens", usage.get("input_tokens")),
        ("gen_ai.usage.output_tokens", usage.get("output_tokens")),
        # Left out when zero, as our own record leaves them out.
        ("gen_ai.usage.cache_read.input_tokens", usage.get("cached_tokens")),
        ("gen_ai.usage.cache_creation.input_tokens", usage.get("cache_write_tokens")),
        ("gen_ai.usage.reasoning.output_tokens", usage.get("reasoning_tokens")),
        ("gen_ai.usage.total_tokens", usage.get("total_tokens")),
    ]
    finish = output.get("finish_reason")
    if finish is not None:
        found.append(("gen_ai.response.finish_reasons", [str(finish)]))
    params = call.get("params") or {}
    for name in _GENAI_PARAMS:
        value = params.get(name)
        if isinstance(value, int | float | str | bool):
            found.append((f"gen_ai.request.{name}", value))
    messages = call.get("messages")
    if messages is not None:
        found.append(("gen_ai.input.messages", _json_encode.encode(messages).decode()))
    if output.get("text") is not None or output.get("tool_calls"):
        message: dict[str, Any] = {"role": "assistant", "parts": []}
        if output.get("text") is not None:
            message["parts"].append({"type": "text", "content": output["text"]})
        for tool in output.get("tool_calls") or []:
            message["parts"].append(
                {
                    "type": "tool_call",
                    "id": tool.get("id"),
                    "name": tool.get("name"),
                    "arguments": tool.get("arguments"),
                }
            )
        if finish is not None:
            message["finish_reason"] = finish
        found.append(("gen_ai.output.messages", _json_encode.encode([message]).decode()))
    return found


def _operation(operation: object) -> str | None:
    # Ours are ``chat``, ``responses``, ``embeddings``...; the convention says ``chat``,
    # ``embeddings``, ``generate_content``, ``text_completion``.
    if not isinstance(operation, str):
        return None
    return {"responses": "chat", "completions": "text_completion"}.get(operation, operation)

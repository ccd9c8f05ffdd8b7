"""From a ``POST /v1/traces`` body (OTLP/HTTP) to the partial rows our own events make.

The body is an ``ExportTraceServiceRequest`` of the OpenTelemetry project's own messages
(``opentelemetry-proto``), protobuf or OTLP's JSON mapping (hex trace and span ids, camelCase
names, enums as numbers or names), gzip-compressed or not (decompressed to at most the body
limit, so a small bomb cannot fill the memory).

How a span becomes rows (``ARCHITECTURE.md`` and ``docs/otlp.md`` say it for users):

* a trace is a run: its ``run_id`` is the trace id written as a UUID (the form of our own run
  ids), so every span of the trace lands in one run, whatever request brings it;
* every span is a step (``step_id`` its span id, ``parent_id`` its parent span's id). A span with
  no parent is the run's root step: its name is the run's ``pipeline`` (a pipeline is one kind of
  run, as a root span's name is one kind of trace; a service serves many kinds, so its
  ``service.name`` is kept among the run's attributes instead), and its end ends the run;
* a step's key must be the same whichever request brings the span and whatever came before, so
  it is derived from the span alone: the root step's key is its name, any other step's
  ``name___<span id>`` (our suffix for siblings of one name, with the span id, unique in its
  trace, in place of the position no span knows). The nesting comes from ``parent_id``;
* attributes, span kind, scope, status message and events are the step's records; status
  ``ERROR`` makes the step ``failed``, an unset status with ``pipelens.status`` ``cancelled``
  (what our export writes for a cancelled step) ``cancelled``, its error read from the last
  ``exception`` event (type, message, stack trace) or else the status message;
  OpenInference's ``input.value`` and ``output.value`` are the step's inputs and result; a
  GenAI span (``_otlp_llm``) is a step of kind ``llm`` with its LLM call.

Rows merge by ``_rows``'s one rule, so spans in any order, children before their root or twice,
converge; a run whose root never comes stays ``running`` until the abandonment check marks it.
A span that cannot be stored (bad ids, an empty or over-long name, an end before its start, a
token count out of range) is refused alone and counted in the answer's ``partial_success``; the
rest of the request is stored. Texts are scrubbed (``_scrub``) and made NUL-free as ours are.
"""

from __future__ import annotations

import base64
import functools
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pipelens.events import MAX_KEY_BYTES, MAX_NAME_BYTES, MAX_PIPELINE_BYTES
from pipelens_server._errors import BodyTooLargeError, InvalidBatchError, UnsupportedMediaTypeError
from pipelens_server._ingest._checks import ESCAPED_NUL, MAX_BIGINT, json_value, without_nul
from pipelens_server._ingest._decode import clean_json_text, media_type
from pipelens_server._ingest._otlp_llm import (
    TokenCountError,
    is_llm_span,
    is_llm_text_event,
    llm_call,
    without_llm_texts,
)
from pipelens_server._ingest._otlp_paths import fill_paths
from pipelens_server._ingest._rows import Rows, run_row
from pipelens_server._ingest._scrub import may_hold_secret, scrub_json, scrub_text

#: The attribute that carries a step's own key, when a PipeLens client exported the span.
KEY_ATTRIBUTE = "pipelens.step.key"
#: The attribute that carries a step's own status (PipeLens's export writes it): read for
#: ``cancelled``, which OTLP's status cannot say.
STATUS_ATTRIBUTE = "pipelens.status"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_ERROR = Status.STATUS_CODE_ERROR
_UNSET = Status.STATUS_CODE_UNSET
_KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: "unspecified",
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}
#: How many refused spans the answer's ``error_message`` describes (the count says the rest).
_REASONS_SHOWN = 3
_NO_SPAN = bytes(8)
#: OpenInference's attributes that are a step's inputs and result, not records too.
_CAPTURED = frozenset({"input.value", "input.mime_type", "output.value", "output.mime_type"})
_encode = msgspec.json.encode


class _RefusedSpanError(Exception):
    """A span that cannot be stored; the message says why."""


@dataclass(slots=True)
class Outcome:
    """What a request made: its rows, and the spans refused (how many, and why)."""

    rows: Rows
    spans: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def error_message(self) -> str:
        """The ``partial_success.error_message``: the first refused spans and why."""
        shown = "; ".join(self.reasons)
        more = self.rejected - len(self.reasons)
        tail = f"; and {more} more" if more > 0 else ""
        return f"{self.rejected} of {self.spans} spans refused: {shown}{tail}"


def check_media_type(content_type: str | None) -> bool:
    """Whether the body is JSON (``True``) or protobuf (``False``); a 415 on anything else."""
    kind = media_type(content_type)
    if kind == PROTOBUF:
        return False
    if kind == JSON:
        return True
    raise UnsupportedMediaTypeError(
        f"Content-Type {content_type or '(none)'!r} is not supported: send OTLP as "
        f"{PROTOBUF} or {JSON}"
    )


def check_encoding(content_encoding: str | None) -> bool:
    """Whether the body is gzip-compressed; a 415 on an encoding other than gzip."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return False
    if encoding == "gzip":
        return True
    raise UnsupportedMediaTypeError(
        f"Content-Encoding {content_encoding!r} is not supported: send gzip or no encoding"
    )


def gunzip(body: bytes, limit: int) -> bytes:
    """``body`` decompressed, refused (413) past ``limit`` bytes without inflating further."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidBatchError(f"invalid gzip body: {exc} - at `$`") from None
    if len(data) > limit:
        raise BodyTooLargeError(
            f"the decompressed body is larger than the server's limit of {limit} bytes: "
            "send fewer spans per request"
        )
    if not inflater.eof:
        raise InvalidBatchError("invalid gzip body: the gzip stream is cut short - at `$`")
    return data


def decode_request(body: bytes, is_json: bool) -> ExportTraceServiceRequest:
    """The request message; a 400 saying what does not decode."""
    message = ExportTraceServiceRequest()
    if not is_json:
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise InvalidBatchError(
                f"invalid OTLP protobuf: {exc}: send an ExportTraceServiceRequest - at `$`"
            ) from None
        return message
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidBatchError(f"invalid OTLP JSON: {exc} - at `$`") from None
    if not isinstance(document, dict):
        raise InvalidBatchError(
            "invalid OTLP JSON: the body must be an object (an ExportTraceServiceRequest) - at `$`"
        )
    _ids_to_base64(document)
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    # The parser raises its own error for most bad values, and Python's for a scalar where it
    # expects an object or a list.
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidBatchError(f"invalid OTLP JSON: {exc} - at `$`") from None
    return message


def _ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP's JSON writes trace and span ids in hex where protobuf's JSON mapping (which
    ``json_format`` reads) has base64: rewrite them in place; a 400 naming a bad one."""
    for r, resource in enumerate(_list(document.get("resourceSpans"))):
        for s, scope in enumerate(_list(_get(resource, "scopeSpans"))):
            for i, span in enumerate(_list(_get(scope, "spans"))):
                where = f"$.resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                _hex_fields(span, where)
                for j, link in enumerate(_list(_get(span, "links"))):
                    _hex_fields(link, f"{where}.links[{j}]")


def _hex_fields(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        return
    for name in ("traceId", "spanId", "parentSpanId"):
        value = item.get(name)
        if not isinstance(value, str):
            continue
        try:
            item[name] = base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            raise InvalidBatchError(
                f"invalid OTLP JSON: {name} {value[:40]!r} is not hex - at `{where}.{name}`"
            ) from None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _get(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else None


def encode_response(outcome: Outcome, is_json: bool) -> bytes:
    """The ``ExportTraceServiceResponse``, in the request's encoding; ``partial_success`` set
    only when spans were refused (as the specification asks)."""
    response = ExportTraceServiceResponse()
    if outcome.rejected:
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(
                rejected_spans=outcome.rejected, error_message=outcome.error_message()
            )
        )
    if is_json:
        text: str = json_format.MessageToJson(response, indent=None)
        return text.encode()
    data: bytes = response.SerializeToString()
    return data


def request_rows(message: ExportTraceServiceRequest) -> Outcome:
    """Every span of the request as partial rows, the spans that cannot be stored refused."""
    outcome = Outcome(Rows())
    spans: list[_SpanRows] = []
    for resource_spans in message.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            run_attributes: list[str | None] = []  # computed once, for the scope's first root
            for span in scope_spans.spans:
                outcome.spans += 1
                try:
                    rows = _span_rows(span, scope)
                except _RefusedSpanError as exc:
                    outcome.rejected += 1
                    if len(outcome.reasons) < _REASONS_SHOWN:
                        label = without_nul(span.name[:60])
                        outcome.reasons.append(f"span {label!r} ({span.span_id.hex()}): {exc}")
                    continue
                if rows.root:
                    if not run_attributes:
                        run_attributes.append(_run_attributes(resource, scope))
                    rows.run_attributes = run_attributes[0]
                spans.append(rows)
    # One look for secrets over the whole request: most requests hold none, and then no span
    # needs a look of its own.
    scrub = may_hold_secret(*[text for rows in spans for text in rows.texts])
    for rows in spans:
        _store(outcome.rows, rows, scrub)
    fill_paths(outcome.rows)
    outcome.rows.events = outcome.spans - outcome.rejected
    return outcome


def attributes_of(pairs: Any) -> dict[str, Any]:
    """OTLP key-value pairs as a dict of JSON values (bytes as base64 text, as OTLP's JSON
    mapping writes them; a later duplicate key wins)."""
    out = {}
    for pair in pairs:
        value = pair.value
        kind = value.WhichOneof("value")
        # Most values are strings: read without a call.
        out[pair.key] = value.string_value if kind == "string_value" else _value(value, kind)
    return out


def _value(value: AnyValue, kind: str | None) -> Any:
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value  # NaN and infinities are JSON null
    if kind == "array_value":
        return [_value(item, item.WhichOneof("value")) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


@functools.lru_cache(maxsize=4096)
def _run_id(trace_id: bytes) -> str:
    """The run id of a trace (remembered: a request holds many spans of few traces)."""
    if len(trace_id) != 16 or not any(trace_id):
        raise _RefusedSpanError(
            f"trace_id must be 16 bytes, not all zero (got {len(trace_id)} bytes)"
        )
    h = trace_id.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _ids(span: Span) -> tuple[str, str, str | None]:
    span_id, parent = span.span_id, span.parent_span_id
    run_id = _run_id(span.trace_id)
    if len(span_id) != 8 or span_id == _NO_SPAN:
        raise _RefusedSpanError(f"span_id must be 8 bytes, not all zero (got {len(span_id)} bytes)")
    if not parent or parent == _NO_SPAN:
        return run_id, span_id.hex(), None
    if len(parent) != 8:
        raise _RefusedSpanError(
            f"parent_span_id must be 8 bytes or empty (got {len(parent)} bytes)"
        )
    return run_id, span_id.hex(), parent.hex()


def _name(span: Span, root: bool) -> str:
    name = without_nul(span.name)
    if not name:
        raise _RefusedSpanError("name must not be empty")
    limit = MAX_PIPELINE_BYTES if root else MAX_NAME_BYTES
    if len(name) * 4 > limit and (size := len(name.encode("utf-8", "replace"))) > limit:
        what = "a root span's name (its run's pipeline)" if root else "name"
        raise _RefusedSpanError(
            f"{what} is {size} bytes long, longer than the limit of {limit} bytes"
        )
    return name


def _key(attributes: dict[str, Any], name: str, step_id: str, root: bool) -> str:
    """The step's key: the one a PipeLens client's export names (``pipelens.step.key``), else
    the root's name, or ``name___<span id>`` below it."""
    key = attributes.get(KEY_ATTRIBUTE)
    if key is None:
        return name if root else f"{name}___{step_id}"
    if not isinstance(key, str) or not key:
        raise _RefusedSpanError(f"attribute {KEY_ATTRIBUTE} must be a step key (a text)")
    key = without_nul(key)
    if len(key) * 4 > MAX_KEY_BYTES and (size := len(key.encode("utf-8", "replace"))) > (
        MAX_KEY_BYTES
    ):
        raise _RefusedSpanError(
            f"attribute {KEY_ATTRIBUTE} is {size} bytes long, longer than the limit of "
            f"{MAX_KEY_BYTES} bytes"
        )
    return key


def _times(span: Span) -> tuple[int, int]:
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start > MAX_BIGINT or end > MAX_BIGINT:
        raise _RefusedSpanError(f"a time past {MAX_BIGINT} ns since the epoch")
    if end < start:
        raise _RefusedSpanError(f"end_time_unix_nano {end} is before start_time_unix_nano {start}")
    return start, end


@dataclass(slots=True)
class _SpanRows:
    """A span's step row (its texts not yet scrubbed nor cleaned) and whether it is a root."""

    step: list[Any]
    root: bool
    #: The row's texts that may hold a secret (records first, then those that are not None).
    texts: list[str]
    run_attributes: str | None = None


#: Where a step row holds its texts.
_INPUTS, _RESULT, _RECORDS, _ERROR_TYPE, _ERROR_MESSAGE, _ERROR_TRACEBACK, _LLM = range(10, 17)


def _span_rows(span: Span, scope: str) -> _SpanRows:
    run_id, step_id, parent_id = _ids(span)
    root = parent_id is None
    name = _name(span, root)
    start, end = _times(span)
    attributes = attributes_of(span.attributes)
    events = (
        [(event.name, attributes_of(event.attributes)) for event in span.events]
        if len(span.events)
        else []
    )
    llm = None
    if is_llm_span(attributes):
        try:
            llm = _encode(llm_call(attributes, events, end - start)).decode()
        except TokenCountError as exc:
            raise _RefusedSpanError(str(exc)) from None
    inputs = _captured(attributes.get("input.value"), attributes.get("input.mime_type"))
    result = _captured(attributes.get("output.value"), attributes.get("output.mime_type"))
    kept = attributes if llm is None else without_llm_texts(attributes)
    if inputs is not None or result is not None:  # stored as the step's inputs and result
        kept = {k: v for k, v in kept.items() if k not in _CAPTURED}
    records: dict[str, Any] = {**kept, "otel.span_kind": _KINDS.get(span.kind, "unspecified")}
    if scope:
        records["otel.scope"] = scope
    span_status = span.status  # each read of a message field makes an object: read once
    status_message = span_status.message
    if status_message:
        records["otel.status_message"] = status_message
    if events:
        records["otel.events"] = [
            {"name": name_, "time_unix_nano": event.time_unix_nano, "attributes": attrs}
            for (name_, attrs), event in zip(events, span.events, strict=True)
            if llm is None or not is_llm_text_event(name_)
        ]
    status = _status(span_status.code, attributes)
    error_type = error_message = error_traceback = None
    if status != "completed":
        error_type, error_message, error_traceback = _error(
            status_message, events, status == "failed"
        )
    records_text = _encode(records).decode()
    step = [
        run_id,
        _key(attributes, name, step_id, root),
        step_id,
        parent_id,
        name,
        "step" if llm is None else "llm",
        status,
        start,
        end,
        end - start,
        inputs,
        result,
        records_text,
        error_type,
        error_message,
        error_traceback,
        llm,
        None,  # the path: ``fill_paths``
    ]
    texts = [records_text]
    if inputs is not None or result is not None or llm is not None or error_type is not None:
        texts += [t for t in (inputs, result, llm, error_type, error_message, error_traceback) if t]
    return _SpanRows(step, root, texts)


def _store(rows: Rows, span: _SpanRows, scrub: bool) -> None:
    """Add a span's rows, its texts scrubbed (when the request may hold a secret) and cleaned."""
    step = span.step
    inputs, result, records, llm = step[_INPUTS], step[_RESULT], step[_RECORDS], step[_LLM]
    message, traceback = step[_ERROR_MESSAGE], step[_ERROR_TRACEBACK]
    if scrub and may_hold_secret(records, inputs, result, llm, message, traceback):
        records = scrub_json(records)
        inputs = None if inputs is None else scrub_json(inputs)
        result = None if result is None else scrub_json(result)
        llm = None if llm is None else scrub_json(llm)
        step[_ERROR_MESSAGE] = message = None if message is None else scrub_text(message)
        step[_ERROR_TRACEBACK] = traceback = None if traceback is None else scrub_text(traceback)
    step[_INPUTS] = None if inputs is None else clean_json_text(inputs)
    step[_RESULT] = None if result is None else clean_json_text(result)
    # Never an empty object (it has the span kind): only a NUL needs cleaning.
    step[_RECORDS] = clean_json_text(records) if ESCAPED_NUL in records else records
    step[_LLM] = None if llm is None else clean_json_text(llm)
    rows.add_step(step)
    if span.root:
        start, end = step[7], step[8]
        rows.add_run(
            run_row(
                run_id=step[0],
                pipeline=step[4],
                status=step[6],
                start_ns=start,
                end_ns=end,
                duration_ns=end - start,
                error_type=step[_ERROR_TYPE],
                error_message=message,
                error_traceback=traceback,
                attributes=span.run_attributes,
            )
        )


def _status(code: int, attributes: dict[str, Any]) -> str:
    """The step's status: ``failed`` for status ``ERROR``; ``cancelled`` when the status is
    unset and ``pipelens.status`` says so (OTLP has no cancelled status, and a span whose
    status is ``OK`` was declared a success); else ``completed``."""
    if code == _ERROR:
        return "failed"
    if code == _UNSET and attributes.get(STATUS_ATTRIBUTE) == "cancelled":
        return "cancelled"
    return "completed"


def _error(
    status_message: str, events: list[tuple[str, dict[str, Any]]], failed: bool
) -> tuple[str | None, str | None, str | None]:
    """A failed or cancelled span's error: its last ``exception`` event, else (failed only)
    its status message."""
    for event_name, attrs in reversed(events):
        if event_name == "exception":
            type_ = attrs.get("exception.type")
            message = attrs.get("exception.message", status_message)
            trace = attrs.get("exception.stacktrace")
            return (
                without_nul(str(type_ or "Exception")),
                without_nul(str(message or "")),
                None if trace is None else without_nul(str(trace)),
            )
    if not failed:
        return None, None, None
    return "Error", without_nul(status_message), None


def _captured(value: Any, mime_type: Any) -> str | None:
    """OpenInference's ``input.value``/``output.value`` as JSON text: the JSON it holds when
    its mime type says JSON (and it is), else the text itself."""
    if value is None:
        return None
    if isinstance(value, str) and mime_type == JSON:
        try:
            return json_value(value, 0, "value")[1]
        except InvalidBatchError:
            pass
    return _encode(value).decode()


def _run_attributes(resource: dict[str, Any], scope: str) -> str | None:
    """A run's attributes (text values, as ``RunStarted.attributes``): the root span's resource
    (``service.name`` among them) and its instrumentation scope."""
    attributes = {k: v if isinstance(v, str) else _encode(v).decode() for k, v in resource.items()}
    if scope:
        attributes["otel.scope"] = scope
    if not attributes:
        return None
    return clean_json_text(scrub_json(_encode(attributes).decode()))

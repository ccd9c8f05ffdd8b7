"""OTLP/HTTP trace ingest: ``POST /v1/traces``, where an OpenTelemetry exporter's traces
endpoint points (``OTLPSpanExporter(endpoint="http://host:port/v1/traces")``).

Outside ``/api`` because that is OTLP's path, with the same token guard, body limit, back-pressure
and one-transaction store as ``POST /api/v1/events``. The answer is OTLP's: an
``ExportTraceServiceResponse`` in the request's encoding (its ``partial_success`` counting the
spans refused), and an error as a ``google.rpc.Status`` when the request was protobuf (as the
specification asks; a JSON request gets our JSON error body, which says the same and where).
"""

from __future__ import annotations

from typing import Any

from google.rpc.status_pb2 import Status
from litestar import Request, Response, post

from pipelens_server._api._auth import require_token
from pipelens_server._db._lifespan import PoolDep, SettingsDep
from pipelens_server._errors import UnsupportedMediaTypeError
from pipelens_server._ingest import _otlp
from pipelens_server._ingest._rows import Rows
from pipelens_server._ingest._store import LimiterDep, ingest

PATH = "/v1/traces"
#: gRPC's codes for the HTTP statuses an OTLP route answers (a ``google.rpc.Status`` carries one).
_GRPC_CODES = {400: 3, 401: 16, 404: 5, 413: 8, 415: 3, 429: 8, 503: 14}


@post(PATH, status_code=200, guards=[require_token], security=[{"token": []}])
async def post_traces(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    limiter: LimiterDep,
    settings: SettingsDep,
) -> Response[bytes]:
    """Store the spans of an OTLP ``ExportTraceServiceRequest`` as runs and steps."""
    is_json = _otlp.check_media_type(request.headers.get("content-type"))  # 415 first
    gzipped = _otlp.check_encoding(request.headers.get("content-encoding"))
    limit = settings.max_body_bytes

    def to_rows(body: bytes) -> tuple[Rows, bytes]:
        if gzipped:
            body = _otlp.gunzip(body, limit)
        outcome = _otlp.request_rows(_otlp.decode_request(body, is_json))
        return outcome.rows, _otlp.encode_response(outcome, is_json)

    answer = await ingest(request, pool, limiter, settings, to_rows)
    return Response(answer, media_type=_otlp.JSON if is_json else _otlp.PROTOBUF)


def otlp_error(
    request: Request[Any, Any, Any], status_code: int, detail: str, headers: dict[str, str] | None
) -> Response[bytes] | None:
    """The error answer of a protobuf OTLP request (a ``google.rpc.Status``), else ``None``."""
    if request.scope.get("path") != PATH:
        return None
    try:
        is_json = _otlp.check_media_type(request.headers.get("content-type"))
    except UnsupportedMediaTypeError:  # a 415 itself: answered like any JSON route
        return None
    if is_json:
        return None
    status = Status(code=_GRPC_CODES.get(status_code, 2), message=detail)
    return Response(
        status.SerializeToString(),
        status_code=status_code,
        media_type=_otlp.PROTOBUF,
        headers=headers,
    )


route_handlers = [post_traces]

"""The OpenAPI document made true where Litestar cannot see: the ingest bodies (our handlers read
the raw body, to decode msgpack or JSON themselves), every error status a route can answer, and
the login form (an HTML page, the one page an API client needs).

:class:`TrueJsonRenderPlugin` completes the document as it is served at ``/schema/openapi.json``.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin

from pipelens.events import Batch
from pipelens_server._ingest._scores import ScoreIn
from pipelens_server._ingest._seed import PipelineFinish, PipelineMeta, PipelineOp, StepBody, StepOp

_REF = "#/components/schemas/{name}"
_JSON = "application/json"
_MSGPACK = "application/msgpack"
_HTML = "text/html"

#: Each POST's body: its media types and its type.
_BODIES: dict[str, tuple[tuple[str, ...], Any, str]] = {
    "/api/v1/events": ((_MSGPACK, _JSON), Batch, "a batch of wire events (pipelens.events)"),
    "/api/ingestion/pipeline/start": ((_JSON,), PipelineMeta, "the seed's PipelineMeta"),
    "/api/ingestion/pipeline/finish": ((_JSON,), PipelineFinish, "the seed's pipeline finish"),
    "/api/ingestion/step/start": ((_JSON,), StepBody, "the seed's step start"),
    "/api/ingestion/step/finish": ((_JSON,), StepBody, "the seed's step end"),
    "/api/ingestion/batch": ((_JSON,), list[PipelineOp | StepOp], "the seed's operations"),
    "/api/v1/runs/{run_id}/scores": ((_JSON,), ScoreIn, "a score: name, value, comment, ..."),
}

#: Error statuses by the kind of route that answers them, with why.
_API_ERRORS = {
    "400": "A parameter or the body is invalid: `detail` says what, `path` where.",
    "401": "The server has a token and the request does not carry it as a bearer token.",
    "404": "No such run, pipeline or step.",
    "429": "The database is busy: retry after `Retry-After` seconds.",
    "503": "The database is unavailable: retry after `Retry-After` seconds.",
}
_INGEST_ERRORS = {
    "413": "The body is larger than the server's limit: send smaller batches.",
    "415": "The Content-Type is not one the endpoint reads.",
}
#: The seed's one-run requests answer a reused run id with 409 (``/api/v1/events`` stores the
#: rest of its batch and lists the run under ``refused``; OTLP trace ids are the runs' own).
_SEED_RUN_REUSED = {
    "409": "A run under the id of a stored run that started at another time: nothing of the "
    "body was stored; give each run its own run id.",
}
#: OTLP/HTTP trace ingest (``_otlp``): bodies are the OpenTelemetry project's protobuf messages.
_OTLP_PATH = "/v1/traces"
_PROTOBUF = "application/x-protobuf"
_BINARY = {"type": "string", "format": "binary"}
_OTLP_BODY = {
    "description": "an OTLP ExportTraceServiceRequest: protobuf, or OTLP's JSON mapping (hex ids); "
    "Content-Encoding gzip or none",
    "required": True,
    "content": {_PROTOBUF: {"schema": _BINARY}, _JSON: {"schema": {"type": "object"}}},
}
_OTLP_OK = {
    "description": "Stored: an ExportTraceServiceResponse in the request's encoding, its "
    "partial_success counting the spans refused (and why) when there were any.",
    "content": {_PROTOBUF: {"schema": _BINARY}, _JSON: {"schema": {"type": "object"}}},
}
_OTLP_ERRORS = {
    "400": "The body does not decode as OTLP: `detail` (or the Status message) says what.",
    "401": "The server has a token and the request does not carry it as a bearer token.",
    "429": "The database is busy: retry after `Retry-After` seconds.",
    "503": "The database is unavailable: retry after `Retry-After` seconds.",
    **_INGEST_ERRORS,
}


class TrueJsonRenderPlugin(JsonRenderPlugin):
    """Litestar's JSON rendering of the document, completed by :func:`complete`."""

    def __init__(self, error_type: type[msgspec.Struct], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._error_type = error_type

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The document as JSON, with the bodies and errors Litestar does not know of."""
        return self.render_json(request, complete(openapi_schema, self._error_type))


@functools.cache
def _components(error_type: type[msgspec.Struct]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    types = [body for _, body, _ in _BODIES.values()]
    schemas, components = msgspec.json.schema_components([*types, error_type], ref_template=_REF)
    return list(schemas), components


def complete(document: dict[str, Any], error_type: type[msgspec.Struct]) -> dict[str, Any]:
    """``document`` with the ingest bodies, the error answers and the login page added."""
    document = copy.deepcopy(document)
    schemas, components = _components(error_type)
    document.setdefault("components", {}).setdefault("schemas", {}).update(components)
    error = {"description": "", "content": {_JSON: {"schema": schemas[-1]}}}
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if path == _OTLP_PATH and method == "post":
                _complete_otlp(operation, schemas[-1])
                continue
            errors = dict(_API_ERRORS) if path.startswith("/api/") else {}
            if method == "post" and path in _BODIES:
                media, _, what = _BODIES[path]
                schema = schemas[list(_BODIES).index(path)]
                operation["requestBody"] = {
                    "description": what,
                    "required": True,
                    "content": {m: {"schema": schema} for m in media},
                }
                errors |= _INGEST_ERRORS
                if path.startswith("/api/ingestion/"):
                    errors |= _SEED_RUN_REUSED
            for status, why in errors.items():
                operation["responses"][status] = error | {"description": why}
    document["paths"]["/login"] = _login()
    document["paths"]["/logout"] = {
        "post": {
            "summary": "Log out: the session cookie is dropped",
            "operationId": "Logout",
            "requestBody": {
                "content": {"application/x-www-form-urlencoded": {"schema": _CSRF_FORM}},
            },
            "responses": {
                "303": {"description": "Logged out: on to the login page."},
                "403": {
                    "description": "No or a wrong CSRF token, or a write from another site (HTML).",
                    "content": {_HTML: {"schema": {"type": "string"}}},
                },
            },
        }
    }
    completed: dict[str, Any] = _any_or_null(document)
    return completed


def _complete_otlp(operation: dict[str, Any], error_schema: dict[str, Any]) -> None:
    """``POST /v1/traces``: OTLP bodies, and errors as a ``google.rpc.Status`` (protobuf) or
    our JSON error body, as the request was encoded."""
    operation["requestBody"] = _OTLP_BODY
    operation["responses"] = {"200": _OTLP_OK}
    content = {_JSON: {"schema": error_schema}, _PROTOBUF: {"schema": _BINARY}}
    for status, why in _OTLP_ERRORS.items():
        operation["responses"][status] = {"description": why, "content": content}


def _any_or_null(node: Any) -> Any:
    """Litestar writes ``msgspec.Raw | None`` (stored JSON, null included) as ``oneOf: [{},
    {type: null}]``, which no null matches (it matches both): any JSON value is ``{}``."""
    if isinstance(node, dict):
        one_of = node.get("oneOf")
        if isinstance(one_of, list) and {} in one_of:
            return {k: v for k, v in node.items() if k != "oneOf"}
        return {k: _any_or_null(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_any_or_null(item) for item in node]
    return node


#: The form of a dashboard POST: the CSRF token its page gave.
_CSRF_FORM = {"type": "object", "properties": {"csrf_token": {"type": "string"}}}


def _login() -> dict[str, Any]:
    page = {
        "description": "The login page (HTML).",
        "content": {_HTML: {"schema": {"type": "string"}}},
    }
    form = {
        "type": "object",
        "properties": {
            "token": {"type": "string"},
            "next": {"type": "string"},
            "csrf_token": {"type": "string"},
        },
        "required": ["token"],
    }
    return {
        "get": {
            "summary": "The login form (HTML) that sets the session cookie the pages need",
            "operationId": "LoginForm",
            "responses": {"200": page},
        },
        "post": {
            "summary": "Log in with the server's token: a session cookie and a redirect",
            "operationId": "Login",
            "requestBody": {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": form}},
            },
            "responses": {
                "303": {"description": "Logged in (or no token needed): on to `next`."},
                "400": page | {"description": "A form that is not one (HTML)."},
                "401": page | {"description": "A wrong token: the form again (HTML)."},
                "403": page
                | {"description": "No or a wrong CSRF token, or a write from another site (HTML)."},
                "413": page | {"description": "A form larger than the body limit (HTML)."},
                "429": page | {"description": "Too many failed logins: wait `Retry-After` (HTML)."},
            },
        },
    }

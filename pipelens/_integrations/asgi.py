"""One run per HTTP request of any ASGI app: the pure ASGI middleware and its shared pieces.

No web framework is imported here: ``pipelens.fastapi`` and ``pipelens.litestar`` (which do)
build on these pieces. Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``: the app runs
in the middleware's own task, so the step it makes current is the one the handler sees.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from contextvars import Token
from typing import Any

from pipelens._core import containment
from pipelens._core.context import current_step_var
from pipelens._core.errors import ConfigurationError
from pipelens._core.step import Step, sanitize_name
from pipelens._integrations.who import RequestWho
from pipelens._otel.remote import open_from_headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The request's root step, in the ASGI scope: whoever opens the run first (the middleware or a
#: dependency) puts it there, and a second opener hands it out instead of opening another run.
SCOPE_KEY = "pipelens.root"
UNMATCHED = "<no route>"


def check_pipeline(pipeline: object) -> None:
    """Refuse a pipeline name that is neither ``None`` nor a non-empty string."""
    if pipeline is not None and (not isinstance(pipeline, str) or not pipeline):
        raise ConfigurationError(
            f"pipeline must be a non-empty string or None (to name runs after the route), "
            f"got {pipeline!r}"
        )


def open_request_run(
    scope: Scope, pipeline: str | None, route: str | None
) -> tuple[Step, Token[Any]]:
    """Open the request's run, record what is known before the handler, and make it current.

    A request whose W3C ``traceparent`` names a PipeLens step continues that step's run (the
    caller's ``auto_patch(httpx)``, or ``propagation_headers()``), nesting under it; a foreign
    ``traceparent`` is followed as :mod:`pipelens._otel.remote` says.
    """
    method = str(scope.get("method", ""))
    name = pipeline if pipeline is not None else f"{method} {route or UNMATCHED}"
    root = open_from_headers(scope.get("headers") or (), sanitize_name(name))
    root.record("http.method", method)
    root.record("http.path", scope.get("path"))
    if route is not None:
        root.record("http.route", route)
    scope[SCOPE_KEY] = root
    return root, current_step_var.set(root)


def identify_request(who: RequestWho, root: Step, scope: Scope, request: object) -> None:
    """Set the request's run's user, session and tags as ``who`` says (never raises)."""
    try:
        who.apply(root.run, scope.get("headers") or (), request)
    except Exception as exc:
        containment.internal_error("asgi.identify", exc)


def close_request_run(root: Step, token: Token[Any], exc: BaseException | None) -> None:
    """End the request's run (failed when ``exc`` is given) and restore the previous step."""
    try:
        current_step_var.reset(token)
    except ValueError:  # ended in another context than it was opened in
        current_step_var.set(None)
    if exc is None:
        root._succeed(None, False)
    else:
        root._fail(exc)


class HTTPServerError(Exception):
    """What a run failed with when the app answered 5xx after handling the error itself."""

    def __init__(self, status: int) -> None:
        super().__init__(
            f"the app answered HTTP {status} (it handled the error: its own logs have the cause)"
        )
        self.status_code = status


# Stored as the run's error type (module + qualname): a public spelling that moves of this
# module do not change (a test pins it).
HTTPServerError.__module__ = "pipelens"


def _is_5xx(status: object) -> bool:
    return isinstance(status, int) and status >= 500


def http_status(exc: BaseException) -> int:
    """The status an exception stands for: its ``status_code`` (the frameworks' HTTP errors
    carry one), else 500."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and 100 <= status <= 599 else 500


def end_with_exception(root: Step, token: Token[Any], exc: BaseException, status: int) -> None:
    """An HTTP error below 500 is an answer (the run completed); anything else failed it."""
    root.record("http.status_code", status)
    close_request_run(root, token, exc if status >= 500 else None)


def route_template(scope: Scope) -> str | None:
    """The path template of the route serving ``scope`` (``/items/{item_id}``), if known.

    Litestar routes before its middleware and says so in the scope. Starlette routes after
    middleware, so its routes are asked, as routing will ask them (as the OpenTelemetry
    Starlette instrumentation does); a mounted app gives its mount path.
    """
    template = scope.get("path_template")
    if isinstance(template, str) and template:
        return template
    router = getattr(scope.get("app"), "router", None)
    partial: str | None = None
    for route in getattr(router, "routes", ()):
        matches = getattr(route, "matches", None)
        if matches is None:
            continue
        match = getattr(matches(scope)[0], "name", None)
        if match == "FULL":
            return str(route.path)
        if match == "PARTIAL" and partial is None:  # e.g. the wrong method: 405
            partial = str(route.path)
    return partial


class PipelensMiddleware:
    """Pure ASGI middleware making every HTTP request one run.

    Args:
        app: the ASGI app to wrap.
        pipeline: the runs' pipeline name; ``None`` names each after its method and route
            (``"GET /items/{item_id}"``).
        user_id_header: a request header naming the run's user (``"X-User"``); absent or empty,
            the run has none.
        session_id_header: a request header naming the run's session (``"X-Session"``).
        tags: tags of every request's run (``["api"]``).
        identify: called with the ASGI scope of each request (its headers, path, ``state``, the
            ``user`` an authentication middleware before this one set), answering ``None`` or a
            dict of any of ``user_id``, ``session_id``, ``tags``, ``metadata``, as
            :func:`pipelens.set_run` takes them. Its values win over the headers'. A wrong answer
            or an exception is logged once; the request goes on.

    Raises:
        ConfigurationError: an option is invalid (the message names it).
    """

    def __init__(
        self,
        app: ASGIApp,
        pipeline: str | None = None,
        *,
        user_id_header: str | None = None,
        session_id_header: str | None = None,
        tags: Iterable[str] = (),
        identify: Callable[[Scope], Mapping[str, Any] | None] | None = None,
    ) -> None:
        check_pipeline(pipeline)
        self.app = app
        self.pipeline = pipeline
        self.who = RequestWho(
            type(self).__name__, user_id_header, session_id_header, tags, identify
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or SCOPE_KEY in scope:
            await self.app(scope, receive, send)
            return
        try:
            root, token = open_request_run(scope, self.pipeline, route_template(scope))
        except Exception as exc:
            containment.internal_error("asgi.middleware.open", exc)
            await self.app(scope, receive, send)
            return
        if self.who:
            identify_request(self.who, root, scope, scope)
        # [status sent, response finished]: what the wrappers below saw.
        state: list[Any] = [None, False]

        async def send_and_watch(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                state[0] = message["status"]
                root.record("http.status_code", message["status"])
            elif kind == "http.response.body" and not message.get("more_body", False):
                state[1] = True
            await send(message)

        async def receive_and_watch() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not state[1]:
                root.record("http.client_disconnected", True)
            return message

        try:
            await self.app(scope, receive_and_watch, send_and_watch)
        except BaseException as exc:
            if state[0] is None and isinstance(exc, Exception):
                end_with_exception(root, token, exc, http_status(exc))
            else:  # cancelled, or failed after the status was sent (mid-stream)
                close_request_run(root, token, exc)
            raise
        sent = state[0]
        close_request_run(root, token, HTTPServerError(sent) if _is_5xx(sent) else None)

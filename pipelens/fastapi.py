"""FastAPI: one run per request, as a dependency or as (pure ASGI) middleware.

The dependency, for the routes you choose::

    import pipelens.fastapi
    from fastapi import Depends, FastAPI

    app = FastAPI()

    @app.post("/ask", dependencies=[Depends(pipelens.fastapi.run("qa"))])
    async def ask(question: str) -> str:
        return await answer(question)  # every @step inside nests under the request's run

The middleware, for every route::

    app.add_middleware(pipelens.fastapi.PipelensMiddleware)  # runs named "GET /items/{id}"

Either way the run's root step records ``http.method``, ``http.path``, ``http.route`` and
``http.status_code``; sync handlers and dependencies (run in a worker thread), background tasks
and the body of a ``StreamingResponse`` all nest in the request's run, which ends when the
response is finished (the stream exhausted or the client gone; the middleware then records
``http.client_disconnected``). With both, the middleware opens the run and the dependency hands
it out. An HTTP error below 500 (``HTTPException(404)``, a validation error) ends the run
completed with its status; an unhandled exception or a 5xx response ends it failed.

A dependency cannot see a response the handler builds itself (``return JSONResponse(...,
status_code=201)``): it records the status FastAPI gives returned data (``response.status_code``
set on the injected ``Response``, else the route's), or the error's. The middleware sees the status
actually sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError

from pipelens._core import containment
from pipelens._core.context import current_step_var
from pipelens._core.step import Run, Step
from pipelens._integrations.asgi import (
    SCOPE_KEY,
    PipelensMiddleware,
    check_pipeline,
    close_request_run,
    end_with_exception,
    http_status,
    identify_request,
    open_request_run,
)
from pipelens._integrations.who import RequestWho

__all__ = ["PipelensMiddleware", "run"]


def run(
    pipeline: str | None = None,
    *,
    user_id_header: str | None = None,
    session_id_header: str | None = None,
    tags: Iterable[str] = (),
    identify: Callable[[Request], Mapping[str, Any] | None] | None = None,
) -> Callable[[Request, Response], AsyncIterator[Run]]:
    """A FastAPI dependency making each request one run: ``Depends(pipelens.fastapi.run("qa"))``.

    Put it in the route's (or the app's) ``dependencies=[...]``, or first among the handler's
    parameters, so that it opens the run before other dependencies call steps. It yields the
    :class:`~pipelens.Run`. An HTTP error below 500 (``HTTPException``, a validation error) ends
    the run completed with its status; any other exception ends it failed, and passes through.

    Args:
        pipeline: the runs' pipeline name; ``None`` names each after its method and route
            (``"POST /ask"``).
        user_id_header: a request header naming the run's user (``"X-User"``); absent or empty,
            the run has none.
        session_id_header: a request header naming the run's session (``"X-Session"``).
        tags: tags of every request's run (``["api"]``).
        identify: called with the :class:`fastapi.Request`, answering ``None`` or a dict of any
            of ``user_id``, ``session_id``, ``tags``, ``metadata`` as :func:`pipelens.set_run`
            takes them (``lambda r: {"user_id": r.state.user.id}``); its values win over the
            headers'. A wrong answer or an exception is logged once; the request goes on.

    Also when the middleware opened the run, these options apply to it.

    Raises:
        ConfigurationError: an option is invalid (the message names it).
    """
    check_pipeline(pipeline)
    who = RequestWho("pipelens.fastapi.run", user_id_header, session_id_header, tags, identify)

    async def pipelens_run(request: Request, response: Response) -> AsyncIterator[Run]:
        scope = request.scope
        opened = scope.get(SCOPE_KEY)
        if isinstance(opened, Step):  # the middleware, or another run() dependency, opened it
            if who:
                identify_request(who, opened, scope, request)
            yield opened.run
            return
        route = scope.get("route")
        try:
            root, token = open_request_run(scope, pipeline, getattr(route, "path", None))
        except Exception as exc:
            containment.internal_error("fastapi.run.open", exc)
            current = current_step_var.get()
            yield None if current is None else current.run  # type: ignore[misc]
            return
        if who:
            identify_request(who, root, scope, request)
        # FastAPI runs a request-scoped dependency's exit after the response is sent: after the
        # whole stream and the background tasks, so the run lasts as long as they do.
        try:
            yield root.run
        except BaseException as exc:
            if not isinstance(exc, Exception):  # cancelled
                close_request_run(root, token, exc)
            elif isinstance(exc, RequestValidationError):
                end_with_exception(root, token, exc, 422)
            else:
                end_with_exception(root, token, exc, http_status(exc))
            raise
        status = response.status_code or getattr(route, "status_code", None) or 200
        root.record("http.status_code", status)
        close_request_run(root, token, None)

    return pipelens_run

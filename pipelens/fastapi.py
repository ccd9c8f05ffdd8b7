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

from collections.abc import AsyncIterator, Callable

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
    open_request_run,
)

__all__ = ["PipelensMiddleware", "run"]


def run(pipeline: str | None = None) -> Callable[[Request, Response], AsyncIterator[Run]]:
    """A FastAPI dependency making each request one run: ``Depends(pipelens.fastapi.run("qa"))``.

    Put it in the route's (or the app's) ``dependencies=[...]``, or first among the handler's
    parameters, so that it opens the run before other dependencies call steps. It yields the
    :class:`~pipelens.Run`. An HTTP error below 500 (``HTTPException``, a validation error) ends
    the run completed with its status; any other exception ends it failed, and passes through.

    Args:
        pipeline: the runs' pipeline name; ``None`` names each after its method and route
            (``"POST /ask"``).
    """
    check_pipeline(pipeline)

    async def pipelens_run(request: Request, response: Response) -> AsyncIterator[Run]:
        scope = request.scope
        opened = scope.get(SCOPE_KEY)
        if isinstance(opened, Step):  # the middleware, or another run() dependency, opened it
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

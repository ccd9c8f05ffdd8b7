"""The one pages Router: every HTML page behind the login (when the server has a token) and the
pages' error answer, declared here once; beside it the login form and the static files."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response, Router
from litestar.exceptions import HTTPException
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from pipelens_server._errors import ServerError
from pipelens_server._pages import _admin, _compare, _llm, _login, _runs, _stats
from pipelens_server._pages._templating import base_context, render, static_dir

log = structlog.get_logger("pipelens_server.pages")


def page_error(request: Request[Any, Any, Any], exc: Exception) -> Response[str]:
    """The pages' errors as a page (the API answers JSON): the message names what is wrong."""
    status_code = exc.status_code if isinstance(exc, ServerError | HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    if status_code >= 500:
        log.error("page failed", path=request.url.path, error=str(exc))
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return error_page(request, status_code, detail, headers)


def error_page(
    request: Request[Any, Any, Any],
    status_code: int,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Response[str]:
    """An error as an HTML page (also for what no page route answers: 404, 405, a bad path)."""
    context = base_context(request, f"Error {status_code}") | {
        "status_code": status_code,
        "detail": detail,
    }
    response = render(request, "error.html", context, status_code=status_code)
    if headers:
        response.headers.update(headers)
    return response


def page_routes() -> list[ControllerRouterHandler]:
    """The pages (behind the login when a token is set), the login form and the static files."""
    pages = Router(
        "/",
        route_handlers=[
            *_runs.route_handlers,
            *_compare.route_handlers,
            *_stats.route_handlers,
            *_llm.route_handlers,
            *_admin.route_handlers,
        ],
        before_request=_login.require_session,
        exception_handlers={ServerError: page_error, HTTPException: page_error},
        include_in_schema=False,
    )
    login = Router(
        "/",
        route_handlers=_login.route_handlers,
        exception_handlers={ServerError: page_error, HTTPException: page_error},
        include_in_schema=False,
    )
    static = create_static_files_router(path="/static", directories=[static_dir()])
    return [pages, login, static]

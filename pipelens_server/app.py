"""``create_app(settings)``: the Litestar app, its routes, dependencies and error answers."""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any

import msgspec
import psycopg
import psycopg_pool
import structlog
from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE
from litestar.types import ASGIApp, Receive, Scope, Send

from pipelens_server._api import _health, _otlp
from pipelens_server._api._openapi import TrueJsonRenderPlugin
from pipelens_server._api._router import api_router
from pipelens_server._db._abandon import abandon_lifespan
from pipelens_server._db._lifespan import database_lifespan, provide_pool, provide_settings
from pipelens_server._db._retention import purge_lifespan
from pipelens_server._db._rollup import rollup_lifespan
from pipelens_server._db._watchdog import require_database
from pipelens_server._errors import (
    DatabaseUnavailableError,
    InvalidBatchError,
    InvalidParameterError,
    OverloadedError,
    ServerError,
    TooManyAttemptsError,
)
from pipelens_server._ingest._store import IngestLimiter, create_staging_tables, provide_limiter
from pipelens_server._logging import configure_logging
from pipelens_server._pages._router import error_page, page_routes
from pipelens_server._pages._sessions import LoginLimiter
from pipelens_server._pages._templating import template_config
from pipelens_server._params import RefuseNul
from pipelens_server._read import _prices
from pipelens_server._security import (
    HostGate,
    add_security_headers,
    decode_path_params,
    refuse_cross_site_writes,
)
from pipelens_server._settings import Settings

log = structlog.get_logger("pipelens_server.app")


class ErrorBody(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Every error answer: Litestar's own shape, plus the path of the bad field when known."""

    status_code: int
    detail: str
    path: str | None = None


#: Paths answered as JSON; everything else is a page (or would be one), answered as HTML.
_JSON_PREFIXES = ("/api/", "/schema", "/v1/")
_JSON_PATHS = frozenset({"/api", "/healthz", "/readyz"})


def _is_page(request: Request[Any, Any, Any]) -> bool:
    path = request.scope.get("path", "")
    return not (path in _JSON_PATHS or path.startswith(_JSON_PREFIXES))


def _error_response(
    request: Request[Any, Any, Any],
    status_code: int,
    detail: str,
    path: str | None = None,
    retry_after_s: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    """An error answer: JSON under ``/api`` (and the other JSON paths), an HTML page elsewhere."""
    if retry_after_s is not None:
        headers = {**(headers or {}), "Retry-After": str(retry_after_s)}
    if status_code == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="pipelens"'}
    if (otlp := _otlp.otlp_error(request, status_code, detail, headers)) is not None:
        return otlp
    if _is_page(request):
        return error_page(request, status_code, detail, headers)
    return Response(
        ErrorBody(status_code=status_code, detail=detail, path=path),
        status_code=status_code,
        headers=headers,
    )


def _server_error(request: Request[Any, Any, Any], exc: ServerError) -> Response[Any]:
    path = exc.path if isinstance(exc, InvalidBatchError) else None
    if isinstance(exc, InvalidParameterError):
        path = exc.parameter
    retry = (
        exc.retry_after_s
        if isinstance(exc, OverloadedError | DatabaseUnavailableError | TooManyAttemptsError)
        else None
    )
    if exc.status_code >= 500:
        log.error("request failed", error=str(exc))
    return _error_response(request, exc.status_code, str(exc), path, retry)


def _pool_exhausted(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    settings: Settings = request.app.state.settings
    return _error_response(
        request,
        429,
        f"the database is busy ({exc}): retry later",
        retry_after_s=settings.retry_after_s,
    )


def _database_down(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    settings: Settings = request.app.state.settings
    log.error("database error", error=str(exc))
    return _error_response(
        request, 503, f"the database is unavailable: {exc}", retry_after_s=settings.retry_after_s
    )


def _unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # Litestar logs unexpected exceptions only in debug mode: a bug must not pass silently.
    log.error("unexpected error", exc_info=exc)
    return _error_response(request, 500, "Internal Server Error")


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    detail = exc.detail
    if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
        settings: Settings = request.app.state.settings
        detail = (
            f"the request body is larger than the server's limit of {settings.max_body_bytes} "
            "bytes: send smaller batches"
        )
    if (otlp := _otlp.otlp_error(request, exc.status_code, detail, exc.headers)) is not None:
        return otlp
    if _is_page(request):
        return error_page(request, exc.status_code, detail, exc.headers)
    return Response(
        ErrorBody(status_code=exc.status_code, detail=detail),
        status_code=exc.status_code,
        headers=exc.headers,
    )


def _openapi_config() -> OpenAPIConfig:
    """The ingest and read API's OpenAPI schema, as JSON at ``/schema`` and
    ``/schema/openapi.json`` (no documentation UI: those load their scripts from a CDN, and the
    server must work offline). The pages are left out of it."""
    return OpenAPIConfig(
        title="PipeLens",
        version=_version(),
        description="Ingest runs and steps, and read them back: runs, pipelines, step statistics.",
        path="/schema",
        # Litestar's document, completed: ingest bodies, error answers, the login page.
        render_plugins=[TrueJsonRenderPlugin(ErrorBody, path=["/", "/openapi.json"])],
        # /api/... needs the server's token (when it has one) as a bearer token.
        components=Components(
            security_schemes={"token": SecurityScheme(type="http", scheme="bearer")}
        ),
    )


def _version() -> str:
    try:
        return importlib.metadata.version("pipelens")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def create_app(settings: Settings | None = None) -> Litestar:
    """The PipeLens server application.

    The database (embedded when ``settings.database_url`` is ``None``), the connection pool and
    the schema migrations are opened in the app's lifespan, not here. Every request passes the
    ``Host`` check and every write the same-origin check of ``_security``; every answer carries
    its security headers.

    Raises:
        ValueError: ``settings.prices_file`` cannot be read or holds a bad price (named).
    """
    settings = Settings() if settings is None else settings
    prices = _prices.Prices(settings.prices_file)  # a bad file: a ValueError naming it, first
    if not structlog.is_configured():
        configure_logging()
    app = Litestar(
        route_handlers=[
            api_router(),
            *_health.route_handlers,
            *_otlp.route_handlers,
            *page_routes(),
        ],
        template_config=template_config(),
        guards=[require_database],  # 503 at once while the embedded database restarts
        lifespan=[
            functools.partial(database_lifespan, configure=create_staging_tables),
            purge_lifespan,  # after the database: the purge uses the pool
            abandon_lifespan,  # likewise
            rollup_lifespan,  # likewise
        ],
        state=State(
            {
                "settings": settings,
                "limiter": IngestLimiter(
                    settings.max_inflight_ingests,
                    settings.retry_after_s,
                    max_queued=settings.ingest_queue,
                    max_wait_s=settings.ingest_wait_s,
                ),
                "login_limiter": LoginLimiter(),
            }
        ),
        dependencies={
            "pool": Provide(provide_pool, sync_to_thread=False),
            "limiter": Provide(provide_limiter, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
        },
        exception_handlers={
            ServerError: _server_error,
            psycopg_pool.PoolTimeout: _pool_exhausted,
            psycopg_pool.TooManyRequests: _pool_exhausted,
            psycopg.OperationalError: _database_down,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        # Outermost first: cross-site writes are refused before anything else; NULs are looked
        # for in the parameters once %2F and the like are decoded.
        middleware=[refuse_cross_site_writes, decode_path_params, RefuseNul()],
        before_send=[add_security_headers],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=_openapi_config(),
    )
    # Before routing: the Host check, and the path routed on (an encoded "/" stays in its segment).
    app.asgi_handler = _PricedWith(HostGate(app.asgi_handler, settings), prices)
    return app


class _PricedWith:
    """The ASGI app around the others: every request is priced with this app's prices."""

    __slots__ = ("app", "prices")

    def __init__(self, app: ASGIApp, prices: _prices.Prices) -> None:
        self.app = app
        self.prices = prices

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with _prices.using(self.prices):
            await self.app(scope, receive, send)

"""Litestar: one run per request, as a plugin or as (pure ASGI) middleware.

::

    import pipelens.litestar
    from litestar import Litestar

    app = Litestar(route_handlers=[...], plugins=[pipelens.litestar.PipelensPlugin()])

or, to give the runs one pipeline name, or to trace only some routers or handlers::

    from litestar.middleware import DefineMiddleware

    app = Litestar(
        route_handlers=[...],
        middleware=[DefineMiddleware(pipelens.litestar.PipelensMiddleware, pipeline="qa")],
    )

Each request's run is named after the pipeline, or its method and route
(``"GET /items/{item_id}"``); its root step records ``http.method``, ``http.path``,
``http.route`` and ``http.status_code``. Every ``@step`` the handler calls — async, or sync in a
worker thread — its background tasks and the body of a streamed response nest in that run.
Litestar runs middleware after routing, so a request matching no route is not a run. An HTTP
error below 500 (``NotFoundException``...) ends the run completed with its status; a 5xx
response fails it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from litestar.config.app import AppConfig
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPluginProtocol
from litestar.types import ASGIApp

from pipelens._integrations.asgi import PipelensMiddleware, check_pipeline

__all__ = ["PipelensMiddleware", "PipelensPlugin"]


class PipelensPlugin(InitPluginProtocol):
    """Adds :class:`PipelensMiddleware` to the app: every request is one run.

    Args:
        pipeline: the runs' pipeline name; ``None`` names each after its method and route.
    """

    def __init__(self, pipeline: str | None = None) -> None:
        check_pipeline(pipeline)
        self.pipeline = pipeline

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Put the middleware first, so that it sees every other middleware's steps too."""
        # Our ASGI types are the plain mappings of the spec, not Litestar's TypedDicts.
        middleware = cast("Callable[..., ASGIApp]", PipelensMiddleware)
        app_config.middleware.insert(0, DefineMiddleware(middleware, pipeline=self.pipeline))
        return app_config

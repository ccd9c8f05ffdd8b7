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

from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from litestar.config.app import AppConfig
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPluginProtocol
from litestar.types import ASGIApp

from pipelens._integrations.asgi import PipelensMiddleware, check_pipeline
from pipelens._integrations.who import RequestWho

__all__ = ["PipelensMiddleware", "PipelensPlugin"]


class PipelensPlugin(InitPluginProtocol):
    """Adds :class:`PipelensMiddleware` to the app: every request is one run.

    Args:
        pipeline: the runs' pipeline name; ``None`` names each after its method and route.
        user_id_header, session_id_header, tags, identify: the run's user, session and tags,
            from the request, as :class:`PipelensMiddleware` takes them (``identify`` is given
            the ASGI scope).

    Raises:
        ConfigurationError: an option is invalid (the message names it).
    """

    def __init__(
        self,
        pipeline: str | None = None,
        *,
        user_id_header: str | None = None,
        session_id_header: str | None = None,
        tags: Iterable[str] = (),
        identify: Callable[[Any], Mapping[str, Any] | None] | None = None,
    ) -> None:
        check_pipeline(pipeline)
        # Checked here, to refuse a bad option at set-up; the middleware gets the checked tags,
        # since the check has used up an iterator given as tags.
        who = RequestWho("PipelensPlugin", user_id_header, session_id_header, tags, identify)
        self.pipeline = pipeline
        self.options: dict[str, Any] = {
            "user_id_header": user_id_header,
            "session_id_header": session_id_header,
            "tags": who.tags,
            "identify": identify,
        }

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Put the middleware first, so that it sees every other middleware's steps too."""
        # Our ASGI types are the plain mappings of the spec, not Litestar's TypedDicts.
        middleware = cast("Callable[..., ASGIApp]", PipelensMiddleware)
        app_config.middleware.insert(
            0, DefineMiddleware(middleware, pipeline=self.pipeline, **self.options)
        )
        return app_config

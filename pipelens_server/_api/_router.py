"""The one ``/api`` Router: every JSON route of the ingest and read API (the seed dashboard's
``/api/dashboard/...`` included), behind the token guard declared here once (and in the OpenAPI
schema as the ``token`` bearer scheme)."""

from __future__ import annotations

from litestar import Router

from pipelens_server._api import _compare, _dashboard, _ingest, _llm, _runs, _stats
from pipelens_server._api._auth import require_token


def api_router() -> Router:
    """``/api/...``: with a token configured, every request must carry it."""
    return Router(
        "/api",
        route_handlers=[
            *_ingest.route_handlers,
            *_runs.route_handlers,
            *_compare.route_handlers,
            *_stats.route_handlers,
            *_llm.route_handlers,
            *_dashboard.route_handlers,
        ],
        guards=[require_token],
        security=[{"token": []}],
    )

"""Dashboard pages (placeholder: its pages land with the dashboard issue)."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler


def route_handlers() -> list[ControllerRouterHandler]:
    """The pages of this module, registered by :func:`pipelens_server.create_app`."""
    return []

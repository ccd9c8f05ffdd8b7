"""Bearer-token authentication of the ``/api`` routes."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from pipelens_server._errors import UnauthorizedError
from pipelens_server._settings import Settings


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>``, compared in constant time."""
    scheme, _, credentials = (header or "").partition(" ")
    # Both sides of the comparison are bytes of the header's own length: compare_digest then
    # takes the same time whatever prefix of the token a guess gets right.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    )


async def require_token(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: with a token configured, refuse requests that do not carry it.

    A coroutine, though it never waits: Litestar runs a plain function guard in a thread pool,
    a hop per request that cost more than the check.
    """
    settings: Settings = connection.app.state.settings
    if settings.token is None:
        return
    if not token_matches(connection.headers.get("authorization"), settings.token):
        raise UnauthorizedError(
            "this server requires a token: send the header 'Authorization: Bearer <token>'"
        )

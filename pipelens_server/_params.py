"""Refusing, for every route at once, request parameters that no route can take.

PostgreSQL's ``text`` cannot hold a NUL character (psycopg refuses to send one), and the file
system refuses it in a path: a ``%00`` anywhere in the path or the query is a 400 naming the
parameter, before any handler runs, rather than a 500 from whichever query it reaches.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from pipelens_server._errors import NUL, InvalidParameterError

_NUL_BYTE = NUL.encode()


def check_parameters(scope: Scope) -> None:
    """Raise ``InvalidParameterError`` naming the first parameter that holds a NUL."""
    for name, value in (scope.get("path_params") or {}).items():
        if isinstance(value, str) and NUL in value:
            raise InvalidParameterError(
                f"the path parameter {name} contains a NUL character (%00), which no name or "
                "id can hold: remove it",
                parameter=name,
            )
    query = scope.get("query_string", b"")
    if b"%00" in query or _NUL_BYTE in query:
        text = query.decode("utf-8", "replace")
        for name, value in parse_qsl(text, keep_blank_values=True):
            if NUL in name or NUL in value:
                shown = name.replace(NUL, "%00")
                raise InvalidParameterError(
                    f"the query parameter {shown} contains a NUL character (%00), which no "
                    "search or filter can hold: remove it",
                    parameter=shown,
                )
    if NUL in scope.get("path", ""):
        raise InvalidParameterError(
            "the path contains a NUL character (%00), which no page or file name can hold: "
            "remove it",
            parameter="path",
        )


class RefuseNul(ASGIMiddleware):
    """The app's middleware that applies :func:`check_parameters` to every HTTP request."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        """Check the parameters, then pass the request on."""
        check_parameters(scope)
        await next_app(scope, receive, send)

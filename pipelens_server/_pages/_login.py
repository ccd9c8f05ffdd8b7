"""Login to the dashboard when the server has a token.

``/login`` checks the token in constant time and opens a session (``_sessions``): the cookie
holds a random id, never the token nor anything derived from it, and logging out deletes the
session on the server, so a copied cookie stops working too. The cookie is ``HttpOnly`` (no script
reads it) and ``SameSite=Strict`` (no other site's form or link sends it). Failed logins are
limited per client address (429 with ``Retry-After``), and every form carries the CSRF token.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromQuery
from litestar.response import Redirect
from psycopg_pool import AsyncConnectionPool

from pipelens_server._pages import _sessions
from pipelens_server._pages._csrf import check_form
from pipelens_server._pages._templating import render
from pipelens_server._settings import Settings

COOKIE = "pipelens_session"


def _pool(request: Request[Any, Any, Any]) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    return pool


def _limiter(request: Request[Any, Any, Any]) -> _sessions.LoginLimiter:
    limiter: _sessions.LoginLimiter = request.app.state.login_limiter
    return limiter


def _client(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


async def has_session(request: Request[Any, Any, Any], token: str) -> bool:
    """Whether the request carries the cookie of a live session opened with ``token``."""
    return await _sessions.session_is_open(_pool(request), request.cookies.get(COOKIE, ""), token)


def _safe_next(target: str | None) -> str:
    """``target`` when it is a path on this server, else ``/``: no open redirect."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


async def require_session(request: Request[Any, Any, Any]) -> Response[str] | None:
    """``before_request`` of the pages: with a token set, send visitors without a session to
    ``/login`` (htmx requests get ``HX-Redirect``, so the whole page changes, not a fragment)."""
    settings: Settings = request.app.state.settings
    if settings.token is None or await has_session(request, settings.token):
        return None
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = f"/login?next={quote(path, safe='')}"
    if request.headers.get("hx-request") == "true":
        return Response("", status_code=401, headers={"HX-Redirect": login})
    return Redirect(login, status_code=303)


@get("/login", sync_to_thread=False)
def login_form(
    request: Request[Any, Any, Any], next: FromQuery[str | None] = None
) -> Response[str]:
    """The login form."""
    return _form(request, _safe_next(next), error=None, status_code=200)


@post("/login")
async def login(request: Request[Any, Any, Any]) -> Response[str]:
    """Check the token; on success open a session and go where the user was going. After too
    many failures from one address the form answers 429 until the oldest is a minute old."""
    settings: Settings = request.app.state.settings
    form = await request.form()
    check_form(request, form)
    given = str(form.get("token", ""))
    target = _safe_next(str(form.get("next", "/")))
    if settings.token is None:
        return Redirect(target, status_code=303)
    limiter, client = _limiter(request), _client(request)
    if (wait := limiter.retry_after(client)) is not None:
        error = f"Too many wrong tokens from your address: try again in {wait} seconds."
        response = _form(request, target, error=error, status_code=429)
        response.headers["Retry-After"] = str(wait)
        return response
    if not hmac.compare_digest(given.encode(), settings.token.encode()):
        limiter.failed(client)
        return _form(request, target, error="That token is not the server's.", status_code=401)
    limiter.succeeded(client)
    cookie = Cookie(
        key=COOKIE,
        value=await _sessions.open_session(_pool(request), settings.token),
        path="/",
        max_age=_sessions.MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return Redirect(target, status_code=303, cookies=[cookie])


@post("/logout")
async def logout(request: Request[Any, Any, Any]) -> Response[str]:
    """End the session: deleted on the server, the cookie removed."""
    check_form(request, await request.form())
    await _sessions.close_session(_pool(request), request.cookies.get(COOKIE, ""))
    response: Response[str] = Redirect("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _form(
    request: Request[Any, Any, Any], target: str, *, error: str | None, status_code: int
) -> Response[str]:
    context = {"next": target, "error": error, "zone": "UTC", "title": "Log in"}
    return render(request, "login.html", context, status_code=status_code)


route_handlers = [login_form, login, logout]

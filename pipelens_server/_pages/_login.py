"""Login to the dashboard when the server has a token.

``/login`` checks the token in constant time and sets a session cookie holding an HMAC of the
token, never the token itself: a stolen cookie does not reveal the API token, every server process
can check the cookie without shared state, and changing the token ends every session. The cookie
is ``HttpOnly`` (no script reads it) and ``SameSite=Strict`` (no other site's form or link sends
it, which is what keeps the pages safe from cross-site requests).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.params import FromQuery
from litestar.response import Redirect

from pipelens_server._pages._templating import render
from pipelens_server._settings import Settings

COOKIE = "pipelens_session"
_MESSAGE = b"pipelens dashboard session v1"
_MAX_AGE_S = 30 * 24 * 3600


def session_value(token: str) -> str:
    """The cookie value that proves its holder knew ``token``."""
    return hmac.new(token.encode(), _MESSAGE, hashlib.sha256).hexdigest()


def has_session(request: Request[Any, Any, Any], token: str) -> bool:
    """Whether the request carries the session cookie of ``token`` (compared in constant time)."""
    cookie = request.cookies.get(COOKIE, "")
    return hmac.compare_digest(cookie.encode(), session_value(token).encode())


def _safe_next(target: str | None) -> str:
    """``target`` when it is a path on this server, else ``/``: no open redirect."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


async def require_session(request: Request[Any, Any, Any]) -> Response[str] | None:
    """``before_request`` of the pages: with a token set, send visitors without a session to
    ``/login`` (htmx requests get ``HX-Redirect``, so the whole page changes, not a fragment)."""
    settings: Settings = request.app.state.settings
    if settings.token is None or has_session(request, settings.token):
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
    """Check the token; on success set the session cookie and go where the user was going."""
    settings: Settings = request.app.state.settings
    form = await request.form()
    given = str(form.get("token", ""))
    target = _safe_next(str(form.get("next", "/")))
    if settings.token is None:
        return Redirect(target, status_code=303)
    if not hmac.compare_digest(given.encode(), settings.token.encode()):
        return _form(request, target, error="That token is not the server's.", status_code=401)
    cookie = Cookie(
        key=COOKIE,
        value=session_value(settings.token),
        path="/",
        max_age=_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return Redirect(target, status_code=303, cookies=[cookie])


@post("/logout", sync_to_thread=False)
def logout() -> Response[str]:
    """End the session."""
    response: Response[str] = Redirect("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _form(
    request: Request[Any, Any, Any], target: str, *, error: str | None, status_code: int
) -> Response[str]:
    context = {"next": target, "error": error, "zone": "UTC", "title": "Log in"}
    return render(request, "login.html", context, status_code=status_code)


route_handlers = [login_form, login, logout]

"""The CSRF token of the dashboard's forms (``/settings``, ``/import``, ``/login``, logout).

A double-submit token: each browser gets a random ``pipelens_csrf`` cookie (``HttpOnly``,
``SameSite=Strict``), every form carries the same value in a hidden ``csrf_token`` field, and a
POST whose field does not match its cookie is refused. A page of another site can make the
browser send the cookie at most, never read it to fill the field. It backs up the same-origin
check of ``_security``, which already refuses what browsers mark as sent from another site.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from litestar import Request, Response
from litestar.datastructures import Cookie

from pipelens_server._errors import NUL, ForbiddenError, InvalidParameterError

COOKIE = "pipelens_csrf"
FIELD = "csrf_token"
_STATE_KEY = "pipelens_csrf_new"
_MAX_AGE_S = 30 * 24 * 3600
_TOKEN_CHARS = 43  # secrets.token_urlsafe(32)


def form_token(request: Request[Any, Any, Any]) -> str:
    """The token this request's forms carry: the browser's cookie, or a new one (which
    ``set_cookie`` then sends)."""
    token = request.cookies.get(COOKIE, "")
    if len(token) == _TOKEN_CHARS:
        return token
    new: str | None = request.state.get(_STATE_KEY)
    if new is None:
        new = secrets.token_urlsafe(32)
        request.state[_STATE_KEY] = new
    return new


def set_cookie(request: Request[Any, Any, Any], response: Response[Any]) -> None:
    """Send the cookie of a token ``form_token`` made for this request, if it made one."""
    new: str | None = request.state.get(_STATE_KEY)
    if new is not None:
        response.set_cookie(
            Cookie(
                key=COOKIE,
                value=new,
                path="/",
                max_age=_MAX_AGE_S,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        )


def check_form(request: Request[Any, Any, Any], form: Any) -> None:
    """Raise ``ForbiddenError`` unless the form's ``csrf_token`` is the browser's cookie, and
    ``InvalidParameterError`` (400) naming a field that holds a NUL."""
    cookie = request.cookies.get(COOKIE, "")
    given = str(form.get(FIELD, "") if form is not None else "")
    if not cookie or not hmac.compare_digest(given.encode(), cookie.encode()):
        raise ForbiddenError(
            "this form lacks the token of the page it came from (or the page is older than the "
            "browser's cookie): reload the page and send the form again"
        )
    _refuse_nul(form)


def _refuse_nul(form: Any) -> None:
    # A form's body is not in the query string, so the app's NUL check (``_params``) never sees
    # it, and PostgreSQL's text cannot hold a NUL: name the field rather than 500.
    for name, value in form.multi_items():
        if isinstance(value, str) and (NUL in value or NUL in name):
            shown = name.replace(NUL, "%00")
            raise InvalidParameterError(
                f"the form field {shown} contains a NUL character (%00), which no name or "
                "setting can hold: remove it",
                parameter=shown,
            )

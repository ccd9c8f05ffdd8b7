"""What every request passes before a handler sees it, and what every answer carries.

- ``HostGate`` (around the router): refuses a ``Host`` the server does not answer to, so a page
  whose DNS name was rebound to 127.0.0.1 cannot read or write the dashboard; and keeps ``%2F``
  and ``%25`` encoded in the path it routes on, so a run id, pipeline or step key holding ``/``
  stays one path segment (the handlers get it decoded: ``decode_path_params``).
- ``refuse_cross_site_writes`` (around each handler): a state-changing request that a browser
  marks as sent by another site (``Sec-Fetch-Site: cross-site`` or ``same-site`` — a page on
  another port of the same host is ``same-site``, and cookies do not tell ports apart) or whose
  ``Origin`` is not the server's own is refused with 403. Clients that are not browsers send
  neither header and pass.
- ``add_security_headers`` (``before_send``): a same-origin-only Content-Security-Policy, no
  framing, no MIME sniffing, no referrer to other sites.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any
from urllib.parse import unquote

import msgspec
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from pipelens_server._errors import ForbiddenError
from pipelens_server._settings import Settings, is_loopback

#: Everything comes from this server; nothing may frame it. htmx and the CSS are files in
#: ``static/``, and the templates carry no inline script, style or event handler.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_OTHER_SITES = frozenset({"cross-site", "same-site"})
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_KEPT = frozenset({b"2f", b"2F", b"25"})


class _Refusal(msgspec.Struct, kw_only=True, frozen=True):
    status_code: int
    detail: str


_encode = msgspec.json.Encoder().encode


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header, lower case: ``[::1]:3000`` → ``[::1]``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if ":" in host else host


def _bound_name(settings: Settings) -> str:
    host = settings.host.lower()
    return f"[{host}]" if ":" in host else host


def host_allowed(settings: Settings, name: str) -> bool:
    """Whether the server answers requests for the host ``name`` (see ``Settings``)."""
    allowed = settings.allowed_hosts
    if "*" in allowed or (not allowed and not is_loopback(settings.host)):
        return True
    if name in LOOPBACK_NAMES or name == _bound_name(settings):
        return True
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed)


def _routing_path(raw_path: bytes) -> str:
    """``raw_path`` decoded except ``%2F`` and ``%25``, which stay escaped (upper case)."""

    def decode(match: re.Match[bytes]) -> bytes:
        digits = match.group(1)
        return b"%" + digits.upper() if digits in _KEPT else bytes([int(digits, 16)])

    return _ESCAPE.sub(decode, raw_path).decode("utf-8", errors="replace")


class HostGate:
    """The ASGI app around Litestar's router: checks ``Host``, and routes on a path in which an
    encoded ``/`` is not a separator."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if host is not None and not host_allowed(self.settings, host_name(host)):
            await _refuse(send, 400, self._host_problem(host))
            return
        raw_path = scope.get("raw_path")
        if raw_path and b"%" in raw_path:
            # raw_path holds root_path already (and, from some clients, the query string).
            scope["path"] = _routing_path(raw_path.split(b"?")[0])
        await self.app(scope, receive, send)

    def _host_problem(self, host: str) -> str:
        where = f"{self.settings.host}:{self.settings.port}"
        return (
            f"this server does not answer to the host {host!r} (it listens on {where}; a page "
            "of another site rebinding its name to this address looks like this): open it by "
            "its own address, or allow the name with --allowed-hosts (PIPELENS_ALLOWED_HOSTS)"
        )


def decode_path_params(app: ASGIApp) -> ASGIApp:
    """Middleware: path parameters decoded the rest of the way (``%2F`` → ``/``, ``%25`` →
    ``%``)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        params: dict[str, Any] = scope.get("path_params") or {}
        if any(isinstance(value, str) and "%" in value for value in params.values()):
            # A new dict: the router caches the one it made per path, and a second request for
            # the same path must not be decoded twice.
            scope["path_params"] = {
                name: unquote(value) if isinstance(value, str) else value
                for name, value in params.items()
            }
        await app(scope, receive, send)

    return middleware


def refuse_cross_site_writes(app: ASGIApp) -> ASGIApp:
    """Middleware: a POST, PUT, PATCH or DELETE that a browser sent from another site is a 403."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope.get("method") not in _SAFE_METHODS:
            check_same_origin(scope)
        await app(scope, receive, send)

    return middleware


def check_same_origin(scope: Scope) -> None:
    """Raise ``ForbiddenError`` when the browser says the request comes from another site."""
    site = (_header(scope, b"sec-fetch-site") or "").strip().lower()
    method, path = scope.get("method", "POST"), scope.get("path", "/")
    if site in _OTHER_SITES:
        raise ForbiddenError(
            f"refused {method} {path}: the browser says a page of another site sent it "
            f"(Sec-Fetch-Site: {site}). Change things from this server's own pages; scripts and "
            "SDKs, which send no Origin, are not affected"
        )
    origin = _header(scope, b"origin")
    if origin is None:
        return
    own = _own_origin(scope)
    if _normal_origin(origin) != own:
        raise ForbiddenError(
            f"refused {method} {path}: it comes from the page of {origin!r}, not from this "
            f"server ({own}). Change things from this server's own pages; scripts and SDKs, "
            "which send no Origin, are not affected"
        )


def _own_origin(scope: Scope) -> str:
    scheme = str(scope.get("scheme", "http")).lower()
    host = _header(scope, b"host")
    if host is None:
        server = scope.get("server") or ("", None)
        host = f"{server[0]}:{server[1]}" if server[1] is not None else str(server[0])
    return _normal_origin(f"{scheme}://{host}")


def _normal_origin(origin: str) -> str:
    """``scheme://host:port`` in lower case with the scheme's default port left out."""
    scheme, _, authority = origin.strip().lower().partition("://")
    name = host_name(authority)
    port = authority[len(name) :].lstrip(":")
    suffix = "" if port in ("", _DEFAULT_PORTS.get(scheme)) else f":{port}"
    return f"{scheme}://{name}{suffix}"


async def add_security_headers(message: Message, _: Scope) -> None:
    """``before_send``: the security headers on every answer (a handler's own win)."""
    if message["type"] == "http.response.start":
        headers = MutableScopeHeaders.from_message(message)
        for name, value in SECURITY_HEADERS.items():
            if name not in headers:
                headers[name] = value


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(send: Send, status_code: int, detail: str) -> None:
    body = _encode(_Refusal(status_code=status_code, detail=detail))
    await send(
        {
            "type": "http.response.start",
            "status": status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})

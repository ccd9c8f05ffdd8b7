"""One keep-alive HTTP connection to a PipeLens server's ingest endpoint (stdlib ``http.client``).

What a response means for the batch it answered is decided here: 2xx delivered; 408, 429 and
5xx worth retrying (honouring ``Retry-After``); any other status a refusal that resending cannot
fix. A network failure raises ``OSError`` or ``http.client.HTTPException``; the caller retries.
"""

from __future__ import annotations

import email.utils
import http.client
import time
from collections.abc import Mapping
from typing import Literal, NamedTuple
from urllib.parse import urlsplit

from pipelens._core.errors import ConfigurationError

INGEST_PATH = "/api/v1/events"
CONTENT_TYPE = "application/msgpack"

Verdict = Literal["delivered", "retry", "rejected"]

#: Errors that mean the server closed the connection before answering: on a connection that
#: served requests before, that is usually an idle keep-alive connection it had already dropped.
CLOSED_EARLY = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


class Response(NamedTuple):
    """What the server answered to one batch."""

    status: int
    verdict: Verdict
    retry_after: float | None
    body: bytes


def parse_url(url: object, owner: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, base path)`` of a server URL; a clear error when it is not one."""
    hint = "expected an http:// or https:// URL such as 'http://localhost:3000'"
    if not isinstance(url, str):
        raise ConfigurationError(f"{owner}(url={url!r}): {hint}")
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(
            f"{owner}(url={url!r}): the port is not a number; {hint}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{owner}(url={url!r}): {hint}")
    if parts.username or parts.password:
        raise ConfigurationError(
            f"{owner}(url=...): put credentials in token=... (or PIPELENS_TOKEN), not in the URL"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{owner}(url={url!r}): a server URL has no query or fragment")
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port or default, parts.path.rstrip("/")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def verdict_of(status: int) -> Verdict:
    """What a status means for the batch: delivered, worth retrying, or refused for good."""
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "rejected"


class Endpoint:
    """``POST {url}/api/v1/events`` over one reused connection; not thread-safe (one sender).

    Args:
        url: the server's base URL (``http://localhost:3000``); a path prefix is kept.
        token: sent as ``Authorization: Bearer <token>`` when given.
        timeout: seconds any one connect, send or receive may block.
        path: what is posted to, under the URL's path (the OTLP export posts ``/v1/traces``).
        content_type: the bodies' media type.
        headers: more headers for every request (an OTLP backend's API key).
        owner: how errors about the URL name the transport.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        timeout: float,
        user_agent: str,
        *,
        path: str = INGEST_PATH,
        content_type: str = CONTENT_TYPE,
        headers: Mapping[str, str] | None = None,
        owner: str = "HttpTransport",
    ) -> None:
        scheme, host, port, prefix = parse_url(url, owner)
        self.url = url.strip().rstrip("/")
        self.path = prefix + path
        self.timeout = timeout
        self._scheme = scheme
        self._host = host
        self._port = port
        self._headers = {
            **(headers or {}),
            "Content-Type": content_type,
            "Accept": "application/json",
            "User-Agent": user_agent,
        }
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None
        #: Whether the last ``post`` went over a connection opened for an earlier one.
        self.reused = False

    def __repr__(self) -> str:  # never shows the token
        return f"<Endpoint {self.url!r}>"

    def _connect(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            import ssl

            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def post(self, body: bytes) -> Response:
        """Send one batch body and read the answer.

        Raises:
            OSError, http.client.HTTPException: no answer (refused, reset, timed out, ...);
                one of :data:`CLOSED_EARLY` with ``reused`` set is worth an immediate resend.
        """
        conn = self._conn
        self.reused = conn is not None
        if conn is None:
            conn = self._conn = self._connect()
        try:
            conn.request("POST", self.path, body, self._headers)
            response = conn.getresponse()
            data = response.read(65536)
        except BaseException:
            self.close()
            raise
        if response.will_close or not response.isclosed():  # closing, or an unread tail
            self.close()
        status = response.status
        return Response(
            status, verdict_of(status), parse_retry_after(response.getheader("Retry-After")), data
        )

    def close(self) -> None:
        """Drop the connection (the next ``post`` opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                return

    def forget(self) -> None:
        """Drop the connection without closing it: after ``fork`` the socket is the parent's."""
        self._conn = None

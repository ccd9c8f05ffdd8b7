"""The server's exceptions; ``app.py`` maps each to its HTTP answer in one place.

The whole tree::

    ServerError                   anything the server raises on purpose (``status_code`` says how
    │                             it is answered over HTTP)
    ├── InvalidBatchError              400: a body that does not decode or validate (names the path)
    │   └── RunIdReusedError           409: a second run under the id of another (names it)
    ├── InvalidParameterError          400: a query or path parameter no route can take (names it)
    ├── UnauthorizedError              401: a missing or wrong bearer token
    ├── ForbiddenError                 403: a cross-site write, or a form without its CSRF token
    ├── RunNotFoundError               404: no run with that id
    ├── BodyTooLargeError              413: a body that decompresses past the body limit
    ├── UnsupportedMediaTypeError      415: a content type the endpoint does not read
    ├── OverloadedError                429: the database is not keeping up; retry after a while
    ├── TooManyAttemptsError           429: too many failed logins from one address; wait
    ├── DatabaseUnavailableError       503: PostgreSQL cannot be reached
    ├── EmbeddedPostgresError     the embedded PostgreSQL could not be set up, started or stopped
    └── MigrationError            the schema could not be brought up to date
"""

from __future__ import annotations

import re

_PATH = re.compile(r" - at `(\$[^`]*)`$")

#: The character PostgreSQL's ``text`` and ``jsonb`` cannot hold (nor a file name): ingest
#: replaces it, a request parameter or form field holding it is an :class:`InvalidParameterError`.
NUL = "\x00"


class ServerError(Exception):
    """Base class of every error the server raises on purpose."""

    status_code = 500


class InvalidBatchError(ServerError):
    """The request body does not decode or validate; ``path`` points at the bad field."""

    status_code = 400

    def __init__(self, message: str, path: str | None = None) -> None:
        if path is None and (match := _PATH.search(message)):
            path = match.group(1)
        super().__init__(message)
        self.path = path


class InvalidParameterError(ServerError):
    """A query or path parameter that no route can take (a NUL character); names it."""

    status_code = 400

    def __init__(self, message: str, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class UnauthorizedError(ServerError):
    """The request lacks the bearer token the server was started with."""

    status_code = 401


class ForbiddenError(ServerError):
    """A request the server refuses whoever sends it: a write from another site's page, or a
    form that lacks the CSRF token of the page it came from."""

    status_code = 403


class RunNotFoundError(ServerError):
    """No run has the requested id."""

    status_code = 404

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with run_id {run_id!r}")
        self.run_id = run_id


class BodyTooLargeError(ServerError):
    """A compressed body that inflates past the server's body limit."""

    status_code = 413


class UnsupportedMediaTypeError(ServerError):
    """The body's content type is not one the endpoint reads."""

    status_code = 415


class OverloadedError(ServerError):
    """The database cannot take more work right now; the client should retry later."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooManyAttemptsError(ServerError):
    """Too many failed logins from one client address; ``retry_after_s`` says when to try."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RunIdReusedError(InvalidBatchError):
    """A run whose id is another run's (started at another time): refused, never merged (a
    batch error, so that a file import reports it as its own)."""

    status_code = 409

    def __init__(self, run_id: str, stored_ns: int, new_ns: int) -> None:
        super().__init__(
            f"run_id {run_id!r} is already the id of a run that started at {stored_ns} ns; this "
            f"run starts at {new_ns} ns: give each run its own run_id (none of this run's events "
            "were stored)",
            path=None,
        )
        self.run_id = run_id


class DatabaseUnavailableError(ServerError):
    """PostgreSQL cannot be reached (at start-up, or a query found it gone)."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EmbeddedPostgresError(ServerError):
    """The embedded PostgreSQL could not be initialised, started or stopped."""


class MigrationError(ServerError):
    """A migration failed or an applied migration's file changed since it ran."""

"""Who a request's run is for: its user, session, tags and metadata, read from the request.

The integrations' options (``user_id_header="X-User"``, ``session_id_header=``, ``tags=``, and
``identify=``, a callable given the request that answers a dict) say where to look; the values go
through the checks of ``pipelens.set_run`` (cut to the wire's limits; metadata redacted on the
way out). A request is the user's data and ``identify`` the user's code: a wrong value or an
exception there is logged once and the request goes on, its run without what failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pipelens._core import containment
from pipelens._core.errors import ConfigurationError
from pipelens._core.step import Run
from pipelens._core.who import check_id, check_metadata, check_tags

#: What ``identify`` may answer: any of these keys (others are refused, by name).
IDENTITY_KEYS = ("metadata", "session_id", "tags", "user_id")


def _header(owner: str, name: str, value: object) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or not value.isascii() or ":" in value:
        raise ConfigurationError(
            f"{owner}({name}={value!r}): expected a header name such as 'X-User', or None"
        )
    return value.lower().encode("ascii")


class RequestWho:
    """The checked options: which headers to read, which tags to add, whom to ask."""

    __slots__ = ("identify", "session_header", "tags", "user_header")

    def __init__(
        self,
        owner: str,
        user_id_header: str | None = None,
        session_id_header: str | None = None,
        tags: Iterable[str] = (),
        identify: Callable[[Any], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.user_header = _header(owner, "user_id_header", user_id_header)
        self.session_header = _header(owner, "session_id_header", session_id_header)
        if isinstance(tags, str):
            raise ConfigurationError(
                f"{owner}(tags={tags!r}): expected a list of tags such as ['api'], not a str"
            )
        try:
            self.tags = check_tags(tags, f"{owner}(tags=...)")
        except TypeError as exc:
            raise ConfigurationError(str(exc)) from None
        if identify is not None and not callable(identify):
            raise ConfigurationError(
                f"{owner}(identify={identify!r}): expected a callable taking the request and "
                "answering a dict such as {'user_id': ..., 'session_id': ...}"
            )
        self.identify = identify

    def __bool__(self) -> bool:
        return bool(self.user_header or self.session_header or self.tags or self.identify)

    def apply(self, run: Run, headers: Iterable[tuple[bytes, bytes]], request: object) -> None:
        """Set ``run``'s tags, user and session from the request (never raises)."""
        who = run.who
        who.add_tags(self.tags)
        if self.user_header or self.session_header:
            found = {name.lower(): value for name, value in headers}
            for header, field in (
                (self.user_header, "user_id"),
                (self.session_header, "session_id"),
            ):
                raw = found.get(header) if header else None
                if raw:  # an absent or empty header says nothing
                    value = check_id(raw.decode("latin-1"), field, "request header")
                    user, session = (value, None) if field == "user_id" else (None, value)
                    who.update(user, session, {})
        if self.identify is None:
            return
        try:
            answer = _checked(self.identify(request))
        except Exception as exc:
            containment.warn_once(
                "request.identify",
                f"the request's run has no user, session, tags or metadata from identify(): "
                f"{type(exc).__name__}: {exc}",
            )
            return
        if answer is not None:
            who.add_tags(answer[0])
            who.update(*answer[1:])


def _checked(
    given: object,
) -> tuple[list[str], str | None, str | None, dict[str, str]] | None:
    """What ``identify`` answered, checked as ``set_run`` checks (``TypeError`` naming it)."""
    if given is None:
        return None
    where = "identify(request)"
    if not isinstance(given, Mapping) or not set(given) <= set(IDENTITY_KEYS):
        raise TypeError(
            f"{where} must answer None or a dict with keys among {', '.join(IDENTITY_KEYS)}, "
            f"not {given!r}"
        )
    tags = given.get("tags") or ()
    if isinstance(tags, str):
        raise TypeError(f"{where}: tags must be a list of str, not {tags!r}")
    return (
        check_tags(tags, where),
        check_id(given.get("user_id"), "user_id", where),
        check_id(given.get("session_id"), "session_id", where),
        check_metadata(given.get("metadata"), where),
    )

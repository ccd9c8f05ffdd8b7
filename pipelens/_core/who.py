"""Who ran a run and why: its tags, user, session and metadata (``pipelens.tag``/``set_run``).

Values are checked when given (a wrong type is the caller's bug: ``TypeError`` naming the
argument) and capped then, like records: texts cut to the wire's limits with the truncation mark,
extra tags or metadata entries left out with a warning. Secrets are redacted on the way out, with
the captured values (see ``capture.scrub_event``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipelens._core import containment
from pipelens._core.capture import capture, clean_text
from pipelens._core.context import current_step_var
from pipelens.events import (
    MAX_ATTRIBUTE_KEY_BYTES,
    MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_ATTRIBUTES,
    MAX_RUN_ID_BYTES,
    MAX_TAG_BYTES,
    MAX_TAGS,
    cut,
)


class Who:
    """The mutable who-and-why of one run; :meth:`fields` is what its run events carry."""

    __slots__ = ("metadata", "session_id", "tags", "user_id")

    def __init__(self) -> None:
        self.tags: dict[str, None] = {}  # a dict: ordered, and a tag given twice is kept once
        self.user_id: str | None = None
        self.session_id: str | None = None
        self.metadata: dict[str, str] = {}

    def __bool__(self) -> bool:
        return (
            bool(self.tags or self.metadata)
            or self.user_id is not None
            or (self.session_id is not None)
        )

    def add_tags(self, tags: Iterable[str]) -> None:
        for tag in tags:
            if len(self.tags) >= MAX_TAGS and tag not in self.tags:
                containment.warn_once(
                    "who.tags", f"a run keeps at most {MAX_TAGS} tags; tag {tag!r} is left out"
                )
                continue
            self.tags[tag] = None

    def update(
        self, user_id: str | None, session_id: str | None, metadata: Mapping[str, str]
    ) -> None:
        if user_id is not None:
            self.user_id = user_id
        if session_id is not None:
            self.session_id = session_id
        for key, value in metadata.items():
            if len(self.metadata) >= MAX_ATTRIBUTES and key not in self.metadata:
                containment.warn_once(
                    "who.metadata",
                    f"a run keeps at most {MAX_ATTRIBUTES} metadata entries; {key!r} is left out",
                )
                continue
            self.metadata[key] = value

    def fields(self) -> dict[str, Any]:
        """Keyword arguments of ``RunStarted``/``RunFinished`` (none when nothing was set)."""
        if not self:
            return {}
        return {
            "tags": list(self.tags),
            "user_id": self.user_id,
            "session_id": self.session_id,
            "attributes": dict(self.metadata),
        }


def _text(value: str, limit: int) -> str:
    return cut(clean_text(value), limit)


def check_tags(tags: Iterable[object], where: str) -> list[str]:
    """The tags, checked (non-empty ``str``) and cut to the wire's limit."""
    checked = []
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise TypeError(f"{where}: tags must be non-empty str, not {tag!r}")
        checked.append(_text(tag, MAX_TAG_BYTES))
    return checked


def check_id(value: object, name: str, where: str) -> str | None:
    """``user_id``/``session_id``: ``None`` or a non-empty ``str``, cut to the wire's limit."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{where}: {name} must be a non-empty str or None, not {value!r}")
    return _text(value, MAX_RUN_ID_BYTES)


def check_metadata(metadata: object, where: str) -> dict[str, str]:
    """``metadata`` as the wire's ``{str: str}``: a ``str`` value as it is, any other as JSON
    text (``3``, ``true``, ``["a"]``), so that ``metadata=n=3`` finds ``{"n": 3}``."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(
            f"{where}: metadata must be a dict such as {{'plan': 'pro'}}, not {metadata!r}"
        )
    checked = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{where}: metadata keys must be non-empty str, not {key!r}")
        text = value if isinstance(value, str) else capture(value)
        checked[_text(key, MAX_ATTRIBUTE_KEY_BYTES)] = _text(text, MAX_ATTRIBUTE_VALUE_BYTES)
    return checked


def who_of(
    tags: Iterable[object] | None,
    user_id: object,
    session_id: object,
    metadata: object,
    where: str,
) -> Who:
    """A checked :class:`Who` from ``Pipeline(...)``/``Pipeline.run(...)`` arguments."""
    if isinstance(tags, str):  # tags="nightly" would be seven one-letter tags
        raise TypeError(f"{where}: tags must be a list of str such as ['nightly'], not {tags!r}")
    who = Who()
    who.add_tags(check_tags(tags or (), where))
    who.update(
        check_id(user_id, "user_id", where),
        check_id(session_id, "session_id", where),
        check_metadata(metadata, where),
    )
    return who


def _current_who(where: str) -> Who | None:
    step = current_step_var.get()
    if step is None:
        containment.warn_once(
            f"{where}.outside",
            f"pipelens.{where}(...) was called outside any run and is ignored; call it inside "
            "a function decorated with @pipelens.step (or a `with Pipeline(...).run()` block)",
        )
        return None
    return step.run.who


def tag(*tags: str) -> None:
    """Add tags to the current run (``pipelens.tag("nightly", "v2")``); a tag given twice is kept
    once. Outside a run it warns once and does nothing, like :func:`pipelens.record`.

    Raises:
        TypeError: a tag is not a non-empty ``str``.
    """
    checked = check_tags(tags, "pipelens.tag")
    who = _current_who("tag")
    if who is not None:
        who.add_tags(checked)


def set_run(
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Say whose the current run is and why: its user, its session (a conversation: the runs of a
    session are listed together) and metadata entries (merged into those already set). Outside
    a run it warns once and does nothing, like :func:`pipelens.record`.

    Raises:
        TypeError: an argument has the wrong type (the message names it).
    """
    where = "pipelens.set_run"
    checked_user = check_id(user_id, "user_id", where)
    checked_session = check_id(session_id, "session_id", where)
    checked_metadata = check_metadata(metadata, where)
    who = _current_who("set_run")
    if who is not None:
        who.update(checked_user, checked_session, checked_metadata)

"""``StepLike``: the read-only shape of a step that its views and charts draw from.

A leaf, so that the views (a base class of ``Step``) and the charts can type their argument
without importing the step module that imports them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from pipelens.events import ErrorInfo, Status


class StepLike(Protocol):
    """What a view or chart reads of a step (``pipelens.Step`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def status(self) -> Status: ...
    @property
    def start_ns(self) -> int: ...
    @property
    def end_ns(self) -> int | None: ...
    @property
    def duration_ns(self) -> int | None: ...
    @property
    def result(self) -> Any: ...
    @property
    def error(self) -> ErrorInfo | None: ...
    @property
    def parent(self) -> StepLike | None: ...
    @property
    def children(self) -> Sequence[StepLike]: ...
    @property
    def records(self) -> dict[str, Any]: ...

    def walk(self) -> Iterator[StepLike]:
        """This step and every descendant, depth first, in start order."""
        ...

    def record(self, key: str, value: Any) -> Any:
        """Record ``value`` under ``key`` on this step."""
        ...


class RunLike(Protocol):
    """What a view reads of a run: its id and root step."""

    @property
    def id(self) -> str: ...
    @property
    def root(self) -> StepLike: ...

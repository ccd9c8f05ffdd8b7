"""``Done``: an awaitable that is already done — the seed awaited calls that are sync here.

``await st.record(...)``, ``await LLMTrack.track(...)``, ``await step.gantt_google_chart_html()``:
each returns at once, and awaiting the result gives its value without suspending.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Done(Generic[T]):
    """Awaiting it gives :attr:`value` at once."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, T]:
        yield from ()
        return self.value

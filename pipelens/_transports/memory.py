"""``MemoryTransport``: every event kept in a list, for tests and notebooks."""

from __future__ import annotations

from pipelens.events import Batch, Event


class MemoryTransport:
    """Keeps every event in a list: for tests (see :mod:`pipelens.testing`) and notebooks."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def send(self, event: Event) -> bool:
        self.events.append(event)
        return True

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        return None

    def clear(self) -> None:
        """Forget the events received so far."""
        self.events.clear()

    def batch(self) -> Batch:
        """The events received so far as one wire batch."""
        return Batch(events=list(self.events))

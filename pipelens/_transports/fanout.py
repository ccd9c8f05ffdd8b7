"""``Fanout``: one run's events to several transports (our server and an OTLP backend).

``send`` hands each event to every part, in order; each part queues it for its own thread.
"""

from __future__ import annotations

import time

from pipelens._core.sink import Transport
from pipelens.events import Event


class Fanout:
    """Sends every event to each of ``parts``; what ``configure(url=..., otlp_endpoint=...)``
    makes.

    ``send`` is ``False`` when any part dropped the event; ``flush`` is ``True`` when every part
    flushed in time.
    """

    def __init__(self, *parts: Transport) -> None:
        self.parts = parts
        # The run scrubs inline unless every part scrubs on its own thread.
        self.scrubs_events = all(getattr(p, "scrubs_events", False) for p in parts)
        # Starts are sent when any part wants them (the others skip them).
        self.wants_starts = any(getattr(p, "wants_starts", True) for p in parts)

    def __repr__(self) -> str:
        return f"<Fanout {list(self.parts)!r}>"

    def send(self, event: Event) -> bool:
        kept = True
        for part in self.parts:
            kept = part.send(event) is not False and kept
        return kept

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        done = True
        for part in self.parts:  # one deadline for all of them
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            done = part.flush(left) and done
        return done

    def close(self, timeout: float | None = None) -> None:
        for part in self.parts:
            part.close(timeout)

    def stats(self) -> object:
        """The first part's counters (our own server's, when there is one)."""
        stats = getattr(self.parts[0], "stats", None)
        return stats() if callable(stats) else None


def parts_of(transport: Transport | None) -> tuple[Transport, ...]:
    """The transports ``transport`` stands for: its parts, itself, or none."""
    if transport is None:
        return ()
    if isinstance(transport, Fanout):
        return transport.parts
    return (transport,)


def combine(*parts: Transport | None) -> Transport | None:
    """One transport for ``parts`` (the ``None`` ones left out): none, the one, or a Fanout."""
    kept = [p for p in parts if p is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else Fanout(*kept)

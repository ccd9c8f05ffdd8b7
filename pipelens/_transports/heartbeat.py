"""Heartbeats: the runs still open in this process, told to the server every few seconds.

A client killed mid-run (SIGKILL, the OOM killer) never sends its run's end; the server marks a
running run ``abandoned`` once nothing came for it in its ``--abandon-after`` timeout. A long step
sends nothing while it works, so the transport's thread also sends, every ``interval`` seconds, a
batch with no events and one :class:`~pipelens.events.RunHeartbeat` per open run. The open runs
are those whose ``RunStarted`` went through the transport and whose ``RunFinished`` did not yet;
everything here runs on that thread, never on the user's code path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from pipelens._core.settings import DEFAULT_HEARTBEAT_S
from pipelens.events import Batch, Event, RunFinished, RunHeartbeat, RunStarted

#: Seconds between two heartbeats of a transport that sends them (``HttpTransport``).
DEFAULT_INTERVAL_S = DEFAULT_HEARTBEAT_S


class Heartbeat:
    """The open runs one transport has seen, and when their next heartbeat is due.

    Args:
        interval: seconds between heartbeats; ``None`` sends none.
    """

    __slots__ = ("_due", "_open", "interval")

    def __init__(self, interval: float | None) -> None:
        self.interval = interval
        self._open: dict[str, None] = {}  # insertion-ordered: oldest run first
        self._due = time.monotonic() + (interval or 0.0)

    def observe(self, events: Iterable[Event]) -> None:
        """Follow the runs that start and finish in ``events`` (a batch being written)."""
        if self.interval is None:
            return
        for event in events:
            kind = type(event)
            if kind is RunStarted:
                self._open[event.run_id] = None
            elif kind is RunFinished:
                self._open.pop(event.run_id, None)

    def due(self) -> Batch | None:
        """The heartbeat batch to write now, or ``None`` (not yet, or no run open)."""
        if self.interval is None:
            return None
        now = time.monotonic()
        if now < self._due:
            return None
        self._due = now + self.interval
        if not self._open:
            return None
        at_ns = time.time_ns()
        return Batch(
            events=[], heartbeats=[RunHeartbeat(run_id=run, at_ns=at_ns) for run in self._open]
        )

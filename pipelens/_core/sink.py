"""``Transport``: the protocol a run sends its events through.

It is here, at the bottom, so that a run can send without knowing any transport; the
implementations (memory, batching, file, HTTP) live in ``pipelens._transports``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pipelens.events import Event


@runtime_checkable
class Transport(Protocol):
    """Receives every event of the runs that use it.

    ``send`` must return quickly and never raise; it returns ``False`` when the event was dropped
    (the run then counts it in ``dropped_events``). Optional attributes a run reads:
    ``scrubs_events`` (true: the transport scrubs secrets itself, off the caller's thread) and
    ``wants_starts`` (false: send no ``RunStarted``/``StepStarted``, a step's inputs ride on its
    ``StepFinished``).
    """

    def send(self, event: Event) -> bool: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float | None = None) -> None: ...

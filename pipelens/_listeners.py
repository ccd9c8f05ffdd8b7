"""The seed's step listeners: ``on('step-start' | ... , fn)``, sync or async callables.

Arguments, in the seed's order:

* ``step-start``: ``(key, meta)``
* ``step-success``: ``(key, result, meta)``
* ``step-error``: ``(key, error, meta)``
* ``step-complete``: ``(key, meta)`` (after success or error)
* ``step-record``: ``(key, record_key, value, meta)``

A listener that raises is logged once and does not affect the step or the user's code. An async
listener is scheduled on the running event loop, or run to completion when there is none.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from pipelens import _internal
from pipelens._errors import ConfigurationError

EVENTS = ("step-start", "step-success", "step-error", "step-complete", "step-record")
_pending: set[asyncio.Task[Any]] = set()


class Listeners:
    """Listeners by event name; one object is shared by every step of a run."""

    __slots__ = ("_by_event",)

    def __init__(self) -> None:
        self._by_event: dict[str, list[Callable[..., Any]]] = {}

    def add(self, event: str, listener: Callable[..., Any]) -> None:
        if event not in EVENTS:
            raise ConfigurationError(
                f"on({event!r}, ...): unknown event; expected one of {', '.join(EVENTS)}"
            )
        if not callable(listener):
            raise ConfigurationError(f"on({event!r}, {listener!r}): the listener must be callable")
        self._by_event.setdefault(event, []).append(listener)

    def copy(self) -> Listeners:
        other = Listeners()
        other._by_event = {k: list(v) for k, v in self._by_event.items()}
        return other

    def emit(self, event: str, *args: Any) -> None:
        for listener in self._by_event.get(event, ()):
            try:
                outcome = listener(*args)
                if inspect.isawaitable(outcome):
                    _schedule(outcome)
            except Exception as exc:
                _internal.internal_error(f"listener {event}", exc)


def _schedule(awaitable: Any) -> None:
    async def guarded() -> None:
        try:
            await awaitable
        except Exception as exc:
            _internal.internal_error("async listener", exc)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(guarded())
        return
    task = loop.create_task(guarded())
    _pending.add(task)  # keep a reference until done, as asyncio's docs ask
    task.add_done_callback(_pending.discard)

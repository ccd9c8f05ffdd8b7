"""The seed's step listeners: ``on('step-start' | ... , fn)``, sync or async callables.

Arguments, in the seed's order (``meta`` is the step's :class:`~pipelens.StepMeta`):

* ``step-start``: ``(key, meta)``
* ``step-success``: ``(key, result, meta)``
* ``step-error``: ``(key, error, meta)``
* ``step-complete``: ``(key, meta)``, after success or error
* ``step-record``: ``(key, record_key, value, meta)``

Sync listeners run at once, on the step's own thread. An async listener is scheduled on the
running event loop, chained after the async listeners scheduled before it, so that they too see
each step's events in order (start; success or error; complete) even when they ``await``; with no
running loop it runs to completion at once. ``await listeners.drain()`` waits for the scheduled
ones (``Pipeline.track`` does, so its listeners have all run when it returns). A listener that
raises is logged once and does not affect the step or the user's code.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from pipelens._core import containment
from pipelens._core.errors import ConfigurationError

EVENTS = ("step-start", "step-success", "step-error", "step-complete", "step-record")

#: How long ``drain`` waits for async listeners before letting the program carry on.
DRAIN_TIMEOUT_S = 10.0


class Listeners:
    """Listeners by event name; one object is shared by every step of a pipeline's runs."""

    __slots__ = ("_by_event", "_failure", "_lock", "_tail", "_tasks")

    def __init__(self) -> None:
        self._by_event: dict[str, list[Callable[..., Any]]] = {}
        self._lock = threading.Lock()
        self._tail: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    def __bool__(self) -> bool:
        return bool(self._by_event)

    def add(self, event: str, listener: Callable[..., Any]) -> None:
        """Call ``listener`` on every ``event``; a wrong event name or listener raises at once."""
        if event not in EVENTS:
            raise ConfigurationError(
                f"on({event!r}, ...): unknown event; expected one of {', '.join(EVENTS)}"
            )
        if not callable(listener):
            raise TypeError(f"on({event!r}, {listener!r}): the listener must be callable")
        with self._lock:
            self._by_event.setdefault(event, []).append(listener)

    @property
    def pending(self) -> int:
        """How many scheduled awaitables have not finished yet."""
        return len(self._tasks)

    def emit(self, event: str, *args: Any) -> None:
        """Call every listener of ``event`` with ``args``; never raises (outside our own tests)."""
        for listener in tuple(self._by_event.get(event, ())):
            try:
                outcome = listener(*args)
                if inspect.isawaitable(outcome):
                    self.schedule(event, outcome)
            except Exception as exc:
                containment.internal_error(f"listener {event}", exc)

    def schedule(self, event: str, awaitable: Awaitable[Any]) -> None:
        """Await ``awaitable`` after those scheduled before it (at once with no running loop);
        what it raises is logged as ``listener <event>``."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # No loop here: run it now on a private loop (asyncio.run would also unset a loop
            # the program had set for this thread).
            private = asyncio.new_event_loop()
            try:
                private.run_until_complete(_guarded(event, None, awaitable))
            finally:
                private.close()
            return
        with self._lock:
            tail = self._tail
            if tail is not None and (tail.done() or tail.get_loop() is not loop):
                tail = None  # a listener of another event loop never blocks this one
            task = loop.create_task(_guarded(event, tail, awaitable))
            self._tail = task
            self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # Only our own tests (RAISE_INTERNAL) let a listener's error out of its task: keep it
        # for drain() to raise, which also spares asyncio's "exception was never retrieved".
        if not task.cancelled() and task.exception() is not None:
            self._failure = task.exception()

    async def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Wait (at most ``timeout`` seconds) for the async listeners scheduled on this loop."""
        loop = asyncio.get_running_loop()
        while pending := [t for t in tuple(self._tasks) if t.get_loop() is loop and not t.done()]:
            _done, still = await asyncio.wait(pending, timeout=timeout)
            if still:
                containment.warn_once(
                    "listeners.drain",
                    f"async step listeners still running after {timeout:g} s; not waiting",
                )
                break
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure


async def _guarded(
    event: str, previous: asyncio.Task[None] | None, awaitable: Awaitable[Any]
) -> None:
    """Await ``awaitable`` once ``previous`` is done, containing what it raises."""
    try:
        if previous is not None:
            await asyncio.wait((previous,))
        await awaitable
    except Exception as exc:
        containment.internal_error(f"listener {event}", exc)
    finally:
        # Cancelled before it could run: close the coroutine so it is not "never awaited".
        if inspect.iscoroutine(awaitable) and inspect.getcoroutinestate(awaitable) == (
            inspect.CORO_CREATED
        ):
            awaitable.close()

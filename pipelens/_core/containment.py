"""Containment of PipeLens's own failures: log once, never raise into the user's program."""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger("pipelens")

#: Our own test suite sets this so that a bug in PipeLens fails the test that hit it.
RAISE_INTERNAL = os.environ.get("PIPELENS_RAISE_INTERNAL_ERRORS") == "1"


class WarnOnce:
    """Logs a warning the first time it happens at each place; one instance, one memory.

    The module's own instance serves :func:`warn_once` and :func:`internal_error`; a transport
    keeps its own, so one transport's trouble does not silence another's.
    """

    __slots__ = ("_lock", "_seen")

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def first(self, where: str) -> bool:
        """Whether this is the first time at ``where`` (and remember it)."""
        with self._lock:
            first = where not in self._seen
            self._seen.add(where)
        return first

    def __call__(self, where: str, message: str, exc: BaseException | None = None) -> None:
        """Log ``message`` the first time at ``where`` (with ``exc``'s traceback, if given)."""
        if self.first(where):
            logger.warning("pipelens: %s", message, exc_info=exc)


_once = WarnOnce()


def internal_error(where: str, exc: BaseException) -> None:
    """Log an instrumentation failure the first time it happens at ``where``.

    Called from ``except`` blocks around instrumentation code; the user's program carries on.
    """
    if _once.first(where):
        logger.warning(
            "pipelens: internal error in %s (the program is unaffected; further errors "
            "here are not logged): %s: %s",
            where,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
    if RAISE_INTERNAL:
        raise exc


def warn_once(where: str, message: str) -> None:
    """Log a usage warning the first time it happens at ``where``."""
    _once(where, message)

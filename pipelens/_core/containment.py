"""Containment of PipeLens's own failures: log once, never raise into the user's program."""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger("pipelens")

_seen: set[str] = set()
_lock = threading.Lock()

#: Our own test suite sets this so that a bug in PipeLens fails the test that hit it.
RAISE_INTERNAL = os.environ.get("PIPELENS_RAISE_INTERNAL_ERRORS") == "1"


def internal_error(where: str, exc: BaseException) -> None:
    """Log an instrumentation failure the first time it happens at ``where``.

    Called from ``except`` blocks around instrumentation code; the user's program carries on.
    """
    with _lock:
        first = where not in _seen
        _seen.add(where)
    if first:
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
    with _lock:
        if where in _seen:
            return
        _seen.add(where)
    logger.warning("pipelens: %s", message)

"""Carry the current step into worker threads, so their steps nest under the submitting step.

Patched, only while ``configure(propagate_threads=True)`` (the default):

* ``ThreadPoolExecutor.submit`` (and so ``map``, ``loop.run_in_executor``, ``asyncio.to_thread``)
  runs each task in a copy of the submitter's context;
* ``threading.Thread.start`` hands the starter's context to the new thread.

Nothing is copied when no step is open, and long-lived service threads (the executor's own
workers, ``multiprocessing.pool.ThreadPool``'s, a transport's writer) never inherit a context:
their later work would otherwise nest under whichever step started them, and keep that step's
run alive.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import thread as _cf_thread
from contextvars import copy_context
from typing import Any

from pipelens._core.context import current_step_var

_original_submit = ThreadPoolExecutor.submit
_original_start = threading.Thread.start
_original_bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]
_CONTEXT_ATTR = "_pipelens_context"


def _submit(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
    if current_step_var.get() is None:
        return _original_submit(self, fn, *args, **kwargs)
    return _original_submit(self, copy_context().run, fn, *args, **kwargs)


def _outlives_steps(thread: threading.Thread) -> bool:
    """Threads that serve whoever comes later: a pool's workers, and our own service threads
    (a transport's writer, the HTTP sender: methods of PipeLens objects).

    Handing them the starter's context would nest later work under a stale step and keep that
    step's whole run alive as long as the thread lives.
    """
    target = getattr(thread, "_target", None)
    if target is _cf_thread._worker:
        return True
    # multiprocessing.pool.ThreadPool's workers and its handler threads serve every later task
    # (of later runs too); they are started lazily, by whichever step first used the pool.
    if getattr(target, "__module__", None) == "multiprocessing.pool":
        return True
    if type(thread).__module__.startswith("anyio."):  # to_thread's workers (Starlette, FastAPI)
        return True
    function = getattr(target, "__func__", None)  # a bound method
    return str(getattr(function, "__module__", "")).startswith("pipelens.")


def _start(self: threading.Thread) -> None:
    if current_step_var.get() is not None and not _outlives_steps(self):
        self.__dict__[_CONTEXT_ATTR] = copy_context()
    _original_start(self)


def _bootstrap_inner(self: threading.Thread) -> None:
    context = self.__dict__.pop(_CONTEXT_ATTR, None)
    if context is None:
        _original_bootstrap(self)
    else:
        context.run(_original_bootstrap, self)


def install() -> None:
    """Patch the thread entry points (idempotent)."""
    ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign,assignment]
    threading.Thread.start = _start  # type: ignore[method-assign]
    setattr(threading.Thread, "_bootstrap_inner", _bootstrap_inner)  # noqa: B010 - private, untyped


def uninstall() -> None:
    """Restore the original thread entry points (idempotent)."""
    ThreadPoolExecutor.submit = _original_submit  # type: ignore[method-assign]
    threading.Thread.start = _original_start  # type: ignore[method-assign]
    setattr(threading.Thread, "_bootstrap_inner", _original_bootstrap)  # noqa: B010 - private, untyped


def installed() -> bool:
    """Whether the patches are in place."""
    return ThreadPoolExecutor.submit is _submit

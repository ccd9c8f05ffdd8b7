"""Carry the current step into worker threads, so their steps nest under the submitting step.

Patched, only while ``configure(propagate_threads=True)`` (the default):

* ``ThreadPoolExecutor.submit`` (and so ``map``, ``loop.run_in_executor``, ``asyncio.to_thread``)
  runs each task in a copy of the submitter's context;
* ``threading.Thread.start`` hands the starter's context to the new thread;
* ``multiprocessing.pool.ThreadPool``'s submissions (``apply``, ``map``, ``starmap``, ``imap``
  and their ``_async`` forms) run each task in a copy of the submitter's context. The module is
  patched once something has imported it (found in ``sys.modules`` when we install or when a
  thread starts, as a pool's workers do at its creation): importing it ourselves would add a
  quarter of a second to ``import pipelens``.

Nothing is copied when no step is open, and long-lived service threads (the executor's own
workers, ``multiprocessing.pool.ThreadPool``'s, a transport's writer) never inherit a context:
their later work would otherwise nest under whichever step started them, and keep that step's
run alive.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import thread as _cf_thread
from contextvars import copy_context
from typing import Any

from pipelens._core.context import current_step_var

_original_submit = ThreadPoolExecutor.submit
_original_start = threading.Thread.start
_original_bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]
_CONTEXT_ATTR = "_pipelens_context"
#: The ``Pool`` methods every ``ThreadPool`` submission goes through; each takes the task first.
_POOL_METHODS = ("apply_async", "_map_async", "imap", "imap_unordered")


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


def _in_submitter_context(fn: Callable[..., Any]) -> Callable[..., Any]:
    context = copy_context()

    def task(*args: Any, **kwargs: Any) -> Any:
        # A copy per call: one map's tasks run at once in several workers, and a context can
        # only be entered by one thread at a time.
        return context.copy().run(fn, *args, **kwargs)

    return task


def _carrying(original: Callable[..., Any]) -> Callable[..., Any]:
    def submit(self: Any, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if current_step_var.get() is not None:
            func = _in_submitter_context(func)
        return original(self, func, *args, **kwargs)

    submit.__name__ = original.__name__
    submit.__doc__ = original.__doc__
    return submit


def _patch_thread_pool() -> None:
    """Patch ``ThreadPool`` (not the process ``Pool``: its tasks are pickled) if its module is
    loaded and it is not patched yet."""
    module = sys.modules.get("multiprocessing.pool")
    pool = getattr(module, "ThreadPool", None)
    if pool is None or "apply_async" in pool.__dict__:
        return
    for name in _POOL_METHODS:
        setattr(pool, name, _carrying(getattr(pool, name)))


def _unpatch_thread_pool() -> None:
    pool = getattr(sys.modules.get("multiprocessing.pool"), "ThreadPool", None)
    if pool is not None and "apply_async" in pool.__dict__:
        for name in _POOL_METHODS:
            delattr(pool, name)


def _start(self: threading.Thread) -> None:
    _patch_thread_pool()  # a pool starts its workers when it is made, before any submission
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
    _patch_thread_pool()
    ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign,assignment]
    threading.Thread.start = _start  # type: ignore[method-assign]
    setattr(threading.Thread, "_bootstrap_inner", _bootstrap_inner)  # noqa: B010 - private, untyped


def uninstall() -> None:
    """Restore the original thread entry points (idempotent)."""
    _unpatch_thread_pool()
    ThreadPoolExecutor.submit = _original_submit  # type: ignore[method-assign]
    threading.Thread.start = _original_start  # type: ignore[method-assign]
    setattr(threading.Thread, "_bootstrap_inner", _original_bootstrap)  # noqa: B010 - private, untyped


def installed() -> bool:
    """Whether the patches are in place."""
    return ThreadPoolExecutor.submit is _submit

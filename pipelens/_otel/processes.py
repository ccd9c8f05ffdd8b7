"""Carry the current step into worker processes, so their steps nest under the submitting step.

Threads share the program's memory, so ``pipelens._core.propagation`` hands them the current
step itself; a worker process has only what is pickled to it. So a task submitted inside a step
is wrapped in a :class:`Task` that carries the submitting step's run id, step id and key, the
other vendors' ``tracestate`` entries its run received (its outgoing requests pass them on, so
the worker's do too), and a recipe of the run's transport
(:meth:`HttpTransport.worker_recipe`: the same server, token and spool) with the capture
settings of the parent. In the worker the task builds that transport
once per process, and any run's root the task opens (a ``@step`` called with no step current)
continues the parent's run under the submitting step, as ``continue_run`` does across HTTP:
keys ``{parent key}.{name}___{step id}``, no ``RunStarted``/``RunFinished`` (the run is the
parent's), OTel spans started in them nested under them (``bridge.follow_otel``). Before the
task answers, the worker's transport is flushed: a pool may end its workers with
``terminate()`` (``multiprocessing.Pool``'s ``with`` block does) as soon as the last answer is
in, and a finished parent run then finds its workers' steps already sent.

Patched once the program calls ``pipelens.auto_patch()`` or ``configure(propagate_processes=True)``
(never at ``import pipelens``), each when its module is imported (a post-import hook: importing
``multiprocessing`` ourselves would slow every program); ``configure(propagate_processes=False)``
turns it off again:

* ``concurrent.futures.ProcessPoolExecutor.submit`` (and so ``map``, ``loop.run_in_executor``);
* ``multiprocessing.Pool``'s submissions (``apply``, ``map``, ``starmap``, ``imap`` and their
  ``_async`` forms; ``ThreadPool`` is the thread propagation's);
* ``multiprocessing.Process.start`` with a ``target``, or of a subclass with its own ``run()``
  (fork, spawn and forkserver alike).

Nothing is wrapped outside a step, or when the run's transport cannot be rebuilt in another
process (an in-memory transport, a user's own class): the task then runs as it always did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import wrapt

from pipelens._core import containment
from pipelens._core.context import current_step_var
from pipelens._core.settings import settings
from pipelens._core.sink import Transport
from pipelens._core.step import task_parent
from pipelens._otel.bridge import follow_otel
from pipelens._transports import combine, parts_of

#: The capture settings a worker takes from its parent with each task.
_CARRIED = (
    "enabled",
    "capture_args",
    "capture_result",
    "redact",
    "redact_key_re",
    "max_value_bytes",
    "max_records",
)
#: ``Pool`` methods every process-pool submission goes through; each takes the task first.
_POOL_METHODS = ("apply_async", "_map_async", "imap", "imap_unordered")
#: Modules whose processes serve every later task (pool workers, managers, the resource
#: tracker): they never carry the step that happened to start them.
_SERVICE_MODULES = ("multiprocessing.", "concurrent.futures.")

Recipe = tuple[Callable[[], Transport], ...]

#: This process's transports, by the recipe they were built from (one per parent transport).
_built: dict[str, Transport] = {}
_built_lock = threading.Lock()


class Task:
    """A callable sent to a worker process with the step that submitted it (picklable when
    ``fn`` is: a module-level function, a ``@step`` of one)."""

    __slots__ = ("fn", "parent", "recipe", "settings", "tracestate")

    def __init__(
        self,
        fn: Callable[..., Any],
        parent: tuple[str, str, str],
        recipe: Recipe,
        carried: tuple[Any, ...],
        tracestate: tuple[str, ...] = (),
    ) -> None:
        self.fn = fn
        self.parent = parent
        self.recipe = recipe
        self.settings = carried
        self.tracestate = tracestate

    def __getstate__(self) -> tuple[Any, ...]:
        return self.fn, self.parent, self.recipe, self.settings, self.tracestate

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.fn, self.parent, self.recipe, self.settings, self.tracestate = state

    def __repr__(self) -> str:
        return f"<pipelens Task {self.fn!r} under step {self.parent[1]}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            transport = self._prepare()
        except Exception as exc:
            containment.internal_error("processes.task", exc)
            return self.fn(*args, **kwargs)
        # The task's steps open through ``task_parent``, never asking the bridge for an OTel
        # parent: wrap OTel's context here so OTel spans they start nest under them.
        follow_otel()
        # Forked, this process holds a copy of the parent's current step: not ours to extend.
        token = current_step_var.set(None)
        before = getattr(task_parent, "value", None)
        task_parent.value = (*self.parent, transport, self.tracestate)
        try:
            return self.fn(*args, **kwargs)
        finally:
            task_parent.value = before
            current_step_var.reset(token)
            try:
                transport.flush(settings.exit_timeout)
            except Exception as exc:
                containment.internal_error("processes.flush", exc)

    def _prepare(self) -> Transport:
        for name, value in zip(_CARRIED, self.settings, strict=True):
            setattr(settings, name, value)
        key = repr(self.recipe)
        with _built_lock:
            transport = _built.get(key)
            if transport is None:
                transport = combine(*(make() for make in self.recipe))
                assert transport is not None  # a recipe is never empty
                _built[key] = transport
        return transport


def _recipe(transport: Transport | None) -> Recipe:
    """How a worker builds the parts of ``transport`` it can (none: nothing crosses)."""
    recipes = (getattr(part, "worker_recipe", None) for part in parts_of(transport))
    return tuple(r for r in (make() for make in recipes if make is not None) if r is not None)


def carrying(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as a :class:`Task` of the current step, or ``fn`` itself when nothing is to carry."""
    if not settings.propagate_processes or isinstance(fn, Task):
        return fn
    step = current_step_var.get()
    if step is None:
        return fn
    try:
        recipe = _recipe(step.run.transport)
        if not recipe:
            return fn
        carried = tuple(getattr(settings, name) for name in _CARRIED)
        parent = (step.run.id, step.id, step.key)
        return Task(fn, parent, recipe, carried, step.run.remote_tracestate)
    except Exception as exc:
        containment.internal_error("processes.wrap", exc)
        return fn


def _patch_executor(module: Any) -> None:
    executor = module.ProcessPoolExecutor
    original = executor.submit

    def submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return original(self, carrying(fn), *args, **kwargs)

    submit.__doc__ = original.__doc__
    executor.submit = submit


def _patch_pool(module: Any) -> None:
    pool, thread_pool = module.Pool, module.ThreadPool

    def patched(original: Callable[..., Any]) -> Callable[..., Any]:
        def submit(self: Any, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(self, thread_pool):  # its tasks stay in this process
                func = carrying(func)
            return original(self, func, *args, **kwargs)

        submit.__name__ = original.__name__
        submit.__doc__ = original.__doc__
        return submit

    for name in _POOL_METHODS:
        setattr(pool, name, patched(getattr(pool, name)))


def _ours(fn: object) -> bool:
    """Whether ``fn`` is the user's (not of the modules whose processes serve every task)."""
    return not str(getattr(fn, "__module__", "")).startswith(_SERVICE_MODULES)


def _patch_process(module: Any) -> None:
    process = module.BaseProcess
    original, base_run = process.start, process.run

    def start(self: Any) -> None:
        run = type(self).run
        if run is not base_run and _ours(run):
            # A subclass's own run(): it is what the child calls (a target, if any, only
            # through it), so it is the task. Set on the instance while the child is made
            # (forked, or pickled for spawn: unpickled, the task's bound method finds the
            # class's run, the instance's being set after it), then taken off again.
            task = carrying(self.run)
            if isinstance(task, Task):
                self.run = task
                try:
                    original(self)
                finally:
                    del self.run
                return
        target = getattr(self, "_target", None)
        if target is not None and _ours(target):
            self._target = carrying(target)
        original(self)

    start.__doc__ = original.__doc__
    process.start = start


_installed = False


def install() -> None:
    """Patch the process entry points when (or once) their modules are imported (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    wrapt.register_post_import_hook(_patch_executor, "concurrent.futures.process")
    wrapt.register_post_import_hook(_patch_pool, "multiprocessing.pool")
    wrapt.register_post_import_hook(_patch_process, "multiprocessing.process")

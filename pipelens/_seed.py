"""The seed's explicit API on top of the context-variable core.

``Pipeline``, ``await pipeline.track(fn)``, ``await st.step(name, fn)``, ``await st.record(k, v)``,
``with_step(name)``, listeners and the ``output_*`` views behave as in the seed's Python library,
so its examples run with only the import line changed. Every step opened here is also the current
step, so ``@step`` functions called inside nest under it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, TypeVar

import msgspec
import wrapt

from pipelens._capture import short_repr
from pipelens._decorator import _Spec
from pipelens._errors import ConfigurationError, PipelensError
from pipelens._listeners import Listeners
from pipelens._step import Run, Step, _current, open_run, open_step, sanitize_name
from pipelens._transport import Transport

F = TypeVar("F", bound=Callable[..., Any])
AutoSave = Literal["real_time", "finish", "off"]


class _Meta(msgspec.Struct, kw_only=True):
    def model_dump(self) -> dict[str, Any]:
        """Plain ``dict`` form, as the seed's pydantic models gave."""
        out: dict[str, Any] = msgspec.to_builtins(self, enc_hook=short_repr)
        return out


class TimeMeta(_Meta, kw_only=True):
    """Epoch milliseconds, as in the seed (``endTs``/``timeUsageMs`` are ``None`` while running)."""

    startTs: int  # noqa: N815 - the seed's field names
    endTs: int | None = None  # noqa: N815
    timeUsageMs: int | None = None  # noqa: N815


class StepMeta(_Meta, kw_only=True):
    """The seed's view of one step."""

    name: str
    key: str
    time: TimeMeta
    records: dict[str, Any] = {}
    result: Any = None
    error: str | None = None


class NestedStepMeta(StepMeta, kw_only=True):
    """A step with its substeps, as ``output_nested()`` returns it."""

    substeps: list[NestedStepMeta] = []


class PipelineMeta(StepMeta, kw_only=True):
    """A run as the seed reported it: the root's meta plus the flattened steps."""

    logVersion: int = 1  # noqa: N815
    runId: str  # noqa: N815
    steps: list[StepMeta] = []


def time_meta(step: Step) -> TimeMeta:
    start = step.start_ns // 1_000_000
    if step.end_ns is None or step.duration_ns is None:
        return TimeMeta(startTs=start)
    return TimeMeta(
        startTs=start, endTs=step.end_ns // 1_000_000, timeUsageMs=step.duration_ns // 1_000_000
    )


def step_meta(step: Step) -> StepMeta:
    """The seed's ``StepMeta`` of ``step``."""
    return StepMeta(
        name=step.name,
        key=step.key,
        time=time_meta(step),
        records=dict(step.records),
        result=step.result,
        error=None if step.error is None else step.error.message,
    )


def output_nested(step: Step) -> NestedStepMeta:
    """``step`` and its descendants as nested metas."""
    meta = step_meta(step)
    return NestedStepMeta(
        name=meta.name,
        key=meta.key,
        time=meta.time,
        records=meta.records,
        result=meta.result,
        error=meta.error,
        substeps=[output_nested(child) for child in list(step.children)],
    )


def output_flattened(step: Step) -> list[StepMeta]:
    """``step`` and its descendants, depth first, as flat metas."""
    return [step_meta(s) for s in step.walk()]


def output_pipeline_meta(run: Run) -> PipelineMeta:
    """The seed's ``PipelineMeta`` of a run (``logVersion: 1``)."""
    meta = step_meta(run.root)
    return PipelineMeta(
        name=meta.name,
        key=meta.key,
        time=meta.time,
        records=meta.records,
        result=meta.result,
        error=meta.error,
        runId=run.id,
        steps=output_flattened(run.root),
    )


async def run_child(parent: Step, name: str, fn: Callable[[Step], Any]) -> Any:
    """The seed's ``await st.step(name, fn)``: ``fn(child)`` as a child step of ``parent``."""
    child = open_step(sanitize_name(name), parent=parent)
    token = _current.set(child)
    try:
        result = fn(child)
        if inspect.isawaitable(result):
            result = await result
    except BaseException as exc:
        _current.reset(token)
        child._fail(exc)
        raise
    _current.reset(token)
    child._succeed(result, True)
    return result


def with_step(name: str) -> Callable[[F], F]:
    """The seed's decorator: run the function as a step named ``name``.

    When the last positional argument is a :class:`Step`, the new step is its child and replaces
    it in the call (the seed's form). Without one, the step nests under the current step, like
    ``@step(name)``.
    """
    from pipelens._decorator import step as step_decorator

    step_name = sanitize_name(name)

    def decorator(fn: F) -> F:
        plain = step_decorator(step_name)(fn)
        spec = _Spec(getattr(fn, "__func__", fn), step_name, True, True, "step")
        is_async = inspect.iscoroutinefunction(getattr(fn, "__func__", fn))

        def open_child(
            instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[Step, tuple[Any, ...]]:
            child = open_step(step_name, spec.inputs(instance, args[:-1], kwargs), parent=args[-1])
            return child, (*args[:-1], child)

        async def call_async(
            wrapped: Any, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            child, args = open_child(instance, args, kwargs)
            token = _current.set(child)
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as exc:
                _current.reset(token)
                child._fail(exc)
                raise
            _current.reset(token)
            child._succeed(result, True)
            return result

        def wrapper(
            wrapped: Any, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if not (args and isinstance(args[-1], Step)):
                return (
                    plain(*args, **kwargs)
                    if instance is None
                    else plain.__get__(instance)(*args, **kwargs)
                )
            if is_async:
                return call_async(wrapped, instance, args, kwargs)
            child, args = open_child(instance, args, kwargs)
            token = _current.set(child)
            try:
                result = wrapped(*args, **kwargs)
            except BaseException as exc:
                _current.reset(token)
                child._fail(exc)
                raise
            _current.reset(token)
            child._succeed(result, True)
            return result

        decorated: F = wrapt.FunctionWrapper(fn, wrapper)  # type: ignore[assignment]
        return decorated

    return decorator


class RunScope:
    """``with pipeline.run() as run:`` / ``async with``: one explicit run of a pipeline."""

    __slots__ = ("_pipeline", "_root", "_run_id", "_token")

    def __init__(self, pipeline: Pipeline, run_id: str | None) -> None:
        self._pipeline = pipeline
        self._run_id = run_id
        self._root: Step | None = None

    def __enter__(self) -> Run:
        pipeline = self._pipeline
        root = self._root = pipeline._open(self._run_id)
        self._token = _current.set(root)
        return root.run

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        root = self._root
        if root is None:
            return
        self._root = None
        _current.reset(self._token)
        if exc is None:
            root._succeed(root.result, True)
        else:
            root._fail(exc)

    async def __aenter__(self) -> Run:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class Pipeline:
    """A named pipeline whose runs are opened explicitly (the seed's style).

    ``Pipeline(name, options)`` takes the seed's options dict (``run_id``, ``auto_save``,
    ``transport``) or the same as keywords. ``auto_save='off'`` sends nothing, ``'finish'`` sends
    only finished steps, ``'real_time'`` (the default when a transport is given) sends starts too.
    Without a transport, runs go to the one set by :func:`pipelens.configure`.
    """

    def __init__(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        auto_save: AutoSave | None = None,
        transport: Transport | None = None,
    ) -> None:
        opts = dict(options or {})
        unknown = set(opts) - {"run_id", "auto_save", "transport"}
        if unknown:
            raise ConfigurationError(
                f"Pipeline({name!r}, options): unknown option(s) {sorted(unknown)}; "
                "expected run_id, auto_save, transport"
            )
        self.name = sanitize_name(name)
        self.run_id: str | None = run_id if run_id is not None else opts.get("run_id")
        self.transport: Transport | None = (
            transport if transport is not None else opts.get("transport")
        )
        chosen = auto_save if auto_save is not None else opts.get("auto_save")
        if chosen not in (None, "real_time", "finish", "off"):
            raise ConfigurationError(
                f"Pipeline({name!r}): auto_save={chosen!r}; expected 'real_time', 'finish' or 'off'"
            )
        if chosen in ("real_time", "finish") and self.transport is None:
            raise ConfigurationError(
                f"Pipeline({name!r}): auto_save={chosen!r} needs a transport; "
                "pass transport=... or configure one with pipelens.configure()"
            )
        self.auto_save: AutoSave = chosen or "real_time"
        self._listeners = Listeners()
        self._last_run: Run | None = None
        self._runs_opened = 0

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r}>"

    def on(self, event: str, listener: Callable[..., Any]) -> Pipeline:
        """Call ``listener`` on every step event of this pipeline's runs (see the seed's events)."""
        self._listeners.add(event, listener)
        return self

    def _open(self, run_id: str | None) -> Step:
        if run_id is None and self._runs_opened == 0:
            run_id = self.run_id  # the constructor's id names the first run only
        self._runs_opened += 1
        transport = self.transport
        if self.auto_save == "off":
            transport = _Discard()
        root = open_run(
            self.name, run_id, transport, self._listeners, send_starts=self.auto_save != "finish"
        )
        self._last_run = root.run
        return root

    def run(self, run_id: str | None = None) -> RunScope:
        """Open a run (``with pipeline.run() as run:`` or ``async with``); yields the Run."""
        return RunScope(self, run_id)

    async def track(self, fn: Callable[[Step], Awaitable[Any] | Any]) -> Any:
        """Run ``fn(root_step)`` as one run of this pipeline and return its result."""
        async with self.run() as run:
            result = fn(run.root)
            if inspect.isawaitable(result):
                result = await result
            run.root.result = result
            return result

    @property
    def last_run(self) -> Run:
        """The run opened most recently."""
        if self._last_run is None:
            raise PipelensError(
                f"pipeline {self.name!r} has not run yet; call track(fn) or use "
                "'with pipeline.run():' first"
            )
        return self._last_run

    def get_run_id(self) -> str:
        """The id of the last run (or the id the next run will take)."""
        if self._last_run is not None:
            return self._last_run.id
        if self.run_id is None:
            import uuid

            self.run_id = str(uuid.uuid4())
        return self.run_id

    def output_nested(self) -> NestedStepMeta:
        return output_nested(self.last_run.root)

    def output_flattened(self) -> list[StepMeta]:
        return output_flattened(self.last_run.root)

    def output_pipeline_meta(self) -> PipelineMeta:
        return output_pipeline_meta(self.last_run)

    def __getattr__(self, name: str) -> Any:
        # Everything else a seed user called on the pipeline (its root step): get_key(),
        # get_records(), gantt_quickchart(), ... is the last run's root step's.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.last_run.root, name)


class _Discard:
    """The transport of ``auto_save='off'``: nothing leaves the process."""

    def send(self, event: Any) -> bool:
        return True

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        return None

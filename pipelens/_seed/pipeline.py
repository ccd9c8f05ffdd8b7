"""The seed's ``Pipeline`` on top of the context-variable core.

``Pipeline``, ``await pipeline.track(fn)``, ``with pipeline.run():``, listeners and the
``output_*`` views behave as in the seed's Python library (``st.step`` and ``with_step`` live in
:mod:`pipelens._seed.steps`), so its examples run with only the import line changed. A run's root
step is the current step inside it, so ``@step`` functions called there nest under it.

Where we differ on purpose: each run of a pipeline is a new :class:`~pipelens.Run` with its own
id (the seed re-ran one step object under one id), and a ``with_step`` function called without a
trailing ``Step`` nests under the current step instead of raising ``TypeError``.
"""

from __future__ import annotations

import inspect
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal

import msgspec

from pipelens._core.capture import capture_record
from pipelens._core.context import current_step_var
from pipelens._core.done import Done
from pipelens._core.errors import ConfigurationError, PipelensError
from pipelens._core.listeners import Listeners
from pipelens._core.settings import settings
from pipelens._core.step import Run, Step, StepScope, open_run, run_child, sanitize_name
from pipelens._core.views import (
    NestedStepMeta,
    PipelineMeta,
    StepMeta,
    TimeMeta,
    output_flattened,
    output_nested,
    output_pipeline_meta,
    pipeline_meta,
)
from pipelens._core.who import Who, who_of
from pipelens._seed.steps import with_step
from pipelens._seed.transport import SeedTransport, SeedTransportAdapter, is_seed_transport
from pipelens._transports import Transport

AutoSave = Literal["real_time", "finish", "off"]
_AUTO_SAVE = ("real_time", "finish", "off")
_OPTIONS = ("run_id", "auto_save", "transport")

__all__ = [
    "NestedStepMeta",
    "Pipeline",
    "PipelineMeta",
    "RunScope",
    "StepMeta",
    "TimeMeta",
    "run_child",
    "with_step",
]


class RunScope(StepScope[Run]):
    """``with pipeline.run() as run:`` / ``async with``: one explicit run of a pipeline.

    The run's root step is the current step inside the block; it ends with the block, failed
    when an exception leaves it (the exception passes through unchanged).
    """

    __slots__ = ("_pipeline", "_run_id", "_who")

    def __init__(self, pipeline: Pipeline, run_id: str | None, who: Who | None = None) -> None:
        self._pipeline = pipeline
        self._run_id = run_id
        self._who = who

    def _open(self) -> Step:
        return self._pipeline._open(self._run_id, self._who)

    def _close(self, step: Step, exc: BaseException | None) -> None:
        if exc is None:
            step._succeed(step.result, True)
        else:
            step._fail(exc)

    def __enter__(self) -> Run:
        if getattr(self, "_step", None) is not None:
            raise PipelensError(
                f"this run of pipeline {self._pipeline.name!r} is already open; "
                "call pipeline.run() again for another run"
            )
        root = self._enter()
        if root is None:  # PipeLens failed (logged): the block still needs a run to hold
            root = open_run(self._pipeline.name, None, _DISCARD, None)
        return root.run

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        step = getattr(self, "_step", None)
        await super().__aexit__(exc_type, exc, tb)
        await self._pipeline._listeners.drain()
        if step is not None and isinstance(step.run.transport, SeedTransportAdapter):
            await step.run.transport.drain()


class _Ready(Done["Pipeline"]):
    """What ``Pipeline.record`` returns before any run: awaitable and chainable like
    ``st.record(...)``."""

    __slots__ = ()

    def record(self, key: str, value: Any) -> Any:
        return self.value.record(key, value)


def _option(options: Mapping[str, Any], keyword: Any, name: str, where: str) -> Any:
    if name in options and keyword is not None:
        raise ConfigurationError(
            f"{where}: {name} is given both in options and as a keyword; give it once"
        )
    return keyword if keyword is not None else options.get(name)


class Pipeline:
    """A named pipeline whose runs are opened explicitly (the seed's style).

    ``Pipeline(name, options)`` takes the seed's options dict (``run_id``, ``auto_save``,
    ``transport``) or the same as keywords. ``run_id`` names the first run; later runs get new
    ids (or the one passed to :meth:`run`). ``auto_save='off'`` sends nothing, ``'finish'`` sends
    only finished steps, ``'real_time'`` (the default) sends starts too. Without a transport, runs
    go to the one set by :func:`pipelens.configure` (no configuration: nowhere).

    The seed's Pipeline was itself the root step; here the step methods (``record``, ``on``,
    ``get_key``, ``output_nested``, the charts, ...) act on the root step of the run in progress
    in the caller's context, else of the last run.
    """

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        auto_save: AutoSave | None = None,
        transport: Transport | SeedTransport | None = None,
        tags: Iterable[str] | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"Pipeline(name={name!r}): expected a non-empty str")
        where = f"Pipeline({name!r})"
        if options is None:
            options = {}
        elif not isinstance(options, Mapping):
            raise ConfigurationError(
                f"{where}: options must be a dict such as {{'run_id': 'r1'}}, not {options!r}"
            )
        unknown = sorted(str(k) for k in options if k not in _OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown option(s) {unknown}; expected {', '.join(_OPTIONS)}"
            )
        chosen_id = _option(options, run_id, "run_id", where)
        if chosen_id is not None and (not isinstance(chosen_id, str) or not chosen_id):
            raise ConfigurationError(f"{where}: run_id={chosen_id!r}; expected a non-empty str")
        explicit_save = _option(options, auto_save, "auto_save", where)
        chosen_save = "real_time" if explicit_save is None else explicit_save
        if chosen_save not in _AUTO_SAVE:
            raise ConfigurationError(
                f"{where}: auto_save={chosen_save!r}; expected 'real_time', 'finish' or 'off'"
            )
        chosen_transport = _option(options, transport, "transport", where)
        sink: Transport | None = chosen_transport
        if is_seed_transport(chosen_transport):  # the seed's initiate_run/.../finish_run
            sink = SeedTransportAdapter(chosen_transport, real_time=chosen_save != "finish")
        elif chosen_transport is not None and not isinstance(chosen_transport, Transport):
            raise ConfigurationError(
                f"{where}: transport={chosen_transport!r} has no send/flush/close methods; "
                "pass a pipelens.Transport such as MemoryTransport() or FileTransport(path)"
            )
        if (
            explicit_save in ("real_time", "finish")
            and (chosen_transport or settings.transport) is None
        ):
            raise ConfigurationError(
                f"{where}: auto_save={chosen_save!r} needs a transport (Transport must be "
                "provided when auto_save is enabled); pass transport=... "
                "or call pipelens.configure(...) first"
            )
        #: Every run's tags, user, session and metadata (each run may add its own).
        self._who = who_of(tags, user_id, session_id, metadata, where)
        self.name = name
        self._key = sanitize_name(name)
        self.auto_save: AutoSave = chosen_save  # type: ignore[assignment] # checked above
        self.transport: Transport | SeedTransport | None = chosen_transport
        self._sink = sink  # where runs send: the transport, or the adapter of a seed-style one
        self._first_run_id: str | None = chosen_id
        self._listeners = Listeners()
        self._runs: weakref.WeakSet[Run] = weakref.WeakSet()
        self._last_run: Run | None = None
        self._created_ms = time.time_ns() // 1_000_000
        self._pending_records: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r}>"

    # -- runs ----------------------------------------------------------------------------------

    def run(
        self,
        run_id: str | None = None,
        *,
        tags: Iterable[str] | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RunScope:
        """Open a run: ``with pipeline.run() as run:`` or ``async with``; gives the :class:`Run`.

        Args:
            run_id: the run's id (default: the constructor's ``run_id`` for the first run, else a
                new UUID).
            tags: tags of this run, added to the pipeline's.
            user_id: whose run it is (default: the pipeline's).
            session_id: the session (conversation) it belongs to (default: the pipeline's).
            metadata: entries merged over the pipeline's.
        """
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise ConfigurationError(f"{self!r}.run(run_id={run_id!r}): expected a non-empty str")
        who = who_of(tags, user_id, session_id, metadata, f"{self!r}.run")
        return RunScope(self, run_id, who)

    async def track(self, fn: Callable[[Step], Awaitable[Any] | Any]) -> Any:
        """Run ``fn(root_step)`` as one run of this pipeline and return its result.

        Async listeners have all run when it returns.
        """
        if not callable(fn):
            raise TypeError(f"{self!r}.track(fn): fn must be callable, not {fn!r}")
        async with self.run() as run:
            result = fn(run.root)
            if inspect.isawaitable(result):
                result = await result
            run.root.result = result
        return result

    def _open(self, run_id: str | None, extra: Who | None = None) -> Step:
        if run_id is None and self._last_run is None:
            run_id = self._first_run_id  # the constructor's id names the first run only
        transport = self._sink
        if self.auto_save == "off":
            transport = _DISCARD
        who = Who()
        for part in (self._who, extra):
            if part is not None:
                who.add_tags(part.tags)
                who.update(part.user_id, part.session_id, part.metadata)
        root = open_run(
            self.name,
            run_id,
            transport,
            self._listeners,
            send_starts=self.auto_save != "finish",
            who=who,
        )
        run = self._last_run = root.run
        self._runs.add(run)
        pending, self._pending_records = self._pending_records, {}
        for key, value in pending.items():  # recorded on the pipeline before it ran
            root.records[key] = value
            if root._records_json is None:
                root._records_json = {}
            root._records_json[key] = capture_record(key, value)
        return root

    def _run(self) -> Run | None:
        """The run of this pipeline open in the caller's context, else the last one."""
        current = current_step_var.get()
        if current is not None and current.run in self._runs:
            return current.run
        return self._last_run

    def _not_run_yet(self) -> str:
        return (
            f"pipeline {self.name!r} has not run yet; call 'await pipeline.track(fn)' or use "
            "'with pipeline.run():' first"
        )

    @property
    def root(self) -> Step:
        """The root step of the run in progress here, else of the last run."""
        run = self._run()
        if run is None:
            raise PipelensError(self._not_run_yet())
        return run.root

    @property
    def last_run(self) -> Run:
        """The run opened most recently."""
        if self._last_run is None:
            raise PipelensError(self._not_run_yet())
        return self._last_run

    def get_run_id(self) -> str:
        """The id of the run in progress here, else of the last run, else of the next run."""
        run = self._run()
        if run is not None:
            return run.id
        if self._first_run_id is None:
            self._first_run_id = str(uuid.uuid4())
        return self._first_run_id

    @property
    def run_id(self) -> str:
        """Same as :meth:`get_run_id`."""
        return self.get_run_id()

    # -- the seed's step methods, on the root step ----------------------------------------------

    def on(self, event: str, listener: Callable[..., Any]) -> Pipeline:
        """Call ``listener`` on every step event of this pipeline's runs (see the seed's events)."""
        self._listeners.add(event, listener)
        return self

    def record(self, key: str, value: Any) -> Any:
        """Record on the root step (before the first run: on the next run's root step)."""
        run = self._run()
        if run is not None:
            return run.root.record(key, value)
        self._pending_records[key] = value
        self._listeners.emit("step-record", self._key, key, value, self.get_step_meta())
        return _Ready(self)

    def log(self, key: str, value: Any) -> Any:
        """Deprecated in the seed: ``record``."""
        return self.record(key, value)

    def get_name(self) -> str:
        """The pipeline's name (its root step's name)."""
        return self.name

    def get_key(self) -> str:
        """The root step's key: the pipeline's name, a ``.`` in it as ``_``."""
        return self._key

    def get_records(self) -> dict[str, Any]:
        """The root step's records."""
        run = self._run()
        return self._pending_records if run is None else run.root.records

    def get_step_meta(self) -> StepMeta:
        """The root step's meta (before any run: a not-yet-started step)."""
        run = self._run()
        if run is not None:
            return run.root.get_step_meta()
        return StepMeta(
            name=self.name,
            key=self._key,
            time=TimeMeta(startTs=self._created_ms),
            records=dict(self._pending_records),
        )

    def get_time_meta(self) -> TimeMeta:
        """The root step's times."""
        return self.get_step_meta().time

    get_time = get_time_meta

    def output_nested(self) -> NestedStepMeta:
        """The run's steps, nested (the seed's ``NestedStepMeta``)."""
        run = self._run()
        if run is not None:
            return output_nested(run.root)
        return NestedStepMeta(**msgspec.structs.asdict(self.get_step_meta()))

    output_hierarchy = output_nested

    def output_flattened(self) -> list[StepMeta]:
        """The run's steps, depth first, the root first."""
        run = self._run()
        return [self.get_step_meta()] if run is None else output_flattened(run.root)

    def output_pipeline_meta(self) -> PipelineMeta:
        """The run as the seed reported it (``logVersion: 1``, ``runId``, flattened ``steps``)."""
        run = self._run()
        if run is not None:
            return output_pipeline_meta(run)
        meta = self.get_step_meta()
        return pipeline_meta(meta, self.get_run_id(), [meta])

    def __getattr__(self, name: str) -> Any:
        # The rest of the seed's step surface (st.step(), the chart calls, gantt_svg(), ...) is
        # the root step's.
        if name.startswith("_"):
            raise AttributeError(name)
        run = self._run()
        if run is None:  # an AttributeError, so that hasattr() and friends keep working
            raise AttributeError(f"{name!r} is the root step's, and {self._not_run_yet()}")
        return getattr(run.root, name)


class _Discard:
    """The transport of ``auto_save='off'``: nothing leaves the process."""

    scrubs_events = True  # nothing to scrub: nothing is kept

    def send(self, event: Any) -> bool:
        return True

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        return None


_DISCARD = _Discard()

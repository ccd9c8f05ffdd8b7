"""Steps and runs: the in-process tree and the events it emits.

The current step lives in :mod:`pipelens._core.context`; a step's run is ``step.run``.
Opening a step with no current step opens a run whose root is that step. Everything on the path
of a ``@step`` call is here, kept flat and allocation-light because it runs on every call.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import threading
import traceback
from asyncio import CancelledError
from collections.abc import Awaitable, Callable, Generator, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

import msgspec

from pipelens._core import clock, containment
from pipelens._core.capture import (
    capture,
    capture_record,
    clean_text,
    encode,
    scrub_event,
    short_repr,
)
from pipelens._core.context import current_step_var
from pipelens._core.done import Done
from pipelens._core.listeners import EVENTS, Listeners
from pipelens._core.llm_record import LLMCall, ModelUsage, usage_by_model, usage_json
from pipelens._core.settings import settings
from pipelens._core.sink import Transport
from pipelens._core.views import StepViews
from pipelens._core.who import Who
from pipelens.events import (
    ErrorInfo,
    Event,
    FinalStatus,
    RunFinished,
    RunStarted,
    Status,
    StepFinished,
    StepStarted,
)

_perf_ns = clock.perf_ns
_WALL_OFFSET_NS = clock.WALL_OFFSET_NS
_MAX_MESSAGE = 2000
_MAX_TRACEBACK = 16_000

#: Exceptions that end a step as ``cancelled`` rather than ``failed``.
_CANCELLING = (CancelledError, KeyboardInterrupt, GeneratorExit)

T = TypeVar("T")


def sanitize_name(name: str) -> str:
    """A step name as it appears in keys: a ``.`` inside a name would fake a level (the name
    itself keeps its dots, as in the seed), and a lone surrogate (``os.fsdecode`` of a file
    name) could not be sent."""
    name = clean_text(name)
    return name.replace(".", "_") if "." in name else name


def error_info(exc: BaseException) -> ErrorInfo:
    """The type, message and traceback of ``exc``, bounded in size."""
    cls = type(exc)
    type_name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    try:
        message = str(exc)
    except Exception:
        message = short_repr(exc)
    try:
        tb = "".join(traceback.format_exception(exc))
    except Exception:
        tb = None
    if tb is not None and len(tb) > _MAX_TRACEBACK:
        tb = "...[truncated]\n" + tb[-_MAX_TRACEBACK:]
    return ErrorInfo(
        type=clean_text(type_name),
        message=clean_text(message[:_MAX_MESSAGE]),
        traceback=None if tb is None else clean_text(tb),
    )


def deliver(transport: Transport, event: Event, scrub: bool, where: str) -> bool:
    """Hand ``event`` to ``transport``, scrubbed here first when ``scrub`` (our batching
    transports scrub on their own thread; any other is handed events already scrubbed): a run's
    events, and a score of a run that is not the current one.

    Returns ``False`` when the transport dropped the event. Never raises: the transport's own
    error is contained and logged once, as ``where``, and is no drop of the event's.
    """
    try:
        if scrub:
            event = scrub_event(event)
        return transport.send(event) is not False
    except Exception as exc:
        containment.internal_error(where, exc)
        return True


class Run:
    """One execution of a pipeline: a root step, its tree, and where its events go.

    Runs are not kept anywhere once finished; hold the object (``pipelens.current_run()`` or
    ``with Pipeline(...).run() as run``) to read it afterwards.
    """

    __slots__ = (
        "__weakref__",
        "_announces_children",
        "_finished_sent",
        "_has_llm",
        "_listeners",
        "_otel_ids",
        "_owned",
        "_quiet",
        "_scrub_inline",
        "_send_starts",
        "_starts_asked",
        "_transport",
        "dropped_events",
        "id",
        "pipeline",
        "remote_parent_id",
        "remote_tracestate",
        "root",
        "step_count",
        "who",
    )

    def __init__(
        self,
        pipeline: str,
        run_id: str | None = None,
        transport: Transport | None = None,
        listeners: Listeners | None = None,
        *,
        send_starts: bool = True,
    ) -> None:
        self.id = run_id if run_id is not None else clock.new_run_id()
        self.pipeline = pipeline
        self._starts_asked = send_starts
        self.step_count = 0
        self.dropped_events = 0
        self._has_llm = False  # an LLM call was recorded: RunFinished carries the usage
        self._finished_sent = False
        #: The step (or OTel span) elsewhere that this run's root continues: see open_continued.
        self.remote_parent_id: str | None = None
        #: Other vendors' W3C ``tracestate`` entries received with that parent, passed on.
        self.remote_tracestate: tuple[str, ...] = ()
        #: The run's trace id as an int and its id as our tracestate writes it (``pipelens._otel
        #: .bridge``), made once for the contexts of all its steps.
        self._otel_ids: tuple[int, str] | None = None
        #: False for a part of a run another process owns: its start and end are the owner's.
        self._owned = True
        self.root: Step
        #: Tags, user, session and metadata (``pipelens.tag``/``set_run``), sent with the run.
        self.who = Who()
        self._connect(transport, listeners)

    def _connect(self, transport: Transport | None, listeners: Listeners | None) -> None:
        self._transport = transport
        self._listeners = listeners
        # Our batching transports scrub secrets on their own thread; any other one is handed
        # events already scrubbed.
        self._scrub_inline = not getattr(transport, "scrubs_events", False)
        # A transport that makes nothing of starts (an OTLP export: a span is a finished step)
        # is sent none, a step's inputs riding on its finish instead: half the events to build.
        self._send_starts = self._starts_asked and getattr(transport, "wants_starts", True)
        self._quiet = transport is None and listeners is None
        #: Whether a child step's start is news to anyone (a root's start always is: its run's).
        self._announces_children = (
            transport is not None and self._send_starts
        ) or listeners is not None

    @property
    def transport(self) -> Transport | None:
        """Where this run's events go (``None``: nowhere)."""
        return self._transport

    def __repr__(self) -> str:
        return f"<Run {self.pipeline!r} {self.id} {self.status}>"

    @property
    def status(self) -> Status:
        """The root step's status."""
        return self.root.status

    @property
    def start_ns(self) -> int:
        """Wall-clock start in nanoseconds since the epoch."""
        return self.root.start_ns

    @property
    def end_ns(self) -> int | None:
        """Wall-clock end, or ``None`` while running."""
        return self.root.end_ns

    @property
    def duration_ns(self) -> int | None:
        """Monotonic duration, or ``None`` while running."""
        return self.root.duration_ns

    def steps(self) -> list[Step]:
        """Every step of the run, depth first, the root first."""
        return list(self.root.walk())

    def step(self, key: str) -> Step:
        """The step with this key; ``KeyError`` names the keys there are when it is missing."""
        for s in self.root.walk():
            if s.key == key:
                return s
        keys = [s.key for s in self.root.walk()]
        raise KeyError(f"no step {key!r} in run {self.id}; keys: {keys}")

    def _emit(self, event: Event) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._scrub_inline:
            sent = deliver(transport, event, True, "transport.send")
        else:  # deliver's common case inlined (our transports scrub): a call less per event
            try:
                sent = transport.send(event) is not False
            except Exception as exc:
                containment.internal_error("transport.send", exc)
                sent = True
        if not sent:
            self.dropped_events += 1

    def _finished(self) -> None:
        self._finished_sent = True
        root = self.root
        assert root.end_ns is not None
        assert root.duration_ns is not None
        self._emit(
            RunFinished(
                run_id=self.id,
                pipeline=self.pipeline,
                start_ns=root.start_ns,
                end_ns=root.end_ns,
                duration_ns=root.duration_ns,
                status=root.status,  # type: ignore[arg-type]
                error=root.error,
                step_count=self.step_count,
                dropped_events=self.dropped_events,
                llm_usage=usage_json(root.walk()) if self._has_llm else None,
                **self.who.fields(),
            )
        )

    def llm_usage(self) -> dict[str, ModelUsage]:
        """LLM calls, tokens and cost of the whole run, by model."""
        return self.root.llm_usage()


_StructMeta = type(msgspec.Struct)
#: Builds a ``Step`` from all its fields, past the seed's constructor (the hot path's way).
_make: Callable[..., Step] = _StructMeta.__call__
#: The same, under the name the decorator's inlined child opening imports.
make_step = _make


class _StepType(_StructMeta):  # type: ignore[misc,valid-type] # msgspec's metaclass is untyped
    """``Step(name, parent=None, key=None, event_emitter=None)`` is the seed's constructor: a step
    not started yet, which ``await step.track(fn)`` runs (see :func:`standalone_step`)."""

    def __call__(
        self,
        name: str,
        parent: Step | None = None,
        key: str | None = None,
        event_emitter: Any = None,
    ) -> Step:
        return standalone_step(name, parent, key, event_emitter)


class Step(StepViews, msgspec.Struct, eq=False, weakref=True, metaclass=_StepType):
    """One step of a run. Created by ``@step``, ``span()``, or the seed-style ``st.step()``;
    ``Step(name)`` (optional ``parent``, ``key``, ``event_emitter``) makes one to run with
    ``await step.track(fn)``, as in the seed.

    Attributes:
        name: the step's own name; ``key`` is the dotted path (``root.child___1``).
        status: ``running``, ``completed``, ``failed`` or ``cancelled``.
        inputs: JSON text of the bound arguments (``None`` when not captured).
        result: the returned value itself; ``result_json`` is what was sent.
        records: the values passed to ``record()``, by key.
        error: the :class:`~pipelens.events.ErrorInfo` of a failed or cancelled step.
        llm: the :class:`~pipelens.LLMCall` of a ``kind="llm"`` step, else ``None``.
    """

    # A msgspec Struct is built in C: on every @step call that is several times faster than a
    # Python __init__ with as many attributes. Equality is identity (eq=False).
    name: str
    # The key: a child's is built when first read (see ``key``), most never are in-process.
    _key: str | None
    parent: Step | None
    run: Run
    inputs: str | None
    kind: str
    _n: int
    _t0: int
    start_ns: int
    #: The number among same-named siblings of a child whose key is built lazily (passed at
    #: creation: a store after it cost a setattr on most steps).
    _sib: int
    status: Status = "running"
    end_ns: int | None = None
    duration_ns: int | None = None
    result: Any = None
    result_json: str | None = None
    error: ErrorInfo | None = None
    # Containers are created on first use: most steps have no children and no records.
    _children: list[Step] | None = None
    _counters: dict[str, Iterator[int]] | None = None
    _keys: set[str] | None = None  # keys given to children, once a name could collide
    _records: dict[str, Any] | None = None
    _records_json: dict[str, str] | None = None
    #: The :class:`~pipelens.LLMCall` of a ``kind="llm"`` step.
    llm: LLMCall | None = None
    #: Made by ``Step(name)`` and not tracked yet.
    _unstarted: bool = False
    #: ``id``, written once read: a parent's is every child's ``parent_id``.
    _id: str | None = None
    #: The OpenTelemetry context naming this step, with the context it was made from
    #: (``pipelens._otel.bridge``): OTel-instrumented code asks for it several times a call.
    _otel_context: tuple[Any, Any] | None = None

    @property
    def key(self) -> str:
        """The dotted path of names from the run's root (``root.child___1``)."""
        key = self._key
        if key is None:  # a child's, built on first read: the f-string was 3.5 % of a step
            parent = self.parent
            assert parent is not None
            name = self.name
            segment = name.replace(".", "_") if "." in name else name
            n = self._sib
            # The parent's is built already but for its first child's: no property call then.
            prefix = parent._key or parent.key
            key = f"{prefix}.{segment}" if n == 0 else f"{prefix}.{segment}___{n}"
            self._key = key
        return key

    @property
    def id(self) -> str:
        """The step's id (unique within its run, and across processes in practice)."""
        found = self._id
        if found is None:
            # Its 8 bytes in hex, as f"{n:016x}" writes them (ids stay below 2**64: they count
            # up from a random 63-bit start), in 40 % of the time.
            found = self._id = self._n.to_bytes(8, "big").hex()
        return found

    @property
    def parent_id(self) -> str | None:
        """The parent step's id (for a run's root: the remote parent it continues, or ``None``)."""
        parent = self.parent
        return self.run.remote_parent_id if parent is None else parent.id

    @property
    def _pipelens_key(self) -> str:
        return self.key

    def __repr__(self) -> str:
        return f"<Step {self.key!r} {self.status}>"

    __str__ = __repr__

    @property
    def children(self) -> list[Step]:
        """The child steps, in the order they started."""
        children = self._children
        return [] if children is None else children

    @property
    def records(self) -> dict[str, Any]:
        """The values recorded on this step, by key (the dict itself: the seed mutated it)."""
        records = self._records
        if records is None:
            records = self._records = {}
        return records

    @property
    def records_json(self) -> str | None:
        """The records as one JSON object text (``None`` when there are none)."""
        parts = self._records_json
        if not parts:
            return None
        return "{" + ",".join(f"{capture(k)}:{v}" for k, v in parts.items()) + "}"

    def llm_usage(self) -> dict[str, ModelUsage]:
        """LLM calls, tokens and cost of this step and its descendants, by model."""
        return usage_by_model(self.walk())

    def walk(self) -> Generator[Step, None, None]:
        """This step and every descendant, depth first, in start order."""
        stack = [self]
        while stack:
            step = stack.pop()
            yield step
            if step._children:
                stack.extend(reversed(step._children))

    # -- the seed's explicit API ---------------------------------------------------------------

    @overload
    async def step(self, name: str, fn: Callable[[Step], Awaitable[T]]) -> T: ...
    @overload
    async def step(self, name: str, fn: Callable[[Step], T]) -> T: ...
    async def step(self, name: str, fn: Callable[[Step], Any]) -> Any:
        """Run ``fn(child)`` as a child step named ``name`` (``await st.step(name, fn)``)."""
        return await run_child(self, name, fn)

    async def track(self, fn: Callable[[Step], Any]) -> Any:
        """Run ``fn(self)`` as this step (the seed's ``await Step(name).track(fn)``).

        A step made by ``Step(name)`` starts here, as a new run's root or (given ``parent``) as a
        child of ``parent``; async listeners have all run when it returns. On any other step it
        runs ``fn`` as a child step named like this one.
        """
        if not callable(fn):
            raise TypeError(f"{self!r}.track(fn): fn must be callable, not {fn!r}")
        if not self._unstarted:
            return await run_child(self, self.name, fn)
        self._unstarted = False
        try:
            _start(self)
        except Exception as exc:
            containment.internal_error("step.track start", exc)
        try:
            return await await_in_step(self, _call(fn, self))
        finally:
            listeners = self.run._listeners
            if listeners:
                await listeners.drain()

    def on(self, event: str, listener: Callable[..., Any]) -> Step:
        """Listen to step events of this step's whole run (as the seed's shared emitter did)."""
        run = self.run
        listeners = run._listeners
        if listeners is None:
            listeners = Listeners()
            listeners.add(event, listener)  # validate before connecting anything
            run._connect(run.transport, listeners)
        else:
            listeners.add(event, listener)
        return self

    def record(self, key: str, value: Any) -> _Chain:
        """Record ``value`` under ``key`` on this step (also awaitable, as in the seed)."""
        if type(key) is not str or not key:  # the caller's mistake: say so, lose no other record
            raise TypeError(f"pipelens.record: the key must be a non-empty str, not {key!r}")
        try:
            records = self.records
            if key not in records and len(records) >= settings.max_records:
                containment.warn_once(
                    "record.max_records",
                    f"step {self.key!r} has {len(records)} records, the max_records limit; "
                    "later records are dropped (raise it with pipelens.configure(max_records=...))",
                )
                return _Chain(self)
            records[key] = value
            parts = self._records_json
            if parts is None:
                parts = self._records_json = {}
            parts[key] = capture_record(key, value)
            listeners = self.run._listeners
            if listeners:  # empty Listeners are falsy: build no meta for nobody
                listeners.emit("step-record", self.key, key, value, self.meta())
        except Exception as exc:
            containment.internal_error("record", exc)
        return _Chain(self)

    def _announce(self) -> None:
        """Emit the step's start (and its run's, for a root); only called for non-quiet runs."""
        run = self.run
        # A run's start goes out even to a transport that wants no starts (the OTLP export): one
        # event per run, and the root's span, sent before the run ends in another batch, takes
        # its pipeline and attributes from it. A run that asked for no starts (the seed's
        # ``auto_save="finish"``) gets none.
        if run._starts_asked and run._transport is not None and self.parent is None and run._owned:
            run._emit(
                RunStarted(
                    run_id=run.id,
                    pipeline=run.pipeline,
                    start_ns=self.start_ns,
                    **run.who.fields(),
                )
            )
        if run._send_starts and run._transport is not None:
            run._emit(
                StepStarted(
                    run_id=run.id,
                    step_id=self.id,
                    parent_id=self.parent_id,
                    key=self.key,
                    name=self.name,
                    kind=self.kind,
                    start_ns=self.start_ns,
                    inputs=self.inputs,
                )
            )
        listeners = run._listeners
        if listeners:  # empty Listeners are falsy: build no meta for nobody
            listeners.emit("step-start", self.key, self.meta())

    def _end(self, status: FinalStatus, exc: BaseException | None = None) -> None:
        duration = _perf_ns() - self._t0
        self.duration_ns = duration
        self.end_ns = self.start_ns + duration
        self.status = status
        if exc is not None:
            self.error = error_info(exc)
        run = self.run
        if run._quiet:
            return
        if run._transport is not None:
            run._emit(
                StepFinished(
                    run_id=run.id,
                    step_id=self.id,
                    parent_id=self.parent_id,
                    key=self.key,
                    name=self.name,
                    kind=self.kind,
                    start_ns=self.start_ns,
                    end_ns=self.end_ns,
                    duration_ns=duration,
                    status=status,
                    error=self.error,
                    result=self.result_json,
                    records=self.records_json if self._records_json else None,
                    inputs=None if run._send_starts else self.inputs,
                    llm=None if self.llm is None else self.llm.to_json(),
                )
            )
        listeners = run._listeners
        if listeners:  # empty Listeners are falsy: build no meta for nobody
            meta = self.meta()
            if exc is None:
                listeners.emit("step-success", self.key, self.result, meta)
            else:
                listeners.emit("step-error", self.key, exc, meta)
            listeners.emit("step-complete", self.key, meta)
        if (self.parent is None or run._finished_sent) and run._owned:
            # A step of a thread that outlived its run's root still counts: the run's end is
            # sent again with the new step count (the server keeps the latest).
            run._finished()

    def _succeed(self, result: Any, capture_result: bool) -> None:
        try:
            self.result = result
            if capture_result and settings.capture_result:
                try:  # capture(result)'s common case inlined: a call less on every step
                    data = encode(result)
                except Exception:
                    data = None
                if data is None or len(data) > settings.max_value_bytes:
                    self.result_json = capture(result)
                else:
                    self.result_json = data.decode()
            if self.run._quiet:  # the common in-process case, kept to a few stores
                duration = _perf_ns() - self._t0
                self.duration_ns = duration
                self.end_ns = self.start_ns + duration
                self.status = "completed"
            else:
                self._end("completed")
        except Exception as exc:
            containment.internal_error("step.finish", exc)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            # ``sys.exit(0)`` (or ``sys.exit()``) inside a step is the program ending normally.
            self._succeed(None, False)
            return
        try:
            self._end("cancelled" if isinstance(exc, _CANCELLING) else "failed", exc)
        except Exception as internal:
            containment.internal_error("step.fail", internal)

    def meta(self) -> Any:
        """The seed's ``StepMeta`` view of this step."""
        return self.get_step_meta()


class _Chain(Done[Step]):
    """What ``record()`` returns: awaitable (the seed's ``await st.record(...)``) and chainable."""

    __slots__ = ()

    def record(self, key: str, value: Any) -> _Chain:
        return self.value.record(key, value)


def open_step(
    name: str,
    inputs: str | None = None,
    *,
    parent: Step | None = None,
    kind: str = "step",
) -> Step:
    """Open a step under ``parent`` (default: the current step), or a new run when there is none."""
    if parent is None:
        parent = current_step_var.get()
    if parent is None:
        remote = getattr(task_parent, "value", None)
        if remote is not None:  # a task sent to this worker process by a step of another
            return open_continued(
                name,
                *remote[:3],
                owned=False,
                inputs=inputs,
                kind=kind,
                transport=remote[3],
                tracestate=remote[4],
            )
    if parent is None and root_parent is not None:
        remote = root_parent()
        if remote is not None:
            return open_continued(
                name,
                remote[0],
                remote[1],
                None,
                owned=True,
                inputs=inputs,
                kind=kind,
                tracestate=remote[2],
            )
    if parent is None:
        run = Run(name, transport=settings.transport)
        t0 = _perf_ns()
        step = run.root = _make(
            Step,
            name,
            sanitize_name(name),
            None,
            run,
            inputs,
            kind,
            next(clock.step_ids),
            t0,
            t0 + _WALL_OFFSET_NS,
            0,
        )
        run.step_count = 1
    else:
        step = new_child(parent, name, inputs, kind)
    if not step.run._quiet:
        step._announce()
    return step


#: Asked when a run's root step opens: ``(run id, parent span id, other vendors' tracestate
#: entries)`` of a parent outside PipeLens to open it under (an OTel span current in this
#: process), or ``None``. Set by ``pipelens._otel.bridge``; the core knows no OTel.
root_parent: Callable[[], tuple[str, str, tuple[str, ...]] | None] | None = None

#: ``.value``: ``(run id, step id, step key, transport, other vendors' tracestate entries of
#: its run)`` of the step in another process that submitted the task this thread runs (set
#: around the task by ``pipelens._otel.processes`` in a worker process), or absent: a run's
#: root opened meanwhile is that step's child instead.
task_parent = threading.local()


def new_child(parent: Step, name: str, inputs: str | None, kind: str) -> Step:
    """A running child of ``parent`` with the next free key among its siblings."""
    counters = parent._counters
    if counters is None:
        counters = parent._counters = {}
    counter = counters.get(name)
    if counter is None:
        counter = counters.setdefault(name, itertools.count())
        if "___" in name and parent._keys is None:  # could collide with an automatic key
            _remember_keys(parent)
    n = next(counter)  # atomic under the GIL: concurrent siblings never share a key
    key = None  # built when first read, from the parent's key, the name and n (Step.key)
    if parent._keys is not None:
        segment = name.replace(".", "_") if "." in name else name
        key = _unique_key(
            parent, f"{parent.key}.{segment}" if n == 0 else f"{parent.key}.{segment}___{n}"
        )
    run = parent.run
    t0 = _perf_ns()
    step = _make(
        Step,
        name,
        key,
        parent,
        run,
        inputs,
        kind,
        next(clock.step_ids),
        t0,
        t0 + _WALL_OFFSET_NS,
        n,
    )
    siblings = parent._children
    if siblings is None:
        siblings = parent._children = []
    siblings.append(step)
    run.step_count += 1
    return step


_keys_lock = threading.Lock()


def _remember_keys(parent: Step) -> None:
    """From now on ``parent`` remembers every key it gives: once a child's own name looks like
    an automatic key (``child___1``), an automatic key could collide with it."""
    with _keys_lock:
        if parent._keys is None:
            parent._keys = {child.key for child in parent.children}


def _unique_key(parent: Step, key: str) -> str:
    """``key``, or the first free ``key___N``, among the keys ``parent`` gave."""
    with _keys_lock:
        keys = parent._keys
        assert keys is not None
        if key in keys:
            n = 1
            while f"{key}___{n}" in keys:
                n += 1
            key = f"{key}___{n}"
        keys.add(key)
        return key


def open_run(
    pipeline: str,
    run_id: str | None = None,
    transport: Transport | None = None,
    listeners: Listeners | None = None,
    *,
    send_starts: bool = True,
    who: Who | None = None,
) -> Step:
    """Open a new run explicitly (the seed's ``Pipeline``), returning its root step.

    With no ``run_id`` given and no step current, a parent outside PipeLens (an OTel span
    current in this process, see :data:`root_parent`) is followed as ``open_step`` follows it:
    the run is that span's trace, its root under the span, with a part's key
    (``{pipeline}___{its id}``: several runs opened under one span are parts of one run).
    """
    remote = None
    if run_id is None and root_parent is not None and current_step_var.get() is None:
        remote = root_parent()
    run = Run(
        pipeline,
        run_id if remote is None else remote[0],
        transport if transport is not None else settings.transport,
        listeners,
        send_starts=send_starts,
    )
    if who is not None:
        run.who = who
    n = next(clock.step_ids)
    key = sanitize_name(pipeline)
    if remote is not None:
        run.remote_parent_id = remote[1]
        run.remote_tracestate = remote[2]
        key = _part_key(pipeline, n)
    t0 = _perf_ns()
    step = run.root = _make(
        Step,
        pipeline,
        key,
        None,
        run,
        None,
        "step",
        n,
        t0,
        t0 + _WALL_OFFSET_NS,
        0,
    )
    run.step_count = 1
    if not run._quiet:
        step._announce()
    return step


def open_continued(
    name: str,
    run_id: str,
    parent_id: str,
    parent_key: str | None,
    *,
    owned: bool,
    inputs: str | None = None,
    kind: str = "step",
    transport: Transport | None = None,
    tracestate: tuple[str, ...] = (),
) -> Step:
    """Open a step of run ``run_id`` under a parent in another process (or an OTel span).

    Its key is ``{parent_key}.{name}___{its own id}``, or ``{name}___{its own id}`` when the
    parent's key is unknown: the parent's process gives keys to its own children, so two parts
    opened under one parent (two requests from one step) need a suffix no other process can
    pick. ``owned=False`` (the run is another process's) sends no ``RunStarted``/``RunFinished``:
    the owner's say when the run started, ended and how it went. Events go to ``transport``,
    by default the configured one. ``tracestate``: the other vendors' entries that came with
    the parent, passed on by the run's outgoing requests.
    """
    run = Run(name, run_id=run_id, transport=transport or settings.transport)
    run.remote_parent_id = parent_id
    run.remote_tracestate = tracestate
    run._owned = owned
    n = next(clock.step_ids)
    segment = _part_key(name, n)
    t0 = _perf_ns()
    step = run.root = _make(
        Step,
        name,
        segment if parent_key is None else f"{parent_key}.{segment}",
        None,
        run,
        inputs,
        kind,
        n,
        t0,
        t0 + _WALL_OFFSET_NS,
        0,
    )
    run.step_count = 1
    if not run._quiet:
        step._announce()
    return step


def _part_key(name: str, n: int) -> str:
    """The key of a run's part opened under a parent elsewhere: its name and its own id, a
    suffix no other process (nor another part) can pick."""
    return f"{sanitize_name(name)}___{n:016x}"


def record(key: str, value: Any) -> None:
    """Record ``value`` under ``key`` on the current step. Outside a step it does nothing."""
    step = current_step_var.get()
    if step is None:
        containment.warn_once(
            "record.outside",
            f"pipelens.record({key!r}, ...) was called outside any step and is ignored; "
            "call it inside a function decorated with @pipelens.step",
        )
        return
    step.record(key, value)


def call_in_step(
    step: Step, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``fn(*args, **kwargs)`` with ``step`` current, ending the step with the outcome.

    ``@step``'s sync wrapper inlines the same lines: it runs on every call.
    """
    token = current_step_var.set(step)
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        current_step_var.reset(token)
        step._fail(exc)
        raise
    current_step_var.reset(token)
    step._succeed(result, True)
    return result


async def await_in_step(step: Step, awaitable: Awaitable[Any], capture_result: bool = True) -> Any:
    """Await ``awaitable`` with ``step`` current, ending the step with the outcome."""
    token = current_step_var.set(step)
    try:
        result = await awaitable
    except BaseException as exc:
        current_step_var.reset(token)
        step._fail(exc)
        raise
    current_step_var.reset(token)
    step._succeed(result, capture_result)
    return result


def check_name(name: object, where: str) -> str:
    """A step name given by the user (kept as given; keys sanitise it); ``TypeError`` names
    ``where``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"{where}: the step name must be a non-empty str, not {name!r}")
    return name


async def _call(fn: Callable[[Step], Any], step: Step) -> Any:
    result = fn(step)  # a sync fn runs here too, with the step current
    return (await result) if inspect.isawaitable(result) else result


def standalone_step(name: str, parent: Step | None, key: str | None, event_emitter: Any) -> Step:
    """The seed's ``Step(name, parent, key, event_emitter)``: a step that starts on ``track``.

    Its key is ``key``, else the parent's key and the sanitised name, as in the seed.
    ``event_emitter`` (a ``pyee`` emitter, or anything with ``emit(event, *args)``) receives the
    step events of its run, as the seed's shared emitter did.
    """
    step_name = check_name(name, f"Step({name!r})")
    if parent is not None and not isinstance(parent, Step):
        raise TypeError(f"Step({name!r}, parent={parent!r}): the parent must be a Step")
    if key is not None and (not isinstance(key, str) or not key):
        raise TypeError(f"Step({name!r}, key={key!r}): the key must be a non-empty str")
    if key is None:
        key = sanitize_name(step_name)
        if parent is not None:
            key = f"{parent.key}.{key}"
    t0 = _perf_ns()
    if parent is None:
        listeners = Listeners()
        run = Run(step_name, listeners=listeners)
        step = run.root = _make(
            Step,
            step_name,
            key,
            None,
            run,
            None,
            "step",
            next(clock.step_ids),
            t0,
            t0 + _WALL_OFFSET_NS,
            0,
        )
        run.step_count = 1
    else:
        run = parent.run
        listeners = run._listeners if run._listeners is not None else Listeners()
        step = _make(
            Step,
            step_name,
            key,
            parent,
            run,
            None,
            "step",
            next(clock.step_ids),
            t0,
            t0 + _WALL_OFFSET_NS,
            0,
        )
    if event_emitter is not None:
        emit = getattr(event_emitter, "emit", None)
        if not callable(emit):
            raise TypeError(f"Step({name!r}, event_emitter=...): expected an object with emit()")
        for event in EVENTS:
            listeners.add(event, functools.partial(emit, event))
    if run._listeners is not listeners:
        run._connect(run.transport, listeners)
    step._unstarted = True
    return step


def _start(step: Step) -> None:
    """Start a step made by ``Step(name)``: now is its start; a root also gets its transport."""
    t0 = _perf_ns()
    step._t0 = t0
    step.start_ns = t0 + _WALL_OFFSET_NS
    run = step.run
    parent = step.parent
    if parent is None:
        run._connect(settings.transport, run._listeners)
    else:
        siblings = parent._children
        if siblings is None:
            siblings = parent._children = []
        siblings.append(step)
        run.step_count += 1
    if not run._quiet:
        step._announce()


async def run_child(parent: Step, name: str, fn: Callable[[Step], Any]) -> Any:
    """The seed's ``await st.step(name, fn)``: ``fn(child)`` as a child step of ``parent``."""
    step_name = check_name(name, f"st.step({name!r}, fn)")
    if not callable(fn):
        raise TypeError(f"st.step({name!r}, fn): fn must be callable, not {fn!r}")

    try:
        child = open_step(step_name, parent=parent)
    except Exception as exc:
        containment.internal_error("st.step open", exc)
        return await _call(fn, parent)
    return await await_in_step(child, _call(fn, child))


class StepScope(Generic[T]):
    """What the ``with`` forms (``span``, ``llm_call``, ``Pipeline.run``) share: the step that
    :meth:`_open` returns is current inside the block and ends with the block's outcome.

    Subclasses give ``_open``, ``__enter__`` (which calls :meth:`_enter` and gives the block its
    ``T``) and, when a step ends differently, ``_close``; ``__exit__`` and the ``async with``
    forms are here. An instance serves one block at a time. Failures of PipeLens itself are
    contained: the block then runs without a step.
    """

    __slots__ = ("_previous", "_step", "_token")

    def __enter__(self) -> T:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc)

    async def __aenter__(self) -> T:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _open(self) -> Step:
        raise NotImplementedError

    def _close(self, step: Step, exc: BaseException | None) -> None:
        if exc is None:
            step._succeed(None, False)
        else:
            step._fail(exc)

    def _enter(self) -> Step | None:
        try:
            step = self._open()
        except Exception as exc:
            containment.internal_error(f"{type(self).__name__}.open", exc)
            self._step = None
            return None
        self._step = step
        self._previous = current_step_var.get()
        self._token = current_step_var.set(step)
        return step

    def _exit(self, exc: BaseException | None) -> None:
        step = getattr(self, "_step", None)
        if step is None:
            return
        self._step = None
        try:
            current_step_var.reset(self._token)
        except ValueError:
            # Left in another context than it was entered in (a block across a ``yield``, or
            # inside a task it started): put back what was current before, in this context too.
            current_step_var.set(self._previous)
        try:
            self._close(step, exc)
        except Exception as internal:
            containment.internal_error(f"{type(self).__name__}.close", internal)

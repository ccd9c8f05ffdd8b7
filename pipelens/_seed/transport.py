"""The seed's ``Transport``: an object with async ``initiate_run``, ``initiate_step``,
``finish_step`` and ``finish_run``, called with the seed's meta records.

Ours is an event sink (:class:`pipelens.Transport`: ``send``/``flush``/``close``). A seed-style
transport is wrapped in :class:`SeedTransportAdapter`, an event sink that turns a run's events
back into the seed's calls, so that a transport written for the seed is called as it was:

* ``real_time``: ``initiate_run`` and ``initiate_step`` at the root's start, ``initiate_step``
  at each step's start, ``finish_step`` at each step's end, ``finish_run`` with ``"completed"``
  or ``"failed"`` at the root's end;
* ``finish`` (a run sending no starts): ``finish_run`` only, with every step.

The calls are made in order, on the running event loop (at once when there is none); what they
raise is logged once and never reaches the program. The metas are built from the events, so they
hold the captured (and redacted) records and result, as any transport sees them.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from typing import Any, Literal

import msgspec

from pipelens._core import containment
from pipelens._core.listeners import Listeners
from pipelens._core.sink import Transport as EventSink
from pipelens._core.views import PipelineMeta, StepMeta, TimeMeta, pipeline_meta
from pipelens.events import Event, RunFinished, StepFinished, StepStarted

SEED_METHODS = ("initiate_run", "initiate_step", "finish_step", "finish_run")
RunStatus = Literal["completed", "failed", "running"]


class SeedTransport(ABC):
    """The seed's abstract transport; subclass it (or ``pipelens.transport.Transport``, as seed
    code does) and pass it as ``Pipeline(..., transport=...)`` or ``configure(transport=...)``."""

    @abstractmethod
    async def initiate_run(self, pipeline_meta: PipelineMeta) -> None:
        """A run started (``real_time`` only)."""

    @abstractmethod
    async def finish_run(self, pipeline_meta: PipelineMeta, status: RunStatus) -> None:
        """A run ended: its meta with every step, and ``"completed"`` or ``"failed"``."""

    @abstractmethod
    async def initiate_step(self, run_id: str, step: StepMeta) -> None:
        """A step started (``real_time`` only)."""

    @abstractmethod
    async def finish_step(self, run_id: str, step: StepMeta) -> None:
        """A step ended (``real_time`` only)."""


def is_seed_transport(obj: object) -> bool:
    """Whether ``obj`` is a seed-style transport: the seed's four methods and no ``send`` of
    its own (a subclass of our protocol inherits only its stub)."""
    if isinstance(obj, SeedTransportAdapter) or not all(
        callable(getattr(obj, name, None)) for name in SEED_METHODS
    ):
        return False
    send = getattr(type(obj), "send", None)
    return send is None or send is getattr(EventSink, "send", None)


class _Entry(msgspec.Struct):
    parent_id: str | None
    start_ns: int
    meta: StepMeta


def _decoded(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def _ms(ns: int) -> int:
    return ns // 1_000_000


def _meta(event: StepStarted | StepFinished) -> StepMeta:
    if isinstance(event, StepStarted):
        return StepMeta(name=event.name, key=event.key, time=TimeMeta(startTs=_ms(event.start_ns)))
    start, end = _ms(event.start_ns), _ms(event.end_ns)
    records = _decoded(event.records)
    return StepMeta(
        name=event.name,
        key=event.key,
        time=TimeMeta(startTs=start, endTs=end, timeUsageMs=end - start),
        records=records if isinstance(records, dict) else {},
        result=_decoded(event.result),
        error=None if event.error is None else event.error.message,
    )


class SeedTransportAdapter:
    """An event sink calling a seed-style transport (see the module's docstring)."""

    scrubs_events = False  # the run hands us events already scrubbed

    def __init__(self, seed: Any, *, real_time: bool = True) -> None:
        self.seed = seed
        self.real_time = real_time
        self._lock = threading.Lock()
        self._steps: dict[str, dict[str, _Entry]] = {}  # run id -> step id -> entry
        self._calls = Listeners()

    def __repr__(self) -> str:
        return f"<SeedTransportAdapter {self.seed!r}>"

    def send(self, event: Event) -> bool:
        try:
            if isinstance(event, StepStarted | StepFinished):
                self._step(event)
            elif isinstance(event, RunFinished):
                self._run_finished(event)
        except Exception as exc:
            containment.internal_error("seed transport", exc)
        return True

    def _step(self, event: StepStarted | StepFinished) -> None:
        meta = _meta(event)
        with self._lock:
            steps = self._steps.setdefault(event.run_id, {})
            steps[event.step_id] = _Entry(event.parent_id, event.start_ns, meta)
        if not self.real_time:
            return
        if isinstance(event, StepStarted):
            if event.parent_id is None:
                self._call("initiate_run", pipeline_meta(meta, event.run_id, [meta]))
            self._call("initiate_step", event.run_id, meta)
        else:
            self._call("finish_step", event.run_id, meta)

    def _run_finished(self, event: RunFinished) -> None:
        with self._lock:
            entries = self._steps.pop(event.run_id, {})
        children: dict[str | None, list[_Entry]] = {}
        for entry in sorted(entries.values(), key=lambda e: e.start_ns):
            children.setdefault(entry.parent_id, []).append(entry)
        by_meta = {id(entry.meta): step_id for step_id, entry in entries.items()}
        flattened: list[StepMeta] = []
        stack = list(reversed(children.get(None, [])))
        while stack:  # depth first, in start order: the seed's output_flattened()
            entry = stack.pop()
            flattened.append(entry.meta)
            stack.extend(reversed(children.get(by_meta[id(entry.meta)], [])))
        if not flattened:
            return
        status: RunStatus = "completed" if event.status == "completed" else "failed"
        self._call("finish_run", pipeline_meta(flattened[0], event.run_id, flattened), status)

    def _call(self, name: str, *args: Any) -> None:
        try:
            outcome = getattr(self.seed, name)(*args)
        except Exception as exc:
            containment.internal_error(f"seed transport {name}", exc)
            return
        if isinstance(outcome, Awaitable):
            self._calls.schedule(f"seed transport {name}", outcome)

    async def drain(self) -> None:
        """Wait for the calls scheduled on this event loop."""
        await self._calls.drain()

    def flush(self, timeout: float | None = None) -> bool:
        return not self._calls.pending

    def close(self, timeout: float | None = None) -> None:
        return None

"""How steps end (completed, failed, cancelled), containment of our own failures, and memory."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import pipelens
from pipelens._core import containment
from pipelens.events import Event
from pipelens.testing import CapturedEvents


class PipelineFailureError(Exception):
    """A user exception with a module of its own, to check the recorded type name."""


@pipelens.step
def double(x: int) -> int:
    return 2 * x


def test_completed_step_and_run(events: CapturedEvents) -> None:
    """A step that returns is ``completed`` with no error; so is the run it roots."""
    assert double(2) == 4
    step = events.step("double")
    assert (step.status, step.error) == ("completed", None)
    (run,) = events.runs()
    assert (run.status, run.error) == ("completed", None)
    assert step.start_ns <= step.end_ns
    assert step.end_ns - step.start_ns == step.duration_ns


def test_failed_step_records_type_message_and_traceback(events: CapturedEvents) -> None:
    """A raising step is ``failed`` with the error's full type name, message and traceback."""
    boom = PipelineFailureError("stage 2 broke")

    @pipelens.step
    def stage() -> None:
        raise boom

    with pytest.raises(PipelineFailureError) as caught:
        stage()

    assert caught.value is boom
    step = events.step("stage")
    assert step.error is not None
    expected_type = f"{PipelineFailureError.__module__}.PipelineFailureError"
    assert ("failed", expected_type, "stage 2 broke") == (
        step.status,
        step.error.type,
        step.error.message,
    )
    assert step.error.traceback is not None
    assert "raise boom" in step.error.traceback
    assert step.error.traceback.rstrip().endswith(f"{expected_type}: stage 2 broke")
    (run,) = events.runs()
    assert run.error is not None
    assert (run.status, run.error.message) == ("failed", "stage 2 broke")


def test_failure_propagates_through_every_enclosing_step(events: CapturedEvents) -> None:
    """An uncaught error fails each enclosing step; a step that catches it completes."""
    boom = KeyError("k")
    caught: list[KeyError] = []

    @pipelens.step
    def inner() -> None:
        raise boom

    @pipelens.step
    def middle() -> None:
        inner()

    @pipelens.step
    def catching() -> str:
        try:
            middle()
        except KeyError as exc:
            caught.append(exc)
            return "recovered"
        return "unreachable"

    assert catching() == "recovered"
    assert caught == [boom]
    assert [(s.key, s.status) for s in events.steps()] == [
        ("catching.middle.inner", "failed"),
        ("catching.middle", "failed"),
        ("catching", "completed"),
    ]


def test_exception_with_a_broken_str_is_recorded_and_reraised(events: CapturedEvents) -> None:
    """An exception whose ``__str__`` raises still fails the step and reaches the caller."""

    class UnprintableError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    boom = UnprintableError()

    @pipelens.step
    def raises() -> None:
        raise boom

    with pytest.raises(UnprintableError) as caught:
        raises()
    assert caught.value is boom
    step = events.step("raises")
    assert step.error is not None
    assert step.status == "failed"
    assert "UnprintableError" in step.error.message


def test_long_error_message_is_bounded(events: CapturedEvents) -> None:
    """A huge error message is cut to a bounded size on the step; the exception is untouched."""
    text = "x" * 50_000

    @pipelens.step
    def raises() -> None:
        raise ValueError(text)

    with pytest.raises(ValueError, match=r"^x+$") as caught:
        raises()
    assert text == str(caught.value)
    step = events.step("raises")
    assert step.error is not None
    assert len(step.error.message) == 2000


async def test_async_failure_reraises_the_same_object(events: CapturedEvents) -> None:
    """An async step's exception reaches the awaiting code as the same object."""
    boom = OSError("disk")

    @pipelens.step
    async def load() -> None:
        await asyncio.sleep(0)
        raise boom

    with pytest.raises(OSError, match="disk") as caught:
        await load()
    assert caught.value is boom
    assert events.step("load").status == "failed"


async def test_cancelling_a_task_cancels_its_steps(events: CapturedEvents) -> None:
    """Cancelling a task running a step ends it and its open children ``cancelled``."""
    started = asyncio.Event()

    @pipelens.step
    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()  # until cancelled

    @pipelens.step
    async def outer() -> None:
        await waits()

    task = asyncio.create_task(outer())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert task.cancelled()
    inner = events.step("outer.waits")
    assert inner.error is not None
    assert (inner.status, inner.error.type.rsplit(".", 1)[-1]) == ("cancelled", "CancelledError")
    assert events.step("outer").status == "cancelled"
    (run,) = events.runs()
    assert run.status == "cancelled"


def test_keyboard_interrupt_cancels_and_passes_through(events: CapturedEvents) -> None:
    """``KeyboardInterrupt`` ends the step ``cancelled`` and is re-raised as the same object."""
    interrupt = KeyboardInterrupt()

    @pipelens.step
    def interrupted() -> None:
        raise interrupt

    @pipelens.step
    def outer() -> None:
        interrupted()

    with pytest.raises(KeyboardInterrupt) as caught:
        outer()
    assert caught.value is interrupt
    assert [s.status for s in events.steps()] == ["cancelled", "cancelled"]
    assert [s.error.type for s in events.steps() if s.error] == ["KeyboardInterrupt"] * 2
    assert events.runs()[0].status == "cancelled"


def test_keyboard_interrupt_in_a_span_cancels_it(events: CapturedEvents) -> None:
    """A ``span`` left by ``KeyboardInterrupt`` is ``cancelled``."""
    with pytest.raises(KeyboardInterrupt), pipelens.span("block"):
        raise KeyboardInterrupt
    assert events.step("block").status == "cancelled"


# --- containment: our failures never reach the user's program -----------------------------


class RaisingTransport:
    """A transport whose ``send`` always fails."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, event: Event) -> bool:
        self.calls += 1
        raise ConnectionError("transport is down")

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        return None


@pytest.fixture
def contained(monkeypatch: pytest.MonkeyPatch) -> None:
    """Internal errors are logged and swallowed, as for users (our suite re-raises them)."""
    monkeypatch.setattr(containment, "RAISE_INTERNAL", False)
    monkeypatch.setattr(containment, "_once", containment.WarnOnce())


@pytest.mark.usefixtures("contained")
def test_raising_transport_does_not_break_the_program(caplog: pytest.LogCaptureFixture) -> None:
    """With a transport that raises on every event, steps still return and raise as usual."""
    transport = RaisingTransport()
    pipelens.configure(transport=transport)

    @pipelens.step
    def outer() -> int:
        pipelens.record("n", 1)
        return double(21)

    with caplog.at_level(logging.WARNING, logger="pipelens"):
        assert outer() == 42
        assert outer() == 42
        with pytest.raises(PipelineFailureError, match="still mine"), pipelens.span("s"):
            raise PipelineFailureError("still mine")

    assert transport.calls > 6
    logged = [r.getMessage() for r in caplog.records if r.name == "pipelens"]
    assert len(logged) == 1
    assert "transport is down" in logged[0]


@pytest.mark.usefixtures("contained")
async def test_raising_listeners_do_not_break_the_program(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Listeners (sync and async) that raise on every event leave results and errors intact."""

    calls: list[tuple[str, str]] = []

    def broken(*args: Any) -> None:
        calls.append(("sync", args[0]))
        raise RuntimeError("listener bug")

    async def broken_async(*args: Any) -> None:
        calls.append(("async", args[0]))
        raise RuntimeError("async listener bug")

    pipeline = pipelens.Pipeline("listened", auto_save="off")
    for event in ("step-start", "step-success", "step-error", "step-complete", "step-record"):
        pipeline.on(event, broken)
        pipeline.on(event, broken_async)

    @pipelens.step
    def recorded() -> int:
        pipelens.record("k", "v")
        return double(5)

    @pipelens.step
    def fails() -> None:
        raise PipelineFailureError("mine")

    with caplog.at_level(logging.WARNING, logger="pipelens"):
        async with pipeline.run() as run:
            assert recorded() == 10
            with pytest.raises(PipelineFailureError, match="mine"):
                fails()
        for _ in range(5):  # let the scheduled async listeners run (and fail)
            await asyncio.sleep(0)

    assert [(s.key, s.status) for s in run.steps()] == [
        ("listened", "completed"),
        ("listened.recorded", "completed"),
        ("listened.recorded.double", "completed"),
        ("listened.fails", "failed"),
    ]
    keys = ["listened", "listened.recorded", "listened.recorded.double", "listened.fails"]
    assert set(keys) == {key for kind, key in calls if kind == "sync"}
    assert set(keys) == {key for kind, key in calls if kind == "async"}
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "pipelens")
    assert "RuntimeError: listener bug" in logged


# --- memory: a finished run is not kept anywhere -------------------------------------------


def _collected(make_root: Any) -> bool:
    """Whether the root step returned by ``make_root()`` is freed once the caller drops it."""
    ref = weakref.ref(make_root())
    gc.collect()
    return ref() is None


@pipelens.step
def keeps_nothing() -> pipelens.Step | None:
    double(1)
    return pipelens.current_step()


def test_finished_runs_are_not_kept_without_transport() -> None:
    """With nothing configured, a finished run is freed when the caller drops it."""
    assert _collected(keeps_nothing)


def test_finished_runs_are_not_kept_with_a_transport(events: CapturedEvents) -> None:
    """Events sent for a run do not keep its steps alive."""
    assert _collected(keeps_nothing)
    assert events.runs()


def test_failed_runs_are_not_kept(events: CapturedEvents) -> None:
    """A failed run is freed too once its exception is dropped."""
    roots: list[weakref.ref[pipelens.Step]] = []

    @pipelens.step
    def fails() -> None:
        step = pipelens.current_step()
        assert step is not None
        roots.append(weakref.ref(step))
        raise PipelineFailureError("dropped")

    with pytest.raises(PipelineFailureError):
        fails()
    gc.collect()
    assert [ref() for ref in roots] == [None]


def test_threaded_and_generator_runs_are_not_kept(events: CapturedEvents) -> None:
    """Runs whose steps ran in pool threads or generators are freed once finished."""

    @pipelens.step
    def produce() -> Iterator[int]:
        yield 1
        yield 2

    @pipelens.step
    def busy() -> pipelens.Step | None:
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(double, range(4)))
        gen = produce()
        next(gen)  # abandoned half-way
        list(produce())
        return pipelens.current_step()

    assert _collected(busy)


async def test_async_runs_are_not_kept(events: CapturedEvents) -> None:
    """A run whose children ran as asyncio tasks is freed once finished."""

    @pipelens.step
    async def child() -> None:
        await asyncio.sleep(0)

    @pipelens.step
    async def parent() -> pipelens.Step | None:
        await asyncio.gather(child(), child())
        return pipelens.current_step()

    ref = weakref.ref(await parent())
    for _ in range(3):  # the loop drops its done-callbacks (holding the tasks) on its next turns
        await asyncio.sleep(0)
    gc.collect()
    assert ref() is None


def test_transport_thread_started_in_a_step_does_not_keep_its_run(tmp_path: Path) -> None:
    """A batching transport whose writer thread starts inside a step does not hold that run."""
    transport = pipelens.FileTransport(tmp_path / "runs.jsonl")

    @pipelens.step
    def outer() -> pipelens.Step | None:
        with pipelens.Pipeline("inner", transport=transport).run():  # the writer starts here
            double(1)
        return pipelens.current_step()

    try:
        assert _collected(outer)
        assert transport.flush(10)
    finally:
        transport.close(10)
    assert "inner.double" in (tmp_path / "runs.jsonl").read_text()

"""@step on plain functions: runs, keys, inputs, results, records and errors."""

from __future__ import annotations

import asyncio
import inspect

import pytest

import pipelens
from pipelens.testing import CapturedEvents


@pipelens.step
def child(x: int) -> int:
    pipelens.record("double", x * 2)
    return x + 1


@pipelens.step
def root(n: int) -> list[int]:
    return [child(i) for i in range(n)]


def test_outermost_step_starts_a_run_named_after_it(events: CapturedEvents) -> None:
    """The first step called with no run open is the run's root; its name is the pipeline."""
    assert root(2) == [1, 2]
    (run,) = events.runs()
    assert run.pipeline == "root"
    assert run.status == "completed"
    assert run.step_count == 3
    assert [s.key for s in events.steps()] == ["root.child", "root.child___1", "root"]


def test_steps_capture_inputs_result_and_records(events: CapturedEvents) -> None:
    """Inputs are the bound arguments, the result the return value, records by key (JSON)."""
    root(1)
    started = {s.key: s for s in events.steps_started()}
    assert started["root.child"].inputs == '{"x":0}'
    finished = events.step("root.child")
    assert finished.result == "1"
    assert finished.records == '{"double":0}'


def test_decorated_function_keeps_its_metadata() -> None:
    """Name, docstring, signature and coroutine-ness survive decoration."""

    def plain(a: int, b: str = "x") -> str:
        """Docs."""
        return b * a

    documented = pipelens.step(plain)

    @pipelens.step("named")
    async def coro() -> None:
        return None

    assert documented.__name__ == "plain"
    assert documented.__doc__ == "Docs."
    assert inspect.signature(documented) == inspect.signature(plain)
    assert inspect.iscoroutinefunction(coro)
    assert not inspect.iscoroutinefunction(documented)


def test_exception_is_reraised_unchanged_and_recorded(events: CapturedEvents) -> None:
    """The user's exception passes through as the same object; the step is failed."""
    boom = ValueError("bad input")

    @pipelens.step
    def fails() -> None:
        raise boom

    with pytest.raises(ValueError, match="bad input") as caught:
        fails()
    assert caught.value is boom
    step = events.step("fails")
    assert step.status == "failed"
    assert step.error is not None
    assert step.error.type == "ValueError"
    assert step.error.message == "bad input"
    assert "raise boom" in (step.error.traceback or "")
    assert events.runs()[0].status == "failed"


def test_async_step_whose_call_raises_ends_failed(events: CapturedEvents) -> None:
    """A coroutine function called with arguments it cannot take raises before any await: the
    TypeError passes through, and its step ends failed rather than staying open."""

    @pipelens.step
    async def needs_x(x: int) -> int:
        return x

    @pipelens.step
    async def outer() -> None:
        with pytest.raises(TypeError):
            await needs_x(1, 2)  # type: ignore[call-arg]

    asyncio.run(outer())
    step = events.step("outer.needs_x")
    assert step.status == "failed"
    assert step.error is not None
    assert step.error.type == "TypeError"

"""Generators and async generators as steps: one step spans the whole iteration.

Every resume runs with the generator's step current, whatever the consumer does between
resumes; stopping early ends the step ``cancelled``; nothing ever leaks into the consumer or
raises ``ValueError: ... created in a different Context``.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncGenerator, Generator, Iterator

import pytest

import pipelens
from pipelens.events import StepFinished
from pipelens.testing import CapturedEvents

_CLOSED = "the consumer closed the generator before it was exhausted"


def _key() -> str | None:
    step = pipelens.current_step()
    return None if step is None else step.key


@pipelens.step
def numbers(n: int) -> Generator[tuple[int, str | None], None, str]:
    for i in range(n):
        yield i, _key()
    return f"made {n}"


@pipelens.step
async def anumbers(n: int) -> AsyncGenerator[tuple[int, str | None], None]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i, _key()


@pipelens.step
def other() -> str | None:
    return _key()


@pipelens.step
async def aother() -> str | None:
    await asyncio.sleep(0)
    return _key()


def _assert_cancelled(step: StepFinished) -> None:
    assert step.status == "cancelled"
    assert step.error is not None
    assert step.error.message == _CLOSED


async def _until_finished(events: CapturedEvents, key: str) -> StepFinished:
    """Let the event loop run the async-generator finalizer (a few loop turns, no sleeping)."""
    for _ in range(20):
        if any(s.key == key for s in events.steps()):
            break
        await asyncio.sleep(0)
    return events.step(key)


def test_step_spans_the_whole_iteration_and_keeps_the_return_value(
    events: CapturedEvents,
) -> None:
    """An exhausted generator's step is ``completed`` with its ``return`` value as the result."""

    @pipelens.step
    def consumer() -> list[tuple[int, str | None]]:
        return list(numbers(3))

    assert consumer() == [(0, "consumer.numbers"), (1, "consumer.numbers"), (2, "consumer.numbers")]
    step = events.step("consumer.numbers")
    assert step.status == "completed"
    assert step.result == '"made 3"'
    assert events.step("consumer").step_id == step.parent_id
    assert [s.key for s in events.steps()] == ["consumer.numbers", "consumer"]


def test_each_resume_sees_the_generator_step_while_consumer_interleaves_steps(
    events: CapturedEvents,
) -> None:
    """Steps the consumer runs between ``next()`` calls nest under it, not under the generator."""

    @pipelens.step
    def consumer() -> list[str | None]:
        seen: list[str | None] = []
        for _, inside in numbers(3):
            seen.extend([inside, other(), _key()])
        return seen

    assert consumer() == [
        "consumer.numbers",
        "consumer.other",
        "consumer",
        "consumer.numbers",
        "consumer.other___1",
        "consumer",
        "consumer.numbers",
        "consumer.other___2",
        "consumer",
    ]
    consumer_id = events.step("consumer").step_id
    assert [consumer_id] * 4 == [s.parent_id for s in events.steps() if s.key != "consumer"]


async def test_async_generator_resumes_in_its_step_while_consumer_interleaves(
    events: CapturedEvents,
) -> None:
    """An async generator's every resume sees its step; the consumer's steps stay its own."""

    @pipelens.step
    async def consumer() -> list[str | None]:
        seen: list[str | None] = []
        async for _, inside in anumbers(2):
            seen.extend([inside, await aother(), _key()])
        return seen

    assert await consumer() == [
        "consumer.anumbers",
        "consumer.aother",
        "consumer",
        "consumer.anumbers",
        "consumer.aother___1",
        "consumer",
    ]
    assert events.step("consumer.anumbers").status == "completed"


def test_steps_inside_the_generator_body_nest_under_the_generator(
    events: CapturedEvents,
) -> None:
    """A step called by the generator between yields is the generator step's child."""

    @pipelens.step
    def producing() -> Iterator[str | None]:
        yield other()
        yield other()

    @pipelens.step
    def consumer() -> list[str | None]:
        return list(producing())

    assert consumer() == ["consumer.producing.other", "consumer.producing.other___1"]


def test_close_ends_the_step_cancelled_without_leaking(events: CapturedEvents) -> None:
    """``close()`` before the end: the step is ``cancelled``; the consumer is current again."""

    @pipelens.step
    def consumer() -> str | None:
        gen = numbers(5)
        next(gen)
        gen.close()
        return _key()

    assert consumer() == "consumer"
    _assert_cancelled(events.step("consumer.numbers"))
    assert events.step("consumer").status == "completed"


def test_break_ends_the_step_cancelled_without_leaking(events: CapturedEvents) -> None:
    """``break`` out of a ``for`` loop cancels the generator's step at once."""

    @pipelens.step
    def consumer() -> str | None:
        for _ in numbers(5):
            break
        return _key()

    assert consumer() == "consumer"
    _assert_cancelled(events.step("consumer.numbers"))


def test_abandoned_generator_is_cancelled_when_collected(events: CapturedEvents) -> None:
    """A half-iterated generator dropped and garbage-collected ends its step ``cancelled``."""

    @pipelens.step
    def consumer() -> str | None:
        gen = numbers(5)
        next(gen)
        del gen
        gc.collect()
        return _key()

    assert consumer() == "consumer"
    _assert_cancelled(events.step("consumer.numbers"))


def test_generator_collected_while_another_step_is_current(events: CapturedEvents) -> None:
    """A generator finalized during an unrelated step ends cleanly and leaves that step current."""
    holder: list[Generator[tuple[int, str | None], None, str]] = []

    @pipelens.step
    def producer_side() -> None:
        gen = numbers(3)
        next(gen)
        holder.append(gen)

    @pipelens.step
    def unrelated() -> str | None:
        holder.clear()  # the generator is finalized here, inside another run's step
        gc.collect()
        return _key()

    producer_side()
    assert unrelated() == "unrelated"
    _assert_cancelled(events.step("producer_side.numbers"))
    assert pipelens.current_step() is None


async def test_aclose_ends_the_step_cancelled_without_leaking(events: CapturedEvents) -> None:
    """``aclose()`` before the end: the step is ``cancelled``; the consumer is current again."""

    @pipelens.step
    async def consumer() -> str | None:
        agen = anumbers(5)
        await agen.__anext__()
        await agen.aclose()
        return _key()

    assert await consumer() == "consumer"
    _assert_cancelled(events.step("consumer.anumbers"))


async def test_async_break_and_abandon_end_the_step_cancelled(events: CapturedEvents) -> None:
    """``break`` from ``async for`` and a dropped async generator both end ``cancelled``."""

    @pipelens.step
    async def consumer() -> list[str | None]:
        seen = []
        async for _ in anumbers(5):
            break
        seen.append(_key())
        agen = anumbers(5)
        await agen.__anext__()
        del agen
        gc.collect()
        seen.append(_key())
        return seen

    assert await consumer() == ["consumer", "consumer"]
    _assert_cancelled(await _until_finished(events, "consumer.anumbers"))
    _assert_cancelled(await _until_finished(events, "consumer.anumbers___1"))


def test_send_and_throw_are_forwarded(events: CapturedEvents) -> None:
    """``send()`` values reach the generator; a ``throw()`` it handles lets it carry on."""

    @pipelens.step
    def echo() -> Generator[str, str, None]:
        received = "start"
        while True:
            try:
                received = yield f"got {received} in {_key()}"
            except KeyError as exc:
                received = f"handled {exc.args[0]}"

    @pipelens.step
    def consumer() -> list[str]:
        gen = echo()
        out = [next(gen), gen.send("a"), gen.throw(KeyError("k")), gen.send("b")]
        gen.close()
        return out

    assert consumer() == [
        "got start in consumer.echo",
        "got a in consumer.echo",
        "got handled k in consumer.echo",
        "got b in consumer.echo",
    ]


async def test_async_send_and_throw_are_forwarded(events: CapturedEvents) -> None:
    """``asend()``/``athrow()`` reach the async generator inside its step."""

    @pipelens.step
    async def echo() -> AsyncGenerator[str, str]:
        received = "start"
        while True:
            try:
                received = yield f"got {received} in {_key()}"
            except KeyError as exc:
                received = f"handled {exc.args[0]}"

    @pipelens.step
    async def consumer() -> list[str]:
        agen = echo()
        out = [
            await agen.__anext__(),
            await agen.asend("a"),
            await agen.athrow(KeyError("k")),
        ]
        await agen.aclose()
        return out

    assert await consumer() == [
        "got start in consumer.echo",
        "got a in consumer.echo",
        "got handled k in consumer.echo",
    ]


def test_unhandled_throw_fails_the_step_with_the_same_exception(events: CapturedEvents) -> None:
    """An exception thrown in and not handled comes back as the same object; the step failed."""
    boom = KeyError("thrown")

    @pipelens.step
    def consumer() -> str | None:
        gen = numbers(3)
        next(gen)
        with pytest.raises(KeyError) as caught:
            gen.throw(boom)
        assert caught.value is boom
        return _key()

    assert consumer() == "consumer"
    step = events.step("consumer.numbers")
    assert step.status == "failed"
    assert step.error is not None
    assert step.error.type == "KeyError"


def test_exception_inside_generator_propagates_unchanged(events: CapturedEvents) -> None:
    """An error raised by the generator's body reaches the consumer as the same object."""
    boom = RuntimeError("generator broke")

    @pipelens.step
    def breaks() -> Iterator[int]:
        yield 1
        raise boom

    @pipelens.step
    def consumer() -> str | None:
        with pytest.raises(RuntimeError) as caught:
            list(breaks())
        assert caught.value is boom
        return _key()

    assert consumer() == "consumer"
    step = events.step("consumer.breaks")
    assert step.status == "failed"
    assert step.error is not None
    assert (step.error.type, step.error.message) == ("RuntimeError", "generator broke")


async def test_exception_inside_async_generator_propagates_unchanged(
    events: CapturedEvents,
) -> None:
    """An error raised by an async generator's body reaches the consumer as the same object."""
    boom = RuntimeError("async generator broke")

    @pipelens.step
    async def breaks() -> AsyncGenerator[int, None]:
        yield 1
        raise boom

    @pipelens.step
    async def consumer() -> str | None:
        with pytest.raises(RuntimeError) as caught:
            async for _ in breaks():
                pass
        assert caught.value is boom
        return _key()

    assert await consumer() == "consumer"
    assert events.step("consumer.breaks").status == "failed"


def test_generator_never_iterated_leaves_no_step(events: CapturedEvents) -> None:
    """Creating a generator without iterating it opens no step and emits nothing for it."""

    @pipelens.step
    def consumer() -> int:
        gen = numbers(3)
        del gen
        gc.collect()
        step = pipelens.current_step()
        assert step is not None
        return len(step.children)

    assert consumer() == 0
    assert [s.key for s in events.steps()] == ["consumer"]
    assert [s.key for s in events.steps_started()] == ["consumer"]


async def test_async_generator_never_iterated_leaves_no_step(events: CapturedEvents) -> None:
    """Creating an async generator without iterating it opens no step."""

    @pipelens.step
    async def consumer() -> None:
        agen = anumbers(3)
        del agen
        gc.collect()
        await asyncio.sleep(0)

    await consumer()
    assert [s.key for s in events.steps_started()] == ["consumer"]


def test_outermost_generator_is_its_own_run(events: CapturedEvents) -> None:
    """A generator iterated outside any step opens a run that ends when it is exhausted."""
    assert list(numbers(2)) == [(0, "numbers"), (1, "numbers")]
    (run,) = events.runs()
    assert (run.pipeline, run.status) == ("numbers", "completed")
    assert pipelens.current_step() is None


def test_generator_resumed_from_other_threads(events: CapturedEvents) -> None:
    """Resuming one generator from several threads keeps its step current and raises nothing."""
    gen = numbers(4)
    seen: list[tuple[int, str | None]] = []

    def resume() -> None:
        seen.append(next(gen))

    for _ in range(2):
        thread = threading.Thread(target=resume)
        thread.start()
        thread.join(10)
    seen.append(next(gen))
    gen.close()

    assert seen == [(0, "numbers"), (1, "numbers"), (2, "numbers")]
    _assert_cancelled(events.step("numbers"))


async def test_async_generator_resumed_from_several_tasks(events: CapturedEvents) -> None:
    """Resuming one async generator from different tasks never mixes up contexts."""

    @pipelens.step
    async def consumer() -> list[str | None]:
        agen = anumbers(4)
        first = await asyncio.create_task(agen.__anext__())
        second = await asyncio.create_task(agen.__anext__())
        third = await agen.__anext__()
        await asyncio.create_task(agen.aclose())
        return [first[1], second[1], third[1], _key()]

    assert await consumer() == [
        "consumer.anumbers",
        "consumer.anumbers",
        "consumer.anumbers",
        "consumer",
    ]
    _assert_cancelled(events.step("consumer.anumbers"))


def test_nested_generator_steps_close_from_the_outside_in(events: CapturedEvents) -> None:
    """Closing a generator that delegates to another with ``yield from`` cancels both steps."""

    @pipelens.step
    def outer_gen() -> Generator[tuple[int, str | None], None, str]:
        return (yield from numbers(5))

    @pipelens.step
    def consumer() -> list[tuple[int, str | None]]:
        gen = outer_gen()
        items = [next(gen), next(gen)]
        gen.close()
        return items

    assert consumer() == [(0, "consumer.outer_gen.numbers"), (1, "consumer.outer_gen.numbers")]
    _assert_cancelled(events.step("consumer.outer_gen.numbers"))
    _assert_cancelled(events.step("consumer.outer_gen"))
    assert events.step("consumer").status == "completed"

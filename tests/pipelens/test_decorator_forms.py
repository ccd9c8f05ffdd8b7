"""Every form of ``@step`` and ``span()``: methods, options, names, metadata, on/off switches."""

from __future__ import annotations

import asyncio
import contextvars
import copy
import inspect
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import pipelens
from pipelens._core import containment
from pipelens.testing import CapturedEvents


def _inputs(events: CapturedEvents) -> list[str | None]:
    return [s.inputs for s in events.steps_started()]


class Service:
    """A class whose methods are steps in every form Python allows."""

    factor = 10

    def __init__(self) -> None:
        self.calls = 0

    @pipelens.step
    def method(self, x: int) -> int:
        """Multiply by the instance's factor."""
        self.calls += 1
        return x * self.factor

    @pipelens.step
    async def amethod(self, x: int) -> int:
        return x + self.factor

    @pipelens.step
    def gen_method(self, n: int) -> Iterator[int]:
        yield from range(n)

    @pipelens.step
    async def agen_method(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @pipelens.step
    @classmethod
    def cls_outer(cls, x: int) -> int:
        return x * cls.factor

    @classmethod
    @pipelens.step
    def cls_inner(cls, x: int) -> int:
        return x * cls.factor

    @pipelens.step
    @classmethod
    async def acls(cls, x: int) -> int:
        return x * cls.factor

    @pipelens.step
    @staticmethod
    def static_outer(x: int) -> int:
        return x + 1

    @staticmethod
    @pipelens.step
    def static_inner(x: int) -> int:
        return x + 2


def test_method_inputs_leave_out_self(events: CapturedEvents) -> None:
    """A method's step records its arguments without ``self``, called on the instance or class."""
    service = Service()
    assert service.method(2) == 20
    assert Service.method(service, 3) == 30
    assert service.method(x=4) == 40
    assert service.calls == 3
    assert _inputs(events) == ['{"x":2}', '{"x":3}', '{"x":4}']
    assert [r.pipeline for r in events.runs()] == ["method"] * 3


def test_instance_parameter_with_another_name_is_left_out(events: CapturedEvents) -> None:
    """A method's first parameter is left out whatever its name.

    A plain function decorated outside a class and attached to one later stays a plain function
    (it gets the fast closure, not wrapt's binding): its first argument is captured like any other.
    """

    class Odd:
        @pipelens.step
        def method(this, x: int) -> int:  # noqa: N805 - the point of the test
            return x

    def free(obj: object, y: int) -> int:
        return y

    Odd.attached = pipelens.step(free)  # type: ignore[attr-defined]
    odd: Any = Odd()
    assert [odd.method(1), Odd.method(odd, 2), odd.attached(3)] == [1, 2, 3]
    method_inputs, attached_inputs = _inputs(events)[:2], _inputs(events)[2]
    assert method_inputs == ['{"x":1}', '{"x":2}']
    assert attached_inputs.startswith('{"obj":"<')
    assert attached_inputs.endswith('"y":3}')


async def test_async_method_is_a_step(events: CapturedEvents) -> None:
    """An async method is a step whose inputs leave out ``self``."""
    assert await Service().amethod(5) == 15
    assert _inputs(events) == ['{"x":5}']
    assert events.step("amethod").result == "15"


def test_classmethod_in_both_orders_leaves_out_cls(events: CapturedEvents) -> None:
    """``@step @classmethod`` and ``@classmethod @step`` both work, on the class and instance."""
    service = Service()
    assert [
        Service.cls_outer(1),
        service.cls_outer(2),
        Service.cls_inner(3),
        service.cls_inner(4),
    ] == [10, 20, 30, 40]
    assert _inputs(events) == ['{"x":1}', '{"x":2}', '{"x":3}', '{"x":4}']
    assert [r.pipeline for r in events.runs()] == [
        "cls_outer",
        "cls_outer",
        "cls_inner",
        "cls_inner",
    ]


async def test_async_classmethod_is_a_step(events: CapturedEvents) -> None:
    """An async classmethod is a step without ``cls`` in its inputs."""
    assert await Service.acls(7) == 70
    assert _inputs(events) == ['{"x":7}']


def test_staticmethod_in_both_orders(events: CapturedEvents) -> None:
    """``@step @staticmethod`` and ``@staticmethod @step`` keep every argument."""
    service = Service()
    assert [
        Service.static_outer(1),
        service.static_outer(2),
        Service.static_inner(2),
        service.static_inner(3),
    ] == [2, 3, 4, 5]
    assert _inputs(events) == ['{"x":1}', '{"x":2}', '{"x":2}', '{"x":3}']


def test_generator_methods_are_steps(events: CapturedEvents) -> None:
    """A generator method is one step over its whole iteration, without ``self`` in inputs."""
    assert list(Service().gen_method(3)) == [0, 1, 2]
    assert _inputs(events) == ['{"n":3}']
    assert events.step("gen_method").status == "completed"


async def test_async_generator_methods_are_steps(events: CapturedEvents) -> None:
    """An async generator method is one step over its whole iteration."""
    assert [i async for i in Service().agen_method(2)] == [0, 1]
    assert _inputs(events) == ['{"n":2}']


def test_a_generator_step_set_on_a_class_binds_as_a_function_would(
    events: CapturedEvents,
) -> None:
    """A generator function decorated outside a class body, then set on a class, is a method of
    it: called on an object it gets the object first (as the plain function would), and each
    call is one step; it says what it is in its repr and is no copy of itself."""

    @pipelens.step
    def numbers(owner: Any, n: int) -> Iterator[int]:
        yield from range(owner.start, owner.start + n)

    class Counter:
        start = 10
        count = numbers

    assert list(Counter().count(2)) == [10, 11]
    assert list(Counter.count(Counter(), 1)) == [10]
    assert inspect.isgeneratorfunction(Counter().count)
    assert [s.status for s in events.steps()] == ["completed", "completed"]
    assert "numbers" in repr(numbers)
    assert copy.copy(numbers) is numbers


def test_methods_keep_their_metadata() -> None:
    """Names, docstrings, signatures and kinds of decorated methods tell the truth."""
    service = Service()
    assert Service.method.__name__ == "method"
    assert service.method.__doc__ == "Multiply by the instance's factor."
    assert list(inspect.signature(service.method).parameters) == ["x"]
    assert list(inspect.signature(Service.cls_outer).parameters) == ["x"]
    assert list(inspect.signature(Service.cls_inner).parameters) == ["x"]
    assert list(inspect.signature(Service.static_outer).parameters) == ["x"]
    assert list(inspect.signature(Service.method).parameters) == ["self", "x"]
    assert inspect.iscoroutinefunction(service.amethod)
    assert inspect.iscoroutinefunction(Service.acls)
    assert not inspect.iscoroutinefunction(service.method)
    assert inspect.isgeneratorfunction(service.gen_method)
    assert inspect.isasyncgenfunction(service.agen_method)
    assert not inspect.isgeneratorfunction(service.agen_method)


def test_every_kind_of_function_keeps_its_metadata() -> None:
    """``__name__``, ``__doc__``, signature and the ``inspect`` kind checks see the original."""

    def plain(a: int, *rest: int, b: str = "x", **more: object) -> str:
        """Plain docs."""
        return b

    async def coro(a: int) -> int:
        """Coro docs."""
        return a

    def gen(a: int) -> Iterator[int]:
        """Gen docs."""
        yield a

    async def agen(a: int) -> AsyncIterator[int]:
        """Agen docs."""
        yield a

    checks = (inspect.iscoroutinefunction, inspect.isgeneratorfunction, inspect.isasyncgenfunction)
    for original in (plain, coro, gen, agen):
        for decorated in (pipelens.step(original), pipelens.step("renamed")(original)):
            assert original.__name__ == decorated.__name__
            assert original.__doc__ == decorated.__doc__
            assert inspect.signature(original) == inspect.signature(decorated)
            assert [check(original) for check in checks] == [check(decorated) for check in checks]


def test_bare_named_and_keyword_forms(events: CapturedEvents) -> None:
    """``@step``, ``@step("name")`` and ``@step(name=..., capture_*=False)`` all make steps."""

    @pipelens.step
    def bare(x: int) -> int:
        return x

    @pipelens.step("explicit")
    def positional_name(x: int) -> int:
        return x

    @pipelens.step(name="keyword", capture_args=False, capture_result=False)
    def keyword_name(x: int) -> int:
        return x

    assert [bare(1), positional_name(2), keyword_name(3)] == [1, 2, 3]
    assert [s.key for s in events.steps()] == ["bare", "explicit", "keyword"]
    assert _inputs(events) == ['{"x":1}', '{"x":2}', None]
    assert [s.result for s in events.steps()] == ["1", "2", None]


def test_a_dot_in_a_name_becomes_an_underscore(events: CapturedEvents) -> None:
    """A ``.`` in a step name would fake a level of the key, so it becomes ``_``."""

    @pipelens.step("load.data")
    def positional() -> None:
        with pipelens.span("parse.rows"):
            pass

    @pipelens.step(name="save.data")
    def keyword() -> None:
        return None

    @pipelens.step
    def outer() -> None:
        positional()
        keyword()

    outer()
    assert [s.key for s in events.steps()] == [
        "outer.load_data.parse_rows",
        "outer.load_data",
        "outer.save_data",
        "outer",
    ]


def test_step_rejects_what_is_not_callable() -> None:
    """``@step`` on something that cannot be called fails at decoration, naming the object."""
    with pytest.raises(TypeError, match="@step can only decorate a callable, not 42"):
        pipelens.step(42)  # type: ignore[call-overload]


def test_bad_options_are_named_at_decoration() -> None:
    """A non-string name or kind fails when decorating (or opening a span), naming the option."""
    with pytest.raises(TypeError, match=r"@step\(name=123\): expected a string"):
        pipelens.step(name=123)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"@step\(kind=\['llm'\]\): expected a string"):
        pipelens.step(kind=["llm"])  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"span\(5\): the name must be a string"):
        pipelens.span(5)  # type: ignore[arg-type]


def test_span_is_a_step_around_a_block(events: CapturedEvents) -> None:
    """``with span(...)`` yields the step, current inside the block, completed at its end."""

    @pipelens.step
    def outer() -> str | None:
        with pipelens.span("block") as block:
            assert block is pipelens.current_step()
            assert block is not None
            block.record("rows", 3)
        step = pipelens.current_step()
        return None if step is None else step.key

    assert outer() == "outer"
    span = events.step("outer.block")
    assert (span.status, span.records) == ("completed", '{"rows":3}')


def test_span_failure_marks_failed_and_reraises_unchanged(events: CapturedEvents) -> None:
    """An exception leaving a ``span`` block fails the step and propagates as the same object."""
    boom = LookupError("missing row")
    with pytest.raises(LookupError) as caught, pipelens.span("lookup"):
        raise boom
    assert caught.value is boom
    step = events.step("lookup")
    assert step.error is not None
    assert (
        step.status,
        step.error.type,
        step.error.message,
    ) == ("failed", "LookupError", "missing row")
    assert pipelens.current_step() is None


async def test_async_span(events: CapturedEvents) -> None:
    """``async with span(...)`` nests like the sync form, and fails with the same exception."""
    boom = ValueError("async block")

    @pipelens.step
    async def outer() -> None:
        async with pipelens.span("ok") as step:
            assert step is pipelens.current_step()
            await asyncio.sleep(0)
        with pytest.raises(ValueError, match="async block") as caught:
            async with pipelens.span("bad"):
                raise boom
        assert caught.value is boom

    await outer()
    assert [(s.key, s.status) for s in events.steps()] == [
        ("outer.ok", "completed"),
        ("outer.bad", "failed"),
        ("outer", "completed"),
    ]


def test_span_left_in_another_context_raises_nothing(events: CapturedEvents) -> None:
    """A span held across a ``yield`` and closed from another context ends without an error."""

    def produce() -> Iterator[int]:
        with pipelens.span("held"):
            yield 1

    gen = produce()
    assert contextvars.copy_context().run(next, gen) == 1
    assert list(gen) == []
    assert [s.status for s in events.steps()] == ["completed"]
    assert pipelens.current_step() is None


def test_record_outside_any_step_does_nothing_and_logs_once(
    events: CapturedEvents, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pipelens.record`` with no step open is ignored, with one warning however often called."""
    monkeypatch.setattr(containment, "_once", containment.WarnOnce())
    with caplog.at_level(logging.WARNING, logger="pipelens"):
        pipelens.record("a", 1)
        pipelens.record("b", 2)
    assert events.events == []
    messages = [r.getMessage() for r in caplog.records if r.name == "pipelens"]
    assert len(messages) == 1
    assert "pipelens.record('a', ...) was called outside any step" in messages[0]


def test_disabled_steps_are_plain_calls(events: CapturedEvents) -> None:
    """``configure(enabled=False)``: every form just calls the function; nothing is recorded."""

    @pipelens.step
    def plain(x: int) -> object:
        return (x, pipelens.current_step())

    @pipelens.step
    async def coro() -> object:
        return pipelens.current_step()

    @pipelens.step
    def gen() -> Iterator[object]:
        yield pipelens.current_step()

    pipelens.configure(enabled=False)
    assert plain(1) == (1, None)
    assert asyncio.run(coro()) is None
    assert list(gen()) == [None]
    with pipelens.span("block") as block:
        assert block is None
    assert events.events == []

    pipelens.configure(enabled=True)
    assert plain(1)[0] == 1  # type: ignore[index]
    assert [s.key for s in events.steps()] == ["plain"]


def test_disabled_generator_is_the_original_generator() -> None:
    """With PipeLens off, a decorated generator function returns the user's own generator."""

    def produce() -> Iterator[int]:
        yield 1

    decorated = pipelens.step(produce)
    pipelens.configure(enabled=False)
    gen = decorated()
    assert gen.__name__ == "produce"  # type: ignore[attr-defined]
    assert gen.gi_code is produce.__code__  # type: ignore[attr-defined]

"""Decorated callables of every kind at module level, for pickling tests in spawned processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pipelens


@pipelens.step
def plain(x: int) -> int:
    return x + 1


@pipelens.step
async def coroutine(x: int) -> int:
    return x + 2


@pipelens.step
def generator(n: int) -> Iterator[int]:
    yield from range(n)


@pipelens.step
async def agenerator(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


class Worker:
    def __init__(self, base: int) -> None:
        self.base = base

    @pipelens.step
    def method(self, x: int) -> int:
        return self.base + x

    @pipelens.step
    @classmethod
    def clsmethod(cls, x: int) -> int:
        return x * 10

    @pipelens.step
    @staticmethod
    def static(x: int) -> int:
        return x * 100


@pipelens.step
def square(x: int) -> int:
    """A step with a child of its own (``plain``), for tasks run in worker processes."""
    return plain(x) * x


@pipelens.step
def refuse(x: int) -> int:
    raise ValueError(f"refused {x}")


def squares(n: int) -> None:
    """A ``multiprocessing.Process`` target that is no step itself: each call is one."""
    for i in range(n):
        square(i)

"""Decorated callables of every kind at module level, for pickling tests in spawned processes."""

from __future__ import annotations

import multiprocessing.context
import multiprocessing.process
import sys
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


class _Squares:
    """A ``multiprocessing.Process`` subclass's own ``run()``, calling steps (no target)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def run(self) -> None:
        squares(self.n)


class SpawnSquares(_Squares, multiprocessing.context.SpawnProcess):
    pass


#: Such a subclass per start method the platform has (fork is POSIX only).
SQUARES_PROCESSES: dict[str, type[multiprocessing.process.BaseProcess]] = {"spawn": SpawnSquares}
if sys.platform != "win32":

    class ForkSquares(_Squares, multiprocessing.context.ForkProcess):
        pass

    SQUARES_PROCESSES["fork"] = ForkSquares

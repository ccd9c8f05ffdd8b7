"""Steps nest across threads: executors, ``threading.Thread``, ``to_thread``, ``run_in_executor``.

A step started in a worker nests under the step that submitted the work, only while
``configure(propagate_threads=True)`` (the default); a pool's long-lived worker threads never
carry the step that happened to be current when they were spawned.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import pipelens
from pipelens.testing import CapturedEvents

_WAIT = 10.0  # seconds a barrier waits before the test fails instead of hanging


@pipelens.step
def leaf(tag: int = 0) -> str | None:
    """Returns the key of the step it nests under (``None`` when it is a run's root)."""
    step = pipelens.current_step()
    assert step is not None
    return None if step.parent is None else step.parent.key


def _current_key() -> str | None:
    step = pipelens.current_step()
    return None if step is None else step.key


def _leaf_parents(events: CapturedEvents) -> list[str | None]:
    by_id = {s.step_id: s.key for s in events.steps()}
    return [
        None if s.parent_id is None else by_id[s.parent_id]
        for s in events.steps()
        if s.name == "leaf"
    ]


def test_executor_submit_nests_under_the_submitting_step(events: CapturedEvents) -> None:
    """``ThreadPoolExecutor.submit`` runs the task in the submitter's step."""

    @pipelens.step
    def outer() -> str | None:
        with ThreadPoolExecutor(max_workers=2) as pool:
            return pool.submit(leaf).result(_WAIT)

    assert outer() == "outer"
    assert _leaf_parents(events) == ["outer"]
    assert [r.pipeline for r in events.runs()] == ["outer"]


def test_executor_map_nests_every_task(events: CapturedEvents) -> None:
    """``ThreadPoolExecutor.map`` tasks are all children of the mapping step."""

    @pipelens.step
    def outer() -> list[str | None]:
        with ThreadPoolExecutor(max_workers=3) as pool:
            return list(pool.map(leaf, range(6)))

    assert outer() == ["outer"] * 6
    assert _leaf_parents(events) == ["outer"] * 6
    expected = {"outer.leaf"} | {f"outer.leaf___{i}" for i in range(1, 6)}
    assert expected == {s.key for s in events.steps() if s.name == "leaf"}


def test_thread_target_nests_under_the_starting_step(events: CapturedEvents) -> None:
    """A ``threading.Thread(target=...)`` started inside a step runs its target in that step."""
    seen: list[str | None] = []

    @pipelens.step
    def outer() -> None:
        thread = threading.Thread(target=lambda: seen.append(leaf()))
        thread.start()
        thread.join(_WAIT)

    outer()

    assert seen == ["outer"]
    assert _leaf_parents(events) == ["outer"]


def test_thread_targeting_a_bound_method_nests(events: CapturedEvents) -> None:
    """A thread whose target is a method of the user's object runs it in the starting step."""

    class Collector:
        def __init__(self) -> None:
            self.seen: list[str | None] = []

        def collect(self) -> None:
            self.seen.append(leaf())

    collector = Collector()

    @pipelens.step
    def outer() -> None:
        thread = threading.Thread(target=collector.collect)
        thread.start()
        thread.join(_WAIT)

    outer()

    assert collector.seen == ["outer"]


def test_thread_subclass_overriding_run_nests(events: CapturedEvents) -> None:
    """A ``Thread`` subclass with its own ``run()`` also runs inside the starting step."""
    seen: list[str | None] = []

    class Worker(threading.Thread):
        def run(self) -> None:
            seen.append(_current_key())
            seen.append(leaf())

    @pipelens.step
    def outer() -> None:
        worker = Worker()
        worker.start()
        worker.join(_WAIT)

    outer()

    assert seen == ["outer", "outer"]
    assert _leaf_parents(events) == ["outer"]


async def test_to_thread_nests_under_the_awaiting_step(events: CapturedEvents) -> None:
    """``asyncio.to_thread`` runs the function inside the step that awaited it."""

    @pipelens.step
    async def outer() -> str | None:
        return await asyncio.to_thread(leaf)

    assert await outer() == "outer"
    assert _leaf_parents(events) == ["outer"]


async def test_run_in_executor_default_executor_nests(events: CapturedEvents) -> None:
    """``loop.run_in_executor(None, fn)`` runs ``fn`` inside the awaiting step."""

    @pipelens.step
    async def outer() -> str | None:
        return await asyncio.get_running_loop().run_in_executor(None, leaf)

    assert await outer() == "outer"
    assert _leaf_parents(events) == ["outer"]


async def test_run_in_executor_explicit_pool_nests(events: CapturedEvents) -> None:
    """``loop.run_in_executor(pool, fn)`` with a ``ThreadPoolExecutor`` nests ``fn``'s step."""

    @pipelens.step
    async def outer() -> str | None:
        with ThreadPoolExecutor(max_workers=1) as pool:
            return await asyncio.get_running_loop().run_in_executor(pool, leaf)

    assert await outer() == "outer"
    assert _leaf_parents(events) == ["outer"]


def _spread_over_workers(pool: ThreadPoolExecutor, n: int) -> list[str | None]:
    """Submit ``n`` tasks held together, so the pool spawns ``n`` worker threads right now."""
    barrier = threading.Barrier(n)

    def task() -> str | None:
        barrier.wait(_WAIT)
        return leaf()

    return [f.result(_WAIT) for f in [pool.submit(task) for _ in range(n)]]


def test_propagation_can_be_switched_off_and_on(events: CapturedEvents) -> None:
    """``propagate_threads=False``: worker steps start their own runs; ``True`` nests them again."""
    seen: list[str | None] = []

    @pipelens.step
    def outer() -> list[str | None]:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = [pool.submit(leaf).result(_WAIT), *pool.map(leaf, range(2))]
        thread = threading.Thread(target=lambda: seen.append(leaf()))
        thread.start()
        thread.join(_WAIT)
        return results

    pipelens.configure(propagate_threads=False)
    assert outer() == [None, None, None]
    assert seen == [None]
    assert sorted(r.pipeline for r in events.runs()) == ["leaf"] * 4 + ["outer"]

    events.clear()
    seen.clear()
    pipelens.configure(propagate_threads=True)
    assert outer() == ["outer"] * 3
    assert seen == ["outer"]
    assert [r.pipeline for r in events.runs()] == ["outer"]


async def test_run_in_executor_without_propagation_starts_own_run(
    events: CapturedEvents,
) -> None:
    """With propagation off, a step run by ``run_in_executor`` is the root of a new run."""

    @pipelens.step
    async def outer() -> str | None:
        with ThreadPoolExecutor(max_workers=1) as pool:
            return await asyncio.get_running_loop().run_in_executor(pool, leaf)

    pipelens.configure(propagate_threads=False)
    assert await outer() is None
    assert sorted(r.pipeline for r in events.runs()) == ["leaf", "outer"]


def test_pool_created_in_a_step_does_not_leak_it_into_later_tasks(
    events: CapturedEvents,
) -> None:
    """Workers spawned inside a step carry no context: later tasks outside any step see none."""
    pool = ThreadPoolExecutor(max_workers=3)
    try:

        @pipelens.step
        def creates_pool() -> list[str | None]:
            return _spread_over_workers(pool, 3)

        assert creates_pool() == ["creates_pool"] * 3
        assert [pool.submit(_current_key).result(_WAIT) for _ in range(6)] == [None] * 6
        assert _spread_over_workers(pool, 3) == [None] * 3
    finally:
        pool.shutdown(wait=True)
    roots = [r.pipeline for r in events.runs()]
    assert sorted(roots) == ["creates_pool", "leaf", "leaf", "leaf"]


def test_pool_reused_by_another_step_nests_under_that_step(events: CapturedEvents) -> None:
    """Tasks submitted from a later step nest under it, not under the step that spawned workers."""
    pool = ThreadPoolExecutor(max_workers=2)
    try:

        @pipelens.step
        def first() -> list[str | None]:
            return _spread_over_workers(pool, 2)

        @pipelens.step
        def second() -> list[str | None]:
            return _spread_over_workers(pool, 2)

        assert first() == ["first", "first"]
        assert second() == ["second", "second"]
    finally:
        pool.shutdown(wait=True)


def test_concurrent_siblings_from_many_threads_never_share_a_key(
    events: CapturedEvents,
) -> None:
    """Children started at once from many threads get distinct keys and are all counted."""
    n_threads, per_thread = 12, 5

    @pipelens.step
    def outer() -> None:
        barrier = threading.Barrier(n_threads)

        def work() -> None:
            barrier.wait(_WAIT)
            for i in range(per_thread):
                leaf(i)

        threads = [threading.Thread(target=work) for _ in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(_WAIT)

    outer()

    total = n_threads * per_thread
    keys = [s.key for s in events.steps() if s.name == "leaf"]
    expected = {"outer.leaf"} | {f"outer.leaf___{i}" for i in range(1, total)}
    assert expected == set(keys)
    assert total == len(keys)
    (run,) = events.runs()
    assert total + 1 == run.step_count


def test_worker_exception_reaches_the_submitter_unchanged(events: CapturedEvents) -> None:
    """A step failing in a worker is ``failed`` under the submitter; ``result()`` re-raises it."""
    boom = ValueError("worker failed")

    @pipelens.step
    def fails() -> None:
        raise boom

    @pipelens.step
    def outer() -> None:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(fails).result(_WAIT)

    with pytest.raises(ValueError, match="worker failed") as caught:
        outer()

    assert caught.value is boom
    assert [events.step(k).status for k in ("outer.fails", "outer")] == ["failed", "failed"]

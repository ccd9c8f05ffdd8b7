"""Steps nest across asyncio tasks: ``gather``, ``create_task`` and ``TaskGroup``.

Parallel children are held in flight together (each waits until all have started), so a child
that leaked its step into a sibling's context would show up as a nested key.
"""

from __future__ import annotations

import asyncio

import pipelens
from pipelens.events import StepFinished
from pipelens.testing import CapturedEvents


class _AllStarted:
    """Lets ``n`` concurrent children proceed only once every one of them has started."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.started = 0
        self.event = asyncio.Event()

    async def arrive(self) -> None:
        self.started += 1
        if self.started == self.n:
            self.event.set()
        await self.event.wait()


@pipelens.step
async def grandchild() -> str | None:
    step = pipelens.current_step()
    return None if step is None else step.key


@pipelens.step
async def child(gate: _AllStarted) -> str | None:
    await gate.arrive()
    inner = await grandchild()
    await asyncio.sleep(0)
    step = pipelens.current_step()
    assert step is not None
    return f"{step.key}|{inner}"


def _by_key(events: CapturedEvents) -> dict[str, StepFinished]:
    return {s.key: s for s in events.steps()}


def _assert_children_of_parent(events: CapturedEvents, n: int) -> None:
    steps = _by_key(events)
    parent = steps["parent"]
    child_keys = ["parent.child"] + [f"parent.child___{i}" for i in range(1, n)]
    assert sorted(child_keys) == sorted(k for k in steps if k.count(".") == 1)
    for key in child_keys:
        assert parent.step_id == steps[key].parent_id, key
        assert steps[key].step_id == steps[f"{key}.grandchild"].parent_id, key


async def test_gather_children_nest_under_the_gathering_step(events: CapturedEvents) -> None:
    """Coroutines run by ``gather`` are children of the step that gathered them, not siblings'."""

    @pipelens.step
    async def parent() -> list[str | None]:
        gate = _AllStarted(3)
        return list(await asyncio.gather(child(gate), child(gate), child(gate)))

    results = await parent()

    assert {
        "parent.child|parent.child.grandchild",
        "parent.child___1|parent.child___1.grandchild",
        "parent.child___2|parent.child___2.grandchild",
    } == set(results)
    _assert_children_of_parent(events, 3)


async def test_create_task_children_nest_under_the_creating_step(events: CapturedEvents) -> None:
    """Tasks from ``create_task`` are children of the step current when they were created."""

    @pipelens.step
    async def parent() -> list[str | None]:
        gate = _AllStarted(4)
        tasks = [asyncio.create_task(child(gate)) for _ in range(4)]
        return [await t for t in tasks]

    await parent()

    _assert_children_of_parent(events, 4)


async def test_taskgroup_children_nest_under_the_step_owning_the_group(
    events: CapturedEvents,
) -> None:
    """Tasks of a ``TaskGroup`` are children of the step that opened the group."""

    @pipelens.step
    async def parent() -> list[str | None]:
        gate = _AllStarted(3)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(child(gate)) for _ in range(3)]
        return [t.result() for t in tasks]

    await parent()

    _assert_children_of_parent(events, 3)


async def test_parallel_siblings_get_unique_numbered_keys(events: CapturedEvents) -> None:
    """Many concurrent children of one step get ``child``, ``child___1``, ... with no repeat."""
    n = 25

    @pipelens.step
    async def parent() -> None:
        gate = _AllStarted(n)
        await asyncio.gather(*(child(gate) for _ in range(n)))

    await parent()

    keys = [s.key for s in events.steps() if s.name == "child"]
    expected = {"parent.child"} | {f"parent.child___{i}" for i in range(1, n)}
    assert expected == set(keys)
    assert n == len(keys)


async def test_current_step_is_restored_after_tasks_finish(events: CapturedEvents) -> None:
    """After awaiting its tasks, the parent still sees itself as the current step."""

    @pipelens.step
    async def parent() -> list[str]:
        seen = []
        gate = _AllStarted(2)
        await asyncio.gather(child(gate), child(gate))
        seen.append(str(pipelens.current_step()))
        async with asyncio.TaskGroup() as group:
            group.create_task(child(_AllStarted(1)))
        seen.append(str(pipelens.current_step()))
        return seen

    assert await parent() == ["<Step 'parent' running>"] * 2
    assert pipelens.current_step() is None
    assert [s.status for s in events.steps()] == ["completed"] * 7


async def test_tasks_created_outside_any_step_start_their_own_runs(
    events: CapturedEvents,
) -> None:
    """Tasks gathered with no step open are each the root of a separate run."""
    gate = _AllStarted(2)

    await asyncio.gather(child(gate), child(gate))

    runs = events.runs()
    assert [r.pipeline for r in runs] == ["child", "child"]
    assert len({r.run_id for r in runs}) == 2
    roots = [s for s in events.steps() if s.name == "child"]
    assert [s.parent_id for s in roots] == [None, None]


async def test_failed_task_marks_only_its_own_step(events: CapturedEvents) -> None:
    """A child task that raises is ``failed``; its running siblings complete normally."""

    @pipelens.step
    async def bad(gate: _AllStarted) -> None:
        await gate.arrive()
        raise RuntimeError("child broke")

    @pipelens.step
    async def parent() -> list[object]:
        gate = _AllStarted(3)
        return list(
            await asyncio.gather(child(gate), bad(gate), child(gate), return_exceptions=True)
        )

    results = await parent()

    assert isinstance(results[1], RuntimeError)
    steps = _by_key(events)
    assert steps["parent.bad"].status == "failed"
    assert steps["parent.child"].status == "completed"
    assert steps["parent.child___1"].status == "completed"
    assert steps["parent"].step_id == steps["parent.bad"].parent_id

"""Steps nest across processes: ``ProcessPoolExecutor``, ``multiprocessing.Pool`` and
``multiprocessing.Process``, with the fork and spawn start methods.

A task submitted inside a step carries that step's run and step ids and a recipe of the run's
transport; the worker sends its own steps to a real ingest server, under the submitting step,
and has sent them all before the task answers.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import _otel_worker
import _picklable
import pytest
from _ingest_server import IngestServer

import pipelens
from pipelens._otel.trace_context import trace_id_of
from pipelens.events import RunStarted, StepFinished, StepStarted
from pipelens.testing import CapturedEvents

METHODS = ["fork", "spawn"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[IngestServer]:
    with IngestServer() as running:
        transport = pipelens.HttpTransport(
            running.url, spool_dir=tmp_path / "spool", heartbeat=None
        )
        pipelens.configure(transport=transport)
        yield running


def _finished(server: IngestServer) -> dict[str, StepFinished]:
    return {e.step_id: e for e in server.events() if isinstance(e, StepFinished)}


def _tree(server: IngestServer) -> dict[str, tuple[str, str | None]]:
    """Each step's key and its parent's key, as the server received them."""
    steps = {e.step_id: e for e in server.events() if isinstance(e, StepStarted)}
    return {
        s.step_id: (s.key, None if s.parent_id is None else steps[s.parent_id].key)
        for s in steps.values()
    }


def _check_squares(server: IngestServer, root: str, n: int) -> None:
    """``n`` ``square`` steps under ``root``, each with its ``plain`` child, all finished, in
    one run."""
    tree = _tree(server)
    squares = [key for key, parent in tree.values() if parent == root]
    assert n == len(squares)
    assert all(key.startswith(f"{root}.square___") for key in squares)
    plains = sorted(parent for key, parent in tree.values() if key.endswith(".plain"))
    assert sorted(squares) == plains
    assert {e.run_id for e in server.events()} == {server.events()[0].run_id}
    assert len(tree) == len(_finished(server))  # nothing lost: every start has its finish
    assert [e.pipeline for e in server.events() if isinstance(e, RunStarted)] == ["fan_out"]


@pytest.mark.parametrize("method", METHODS)
def test_process_pool_tasks_nest_under_the_submitting_step(
    server: IngestServer, method: str
) -> None:
    """``ProcessPoolExecutor.map`` and ``submit``: each worker's step is a child of the
    submitting step, its own child below it, all sent before the pool is gone."""

    @pipelens.step
    def fan_out() -> list[int]:
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            mapped = list(pool.map(_picklable.square, range(4)))
            mapped.append(pool.submit(_picklable.square, 4).result())
        return mapped

    assert fan_out() == [0, 2, 6, 12, 20]
    pipelens.flush(10)
    _check_squares(server, "fan_out", 5)


@pytest.mark.parametrize("method", METHODS)
def test_pool_tasks_nest_and_survive_terminate(server: IngestServer, method: str) -> None:
    """``multiprocessing.Pool``'s ``with`` block terminates its workers at the end: their
    steps were sent before each task answered."""

    @pipelens.step
    def fan_out() -> list[int]:
        with multiprocessing.get_context(method).Pool(2) as pool:
            mapped = pool.map(_picklable.square, range(3))
            mapped.append(pool.apply(_picklable.square, (3,)))
            mapped.extend(pool.imap_unordered(_picklable.square, [4]))
        return mapped

    assert fan_out() == [0, 2, 6, 12, 20]
    pipelens.flush(10)
    _check_squares(server, "fan_out", 5)


@pytest.mark.parametrize("method", METHODS)
def test_process_target_steps_nest_under_the_starting_step(
    server: IngestServer, method: str
) -> None:
    """A ``Process`` whose target is a plain function calling steps: each of its steps nests
    under the step that started the process (a forked child does not extend its copy of it)."""

    @pipelens.step
    def fan_out() -> int:
        process = multiprocessing.get_context(method).Process(target=_picklable.squares, args=(3,))
        process.start()
        process.join(60)
        return process.exitcode or 0

    assert fan_out() == 0
    pipelens.flush(10)
    _check_squares(server, "fan_out", 3)


def test_an_exception_in_a_worker_reaches_the_submitter_unchanged(server: IngestServer) -> None:
    """The user's exception passes through the task, and the worker's step is sent failed."""

    @pipelens.step
    def fan_out() -> None:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(_picklable.refuse, 7).result()

    with pytest.raises(ValueError, match="refused 7") as caught:
        fan_out()
    assert type(caught.value) is ValueError
    pipelens.flush(10)
    refused = [e for e in _finished(server).values() if e.name == "refuse"]
    assert [e.status for e in refused] == ["failed"]
    assert refused[0].error is not None
    assert refused[0].error.message == "refused 7"


def test_propagation_can_be_switched_off(server: IngestServer) -> None:
    """``configure(propagate_processes=False)``: tasks go as they are, and the worker's steps
    are none of the parent's run (a spawned worker has no transport of its own)."""
    pipelens.configure(propagate_processes=False)

    @pipelens.step
    def fan_out() -> int:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(_picklable.square, 3).result()

    assert fan_out() == 12
    pipelens.flush(10)
    assert [key for key, _ in _tree(server).values()] == ["fan_out"]


def test_nothing_is_carried_outside_a_step_or_without_a_rebuildable_transport(
    events: CapturedEvents,
) -> None:
    """No current step, or an in-memory transport that no other process can write to: the
    task is the user's callable itself."""
    from pipelens._otel.processes import Task, carrying

    assert carrying(_picklable.square) is _picklable.square

    @pipelens.step
    def inside() -> object:
        return carrying(_picklable.square)

    assert inside() is _picklable.square
    assert not isinstance(inside(), Task)


def test_a_task_pickles_with_its_step_and_transport_recipe(server: IngestServer) -> None:
    """The task a worker receives names the submitting step and rebuilds the transport to the
    same server."""
    from pipelens._otel.processes import Task, carrying

    @pipelens.step
    def inside() -> tuple[object, str, str]:
        step = pipelens.current_step()
        assert step is not None
        return carrying(_picklable.square), step.run.id, step.id

    task, run_id, step_id = inside()
    copy = pickle.loads(pickle.dumps(task))
    assert isinstance(copy, Task)
    assert (run_id, step_id, "inside") == copy.parent
    made = copy.recipe[0]()
    try:
        assert server.url == made.url  # type: ignore[attr-defined]
    finally:
        made.close(0)


@pytest.mark.parametrize("method", METHODS)
def test_otel_spans_in_a_worker_step_nest_under_it(server: IngestServer, method: str) -> None:
    """An OTel span started inside a worker's step (a real process) has that step as parent, in
    the parent's run's trace: the worker wraps OTel's context as the parent process does."""

    @pipelens.step
    def fan_out() -> tuple[str, str]:
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            return pool.submit(_otel_worker.query, 1).result()

    trace_id, parent_span_id = fan_out()
    pipelens.flush(10)
    (query,) = [e for e in _finished(server).values() if e.name == "query"]
    assert (trace_id, parent_span_id) == (trace_id_of(query.run_id), query.step_id)

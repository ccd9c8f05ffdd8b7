"""Steps nest across processes: ``ProcessPoolExecutor``, ``multiprocessing.Pool`` and
``multiprocessing.Process``, with the fork and spawn start methods.

A task submitted inside a step carries that step's run and step ids and a recipe of the run's
transport; the worker sends its own steps to a real ingest server, under the submitting step,
and has sent them all before the task answers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
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
        pipelens.configure(transport=transport, propagate_processes=True)
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


@pytest.mark.parametrize("method", METHODS)
def test_a_process_subclass_run_nests_under_the_starting_step(
    server: IngestServer, method: str
) -> None:
    """A ``Process`` subclass that overrides ``run()`` (no target): the steps its ``run()``
    calls nest under the step that started it, and the process object is left as it was."""
    process_class = _picklable.SQUARES_PROCESSES.get(method)
    if process_class is None:
        pytest.skip(f"no {method} start method here")

    @pipelens.step
    def fan_out() -> int:
        process = process_class(3)  # type: ignore[call-arg]
        process.start()
        process.join(60)
        assert "run" not in vars(process)  # the task was the process's only while it started
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


def _transport_settings(transport: object) -> tuple[object, ...]:
    """What a transport was built with: batching, memory, retries, spool, debug."""
    delivery = transport._delivery  # type: ignore[attr-defined]
    spool = delivery.spool
    return (
        type(transport),
        transport.url,  # type: ignore[attr-defined]
        transport.max_queue,  # type: ignore[attr-defined]
        transport.max_batch,  # type: ignore[attr-defined]
        transport.interval,  # type: ignore[attr-defined]
        transport.max_batch_bytes,  # type: ignore[attr-defined]
        transport.max_buffer_bytes,  # type: ignore[attr-defined]
        delivery.max_attempts,
        delivery.backoff,
        delivery.max_backoff,
        delivery._log_level,
        None if spool is None else (spool.directory, spool.max_bytes),
    )


def test_a_worker_builds_its_transport_with_all_the_parents_settings(tmp_path: Path) -> None:
    """The recipe a task carries keeps the parent transport's batch, buffer, retry, spool and
    debug settings (the OTLP export's too), not only its URL and token."""
    parents = [
        pipelens.HttpTransport(
            "http://127.0.0.1:9",
            "t0ken",
            max_batch_bytes=1 << 20,
            max_buffer_bytes=8 << 20,
            max_attempts=3,
            backoff=0.25,
            max_backoff=4.0,
            spool_dir=tmp_path / "spool",
            max_spool_bytes=1 << 24,
            max_queue=500,
            max_batch=50,
            interval=0.2,
            debug=True,
            heartbeat=None,
        ),
        pipelens.OtlpTransport(
            "http://127.0.0.1:9",
            spool_dir=tmp_path / "otlp",
            max_queue=300,
            max_batch=30,
            interval=0.3,
            debug=True,
        ),
    ]
    for parent in parents:
        recipe = parent.worker_recipe()
        assert recipe is not None
        made = pickle.loads(pickle.dumps(recipe))()
        try:
            assert _transport_settings(parent) == _transport_settings(made)
        finally:
            made.close(0)
            parent.close(0)


#: Prints where each process entry point's function comes from, after the script before it.
_WHO_PATCHED = """
import json
import concurrent.futures.process, multiprocessing.pool, multiprocessing.process
print(json.dumps([
    concurrent.futures.process.ProcessPoolExecutor.submit.__module__,
    multiprocessing.pool.Pool.apply_async.__module__,
    multiprocessing.process.BaseProcess.start.__module__,
]))
"""
_OURS = "pipelens._otel.processes"


def _entry_points_after(script: str) -> list[str]:
    """The modules of the process entry points in a new interpreter that ran ``script``."""
    code = textwrap.dedent(script) + _WHO_PATCHED
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    modules: list[str] = json.loads(done.stdout.splitlines()[-1])
    return modules


def test_import_pipelens_patches_no_process_entry_point() -> None:
    """``import pipelens`` leaves ``ProcessPoolExecutor``, ``Pool`` and ``Process`` as they are,
    imported before it or after: importing PipeLens changes nothing until the program asks."""
    assert _entry_points_after("import multiprocessing.pool\nimport pipelens\n") == [
        "concurrent.futures.process",
        "multiprocessing.pool",
        "multiprocessing.process",
    ]


@pytest.mark.parametrize(
    "call", ["pipelens.auto_patch()", "pipelens.configure(propagate_processes=True)"]
)
def test_auto_patch_or_configure_patches_the_process_entry_points(call: str) -> None:
    """``auto_patch()`` (or ``configure(propagate_processes=True)``) patches the three entry
    points, whether their modules were imported before the call or are imported after it."""
    script = f"import multiprocessing.pool\nimport pipelens\n{call}\n"
    assert _entry_points_after(script) == [_OURS] * 3


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


@pytest.mark.parametrize("method", METHODS)
def test_a_worker_passes_on_the_other_vendors_tracestate_entries_of_its_run(
    server: IngestServer, method: str
) -> None:
    """A run continued from a caller whose ``tracestate`` holds other vendors' entries: a
    worker process's step (a real process) sends them on after ours, as the parent's steps do
    (before: the worker's requests carried our entry alone)."""
    caller = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
    }
    with pipelens.continue_run(caller, "handle"):
        here = pipelens.propagation_headers()
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            there = pool.submit(_otel_worker.outgoing, 1).result()
    pipelens.flush(10)
    assert here["tracestate"].split(",")[1:] == ["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"]
    assert there["tracestate"].split(",")[0].startswith("pipelens=")
    assert there["tracestate"].split(",")[1:] == ["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"]
    assert there["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"

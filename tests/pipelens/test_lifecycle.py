"""Process lifecycle in real subprocesses: exit flushes without hanging, fork, shutdown."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pipelens
from pipelens.events import RunStarted, StepFinished

# Generous: a hung exit is what these tests catch, and a loaded machine must not look like one.
HANG = 60

PRELUDE = """
import os, sys, threading
import pipelens

@pipelens.step
def work(x):
    return x + 1
"""


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (after PRELUDE) in a fresh interpreter; fails the test if it hangs."""
    try:
        return subprocess.run(
            [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=HANG,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the interpreter did not exit within {HANG}s; stderr: {exc.stderr!r}")


def events_per_run(path: Path) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for batch in pipelens.read_event_file(path):
        counts.update(e.run_id for e in batch.events)
    return dict(counts)


def step_results(path: Path) -> list[str | None]:
    return [
        e.result
        for batch in pipelens.read_event_file(path)
        for e in batch.events
        if isinstance(e, StepFinished)
    ]


def pipelines(path: Path) -> dict[str, str]:
    return {
        e.run_id: e.pipeline
        for batch in pipelens.read_event_file(path)
        for e in batch.events
        if isinstance(e, RunStarted)
    }


@pytest.mark.parametrize("name", ["events.jsonl", "events.msgpack"])
def test_events_pending_at_exit_are_written(tmp_path: Path, name: str) -> None:
    """Events still queued when the program ends are written by the exit flush."""
    done = run_python(
        f"""
        pipelens.configure(transport=pipelens.FileTransport({name!r}, interval=3600))
        work(1)
        work(2)
        print("end of program")
        """,
        tmp_path,
    )
    assert (done.returncode, done.stdout) == (0, "end of program\n"), done.stderr
    assert sorted(events_per_run(tmp_path / name).values()) == [4, 4]


@pytest.mark.parametrize("blocked_before_exit", [True, False])
def test_exit_does_not_hang_on_a_write_that_never_returns(
    tmp_path: Path, blocked_before_exit: bool
) -> None:
    """A transport stuck in write() delays the exit by exit_timeout, not forever."""
    done = run_python(
        f"""
        class Stuck(pipelens.BatchingTransport):
            entered = threading.Event()

            def write(self, batch):
                self.entered.set()
                threading.Event().wait()  # a server that never answers

        stuck = Stuck(interval=3600)
        pipelens.configure(transport=stuck, exit_timeout=0.2)
        work(1)
        if {blocked_before_exit!r}:
            assert pipelens.flush(0.05) is False
            assert stuck.entered.wait(30)
            work(2)
        print("end of program")
        """,
        tmp_path,
    )
    assert (done.returncode, done.stdout) == (0, "end of program\n"), done.stderr


def test_forked_child_writes_its_own_events_once(tmp_path: Path) -> None:
    """A child after fork starts its own writer and never resends the parent's queued events."""
    done = run_python(
        """
        pipelens.configure(transport=pipelens.FileTransport("events.jsonl", interval=3600))

        @pipelens.step
        def in_parent():
            return work(1)

        @pipelens.step
        def in_child():
            return work(2)

        in_parent()  # queued, not yet written: the writer sleeps for an hour
        pid = os.fork()
        if pid == 0:
            in_child()
            writers = [t.name for t in threading.enumerate() if t.name.startswith("pipelens-")]
            flushed = pipelens.flush(30)
            os._exit(0 if flushed and writers == ["pipelens-FileTransport"] else 3)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
        """,
        tmp_path,
    )
    assert (done.returncode, done.stdout) == (0, "child exit 0\n"), done.stderr
    path = tmp_path / "events.jsonl"
    names = pipelines(path)
    counts = {names[run_id]: n for run_id, n in events_per_run(path).items()}
    assert counts == {"in_parent": 6, "in_child": 6}


def test_multiprocessing_pool_workers_flush_their_events_when_they_end(tmp_path: Path) -> None:
    """Pool workers (which skip atexit) write their runs when they end; nothing is duplicated."""
    done = run_python(
        """
        import multiprocessing

        def task(x):  # plain function: the pool pickles it by name
            return work(x)

        if __name__ == "__main__":
            pipelens.configure(transport=pipelens.FileTransport("events.msgpack", interval=3600))
            work(100)  # queued in the parent when the workers fork
            pool = multiprocessing.get_context("fork").Pool(2)
            print(pool.map(task, range(4)))
            pool.close()
            pool.join()
        """,
        tmp_path,
    )
    assert (done.returncode, done.stdout) == (0, "[1, 2, 3, 4]\n"), done.stderr
    path = tmp_path / "events.msgpack"
    assert sorted(events_per_run(path).values()) == [4] * 5
    assert sorted(step_results(path), key=int) == ["1", "2", "3", "4", "101"]


def test_new_steps_after_shutdown_run_and_a_new_transport_works(tmp_path: Path) -> None:
    """After shutdown() steps still run (sending nothing); configure() afterwards sends again."""
    done = run_python(
        """
        pipelens.configure(file="first.jsonl")
        work(1)
        print(pipelens.shutdown(30))
        print(work(10))
        pipelens.configure(file="second.jsonl")
        work(20)
        """,
        tmp_path,
    )
    assert (done.returncode, done.stdout) == (0, "True\n11\n"), done.stderr
    assert (step_results(tmp_path / "first.jsonl"), step_results(tmp_path / "second.jsonl")) == (
        ["2"],
        ["21"],
    )


def test_a_full_queue_at_exit_and_events_after_the_exit_flush_all_reach_the_file(
    tmp_path: Path,
) -> None:
    """The program ends with a queue of 3 full, and an atexit hook that runs after PipeLens's
    exit flush makes 20 more runs: the exit does not hang and every event is in the file."""
    path = tmp_path / "events.jsonl"
    # Registered before PRELUDE imports pipelens: atexit runs it after PipeLens's flush.
    code = f"""
    import atexit
    atexit.register(lambda: [work(i) for i in range(20)])
    import pipelens
    pipelens.configure(transport=pipelens.FileTransport({str(path)!r}, max_queue=3,
                                                        interval=3600))
    for i in range(50):
        work(i)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code).replace("import pipelens\n", PRELUDE, 1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert sorted(events_per_run(path).values()) == [4] * 70


def test_a_forked_child_of_a_parent_with_a_full_queue_sends_without_waiting(
    tmp_path: Path,
) -> None:
    """The parent's writer is held and its queue full when it forks: the child's runs do not
    wait on the parent's queue (or its thread, absent in the child) and reach the file."""
    path = tmp_path / "events.jsonl"
    done = run_python(
        f"""
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        gate = threading.Event()

        class Held(pipelens.FileTransport):
            def write(self, batch):
                gate.wait()
                super().write(batch)

        transport = Held({str(path)!r}, max_queue=3, interval=3600)
        transport.max_wait = 600.0
        pipelens.configure(transport=transport)
        for i in range(3):
            transport.send(pipelens.events.RunStarted(run_id=str(i), pipeline="p", start_ns=1))
        pid = os.fork()
        if pid == 0:
            gate.set()
            for i in range(10):
                work(i)
            os._exit(0 if pipelens.flush(30) and transport.dropped == 0 else 1)
        _, status = os.waitpid(pid, 0)
        gate.set()
        sys.exit(os.waitstatus_to_exitcode(status))
        """,
        tmp_path,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert sorted(events_per_run(path).values()) == [1] * 3 + [4] * 10

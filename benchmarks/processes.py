"""What nesting across processes costs: a ``ProcessPoolExecutor.map`` of small ``@step`` tasks
inside a step, with no transport (the baseline: nothing is carried) and with an
``HttpTransport`` to a local ingest server (each task carries the step and flushes its worker's
events before it answers).

Run: ``python -m benchmarks.processes [--tasks N] [--repeat R] [--start-method fork|spawn]``.
Prints µs per task (min and median of the repeats), the ratio against the baseline measured in
the same run, and the events the server received against those expected.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pipelens
from benchmarks._machine import machine_lines
from tests.pipelens._ingest_server import IngestServer


@pipelens.step
def work(x: int) -> int:
    """A small task: one step, one child."""
    return child(x) + 1


@pipelens.step
def child(x: int) -> int:
    return x * 2


def _timed(pool: ProcessPoolExecutor, tasks: int, repeat: int) -> list[float]:
    @pipelens.step
    def fan_out() -> int:
        return sum(pool.map(work, range(tasks)))

    fan_out()  # warm-up: the workers start and build their transport
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fan_out()
        times.append((time.perf_counter() - t0) / tasks * 1e6)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.processes", description=__doc__)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--start-method", default="fork", choices=("fork", "spawn", "forkserver"))
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeat < 1:
        parser.error("--tasks and --repeat: expected positive integers")
    context = multiprocessing.get_context(args.start_method)
    for line in machine_lines(["pipelens"], f"start method: {args.start_method}, 2 workers"):
        print(line)
    rows = []
    pipelens.configure(transport=None)
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        rows.append(("no transport (baseline)", _timed(pool, args.tasks, args.repeat)))
    with IngestServer() as server, tempfile.TemporaryDirectory() as spool:
        transport = pipelens.HttpTransport(server.url, spool_dir=Path(spool), heartbeat=None)
        pipelens.configure(transport=transport)
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            rows.append(("carried, HttpTransport", _timed(pool, args.tasks, args.repeat)))
        pipelens.flush(30)
        # Each run: its start and end, the root's start and finish, two steps per task.
        expected = (args.repeat + 1) * (4 + 4 * args.tasks)
        received = len(server.events())
        transport.close(5)
    baseline = min(rows[0][1])
    print(f"{'contender':<28}{'min µs/task':>14}{'median':>10}{'x baseline':>12}")
    for label, times in rows:
        print(
            f"{label:<28}{min(times):>14.1f}{statistics.median(times):>10.1f}"
            f"{min(times) / baseline:>12.2f}"
        )
    print(f"events received: {received:,} of {expected:,} expected")
    return 0 if received == expected else 1


if __name__ == "__main__":
    sys.exit(main())

"""The contenders of ``benchmarks.overhead``: what each one calls, and how it is timed.

Each contender takes a :class:`Plan` and returns the seconds per call of every timed repeat. It
runs alone in a worker process (``python -m benchmarks.overhead --worker KEY``), so it imports
what it measures itself: the bare contenders never import PipeLens or OpenTelemetry.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExportResult

#: CPU seconds per call of the calling thread, one per timed repeat of the last contender
#: measured in this process (the worker reports them beside the wall-clock times): on a loaded
#: machine they show the cost without the waits for a core, and never count the export's thread.
CPU_TIMES: list[float] = []
RUN_SIZE = 100  # calls per run: a new run every 100 calls, as real pipelines do
BIG_RUN_SIZE = 10_000  # shows whether a step's cost grows with the size of its run
MB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """How much to measure: ``repeat`` timed repeats of ``number`` calls (plus one warm-up)."""

    number: int
    repeat: int
    run_size: int = RUN_SIZE


# --- the traced work: small enough that the instrumentation is what gets measured -----------


def work(x: int, y: int) -> int:
    return x + y


async def awork(x: int, y: int) -> int:
    return x + y


def gen_work(x: int, y: int) -> Iterator[int]:
    yield x + y


def middle(x: int, y: int) -> int:
    return work(x, y)


def outer(x: int, y: int) -> int:
    return middle(x, y)


# --- timing ---------------------------------------------------------------------------------


def _time_sync(
    run: Callable[[int], object],
    plan: Plan,
    *,
    finish: Callable[[], object] | None = None,
    after: Callable[[], None] | None = None,
) -> list[float]:
    """Seconds per call of each repeat; ``run(n)`` makes ``n`` calls inside one run.

    ``finish`` is timed too (a transport's flush: its background work is part of the cost);
    ``after`` is not (checks and clean-up). The first repeat warms up and is dropped.
    """
    runs = plan.number // plan.run_size
    times: list[float] = []
    for i in range(plan.repeat + 1):
        # Garbage collection stays on while timing: steps form reference cycles, and collecting
        # them is a cost users pay too. Collecting before each repeat keeps repeats comparable.
        gc.collect()
        c0 = time.thread_time()
        t0 = time.perf_counter()
        for _ in range(runs):
            run(plan.run_size)
        if finish is not None:
            finish()
        elapsed = time.perf_counter() - t0
        cpu = time.thread_time() - c0
        if after is not None:
            after()
        if i:
            times.append(elapsed / (runs * plan.run_size))
            CPU_TIMES.append(cpu / (runs * plan.run_size))
    return times


def _time_async(run: Callable[[int], Awaitable[object]], plan: Plan) -> list[float]:
    """Like :func:`_time_sync` for ``async`` work, awaited inside one running event loop."""

    async def main() -> list[float]:
        runs = plan.number // plan.run_size
        times: list[float] = []
        for i in range(plan.repeat + 1):
            gc.collect()
            c0 = time.thread_time()
            t0 = time.perf_counter()
            for _ in range(runs):
                await run(plan.run_size)
            elapsed = time.perf_counter() - t0
            cpu = time.thread_time() - c0
            if i:
                times.append(elapsed / (runs * plan.run_size))
                CPU_TIMES.append(cpu / (runs * plan.run_size))
        return times

    return asyncio.run(main())


# --- contenders: each returns seconds per call for every repeat ----------------------------


def _bare(plan: Plan) -> list[float]:
    def run(n: int) -> None:
        for i in range(n):
            work(i, i)

    return _time_sync(run, plan)


def _bare_async(plan: Plan) -> list[float]:
    async def run(n: int) -> None:
        for i in range(n):
            await awork(i, i)

    return _time_async(run, plan)


def _bare_generator(plan: Plan) -> list[float]:
    def run(n: int) -> None:
        for i in range(n):
            for _ in gen_work(i, i):
                pass

    return _time_sync(run, plan)


def _bare_nested(plan: Plan) -> list[float]:
    def run(n: int) -> None:
        for i in range(n):
            outer(i, i)

    return _time_sync(run, plan)


def _step_sync(plan: Plan) -> list[float]:
    import pipelens

    traced = pipelens.step(work)

    @pipelens.step
    def run(n: int) -> None:
        for i in range(n):
            traced(i, i)

    return _time_sync(run, plan)


def _step_big_run(plan: Plan) -> list[float]:
    number = max(plan.number // BIG_RUN_SIZE, 1) * BIG_RUN_SIZE
    return _step_sync(replace(plan, number=number, run_size=BIG_RUN_SIZE))


def _step_root(plan: Plan) -> list[float]:
    """Every call a run of its own (no run open around it): what opening and ending a run
    costs (the run, its id, its root step), of which each step of a run pays 1/run size."""
    import pipelens

    traced = pipelens.step(work)

    def run(n: int) -> None:
        for i in range(n):
            traced(i, i)

    return _time_sync(run, plan)


def _step_file(plan: Plan) -> list[float]:
    import pipelens

    traced = pipelens.step(work)

    @pipelens.step
    def run(n: int) -> None:
        for i in range(n):
            traced(i, i)

    runs = plan.number // plan.run_size
    # Per run: RunStarted, the root's StepStarted/StepFinished, RunFinished; 2 per child step.
    expected = runs * 4 + runs * plan.run_size * 2
    with tempfile.TemporaryDirectory(prefix="pipelens-bench-") as tmp:
        path = Path(tmp) / "events.jsonl"
        transport = pipelens.FileTransport(path)
        pipelens.configure(transport=transport)

        def check_and_truncate() -> None:
            # Proof that the full event path ran: every event reached the file, none was dropped.
            written = sum(len(batch.events) for batch in pipelens.read_event_file(path))
            if written != expected or transport.dropped:
                raise RuntimeError(
                    f"FileTransport wrote {written} events of {expected} "
                    f"({transport.dropped} dropped)"
                )
            path.write_bytes(b"")

        times = _time_sync(run, plan, finish=transport.flush, after=check_and_truncate)
        pipelens.configure(transport=None)
    return times


def _step_otel_imported(plan: Plan) -> list[float]:
    """``@step`` in a program that uses OpenTelemetry (an SDK provider of its own, no span
    current): what the bridge costs when it is armed but has nothing to join."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    provider.get_tracer("benchmarks.overhead")
    times = _step_sync(plan)
    provider.shutdown()
    return times


_DISCARD_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _step_otlp(plan: Plan, *, flush_timed: bool) -> list[float]:
    """``@step`` with the OTLP export on, posting to a collector stand-in in another process.

    ``flush_timed=False`` measures the caller's thread (its CPU time is the figure): the
    export's thread takes each run once it ends, as in use, and what is left is flushed outside
    the timing. ``True`` times the flush too: every span encoded and posted.
    """
    import subprocess
    import sys

    import pipelens

    server = subprocess.Popen(
        [sys.executable, "-c", _DISCARD_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        events = plan.number * 2 + plan.number // plan.run_size * 4 + 1
        transport = pipelens.OtlpTransport(
            f"http://127.0.0.1:{port}",
            spool=False,
            interval=3600.0,
            max_batch=events,
            max_queue=events,
            # Room for every event (1 KiB each until a batch is weighed, in a quarter of the
            # bound): a full queue would make the caller wait for the thread.
            max_buffer_bytes=4 * 1024 * events,
        )
        pipelens.configure(transport=transport)
        traced = pipelens.step(work)

        @pipelens.step
        def run(n: int) -> None:
            for i in range(n):
                traced(i, i)

        def flushed() -> None:
            if not transport.flush(120) or transport.stats().dropped:
                raise RuntimeError(f"the OTLP export lost spans: {transport.stats()}")

        if flush_timed:
            times = _time_sync(run, plan, finish=flushed)
        else:
            times = _time_sync(run, plan, after=flushed)
        pipelens.configure(transport=None)
        return times
    finally:
        server.kill()
        server.wait()


def _step_otlp_caller(plan: Plan) -> list[float]:
    return _step_otlp(plan, flush_timed=False)


def _step_otlp_flushed(plan: Plan) -> list[float]:
    return _step_otlp(plan, flush_timed=True)


def _step_async(plan: Plan) -> list[float]:
    import pipelens

    traced = pipelens.step(awork)

    @pipelens.step
    async def run(n: int) -> None:
        for i in range(n):
            await traced(i, i)

    return _time_async(run, plan)


def _step_generator(plan: Plan) -> list[float]:
    """A ``@step`` generator consumed to its end: the step is made current around each resume."""
    import pipelens

    traced = pipelens.step(gen_work)

    @pipelens.step
    def run(n: int) -> None:
        for i in range(n):
            for _ in traced(i, i):
                pass

    return _time_sync(run, plan)


def _floor(plan: Plan) -> list[float]:
    """The least any contextvar tracer's decorator pays per call, PipeLens or not: a wrapper
    that sets a ContextVar, reads the clocks (monotonic start and end, wall start), builds a
    small msgspec Struct and resets the ContextVar. No ids, no capture, no queue: the Struct is
    dropped, so the figure is a floor, not a tracer."""
    from contextvars import ContextVar

    import msgspec

    class Span(msgspec.Struct, kw_only=True, frozen=True):
        name: str
        parent: str | None
        wall_ns: int
        duration_ns: int

    current: ContextVar[str | None] = ContextVar("floor_span", default=None)
    get, set_, reset = current.get, current.set, current.reset
    perf, wall = time.perf_counter_ns, time.time_ns

    def traced(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__name__

        def wrapper(*args: Any) -> Any:
            parent = get()
            token = set_(name)
            start, wall_ns = perf(), wall()
            result = fn(*args)
            Span(name=name, parent=parent, wall_ns=wall_ns, duration_ns=perf() - start)
            reset(token)
            return result

        return wrapper

    child = traced(work)

    # The same shape as the steps: a parent span per 100 calls, one child span per call.
    @traced
    def run(n: int) -> None:
        for i in range(n):
            child(i, i)

    return _time_sync(run, plan)


def _step_nested(plan: Plan) -> list[float]:
    import pipelens

    inner_step = pipelens.step(work)

    @pipelens.step
    def middle_step(x: int, y: int) -> int:
        return inner_step(x, y)

    @pipelens.step
    def outer_step(x: int, y: int) -> int:
        return middle_step(x, y)

    @pipelens.step
    def run(n: int) -> None:
        for i in range(n):
            outer_step(i, i)

    return _time_sync(run, plan)


def _span(plan: Plan) -> list[float]:
    import pipelens

    span = pipelens.span

    @pipelens.step
    def run(n: int) -> None:
        for i in range(n):
            with span("work"):
                work(i, i)

    return _time_sync(run, plan)


def _otel(plan: Plan) -> list[float]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    start = provider.get_tracer("benchmarks.overhead").start_as_current_span

    # The same shape as the steps: a parent span per 100 calls, one child span per call.
    def run(n: int) -> None:
        with start("run"):
            for i in range(n):
                with start("work") as span:
                    span.set_attribute("result", work(i, i))

    times = _time_sync(run, plan, finish=provider.force_flush)
    provider.shutdown()
    return times


def _rss_bytes() -> int:
    """The resident set size now (Linux ``/proc``; elsewhere the peak, the best there is)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_growth(runs: int) -> dict[str, float]:
    """RSS growth over ``runs`` runs of 100 steps each, with default settings (no transport)."""
    import pipelens

    traced = pipelens.step(work)

    @pipelens.step
    def run(n: int) -> None:
        for i in range(n):
            traced(i, i)

    for _ in range(100):  # warm-up: imports, caches and allocator arenas settle first
        run(RUN_SIZE)
    gc.collect()
    before = peak = _rss_bytes()
    t0 = time.perf_counter()
    for i in range(runs):
        run(RUN_SIZE)
        if i % 100 == 0:
            peak = max(peak, _rss_bytes())
    seconds = time.perf_counter() - t0
    gc.collect()
    after = _rss_bytes()
    return {
        "runs": runs,
        "steps": runs * RUN_SIZE,
        "seconds": seconds,
        "growth_mb": (after - before) / MB,
        "peak_growth_mb": (max(peak, after) - before) / MB,
    }


@dataclass(frozen=True)
class Contender:
    """One row of the table; ``twin`` is the bare contender its overhead is measured against."""

    key: str
    label: str
    twin: str | None
    measure: Callable[[Plan], list[float]]


BASELINE = "otel"
CONTENDERS = (
    Contender("bare", "bare call", None, _bare),
    Contender("bare_async", "bare await", None, _bare_async),
    Contender("bare_generator", "bare generator", None, _bare_generator),
    Contender("bare_nested", "bare 3-deep call", None, _bare_nested),
    Contender("floor", "minimal-span floor", "bare", _floor),
    Contender("step", "@step sync", "bare", _step_sync),
    Contender("step_big_run", "@step sync, 10,000-step runs", "bare", _step_big_run),
    Contender("step_root", "@step sync, a run per call", "bare", _step_root),
    Contender("step_file", "@step sync + FileTransport", "bare", _step_file),
    Contender("step_otel", "@step sync, OTel SDK imported", "bare", _step_otel_imported),
    Contender("step_otlp", "@step sync + OTLP (caller)", "bare", _step_otlp_caller),
    Contender("step_otlp_flush", "@step sync + OTLP (+encode,post)", "bare", _step_otlp_flushed),
    Contender("step_async", "@step async", "bare_async", _step_async),
    Contender("step_generator", "@step generator", "bare_generator", _step_generator),
    Contender("step_nested", "3-deep nested @step (per outer)", "bare_nested", _step_nested),
    Contender("span", "pipelens.span", "bare", _span),
    Contender(BASELINE, "OTel SDK span (baseline)", "bare", _otel),
)
MEMORY_LABEL = "memory"

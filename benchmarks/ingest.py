"""Ingest throughput of the server on its embedded PostgreSQL, end to end and per request.

Run ``python -m benchmarks.ingest`` (``--quick`` for a smoke run whose figures mean nothing).
It starts an embedded PostgreSQL in a temporary directory and ``pipelens serve`` on a free port
against it, then measures, in one run:

* **end to end**: N producer processes (2 and 4 by default) each make runs of 100 steps with
  ``@pipelens.step`` and ``pipelens.flush()`` through ``pipelens.HttpTransport`` with its default
  settings; the figure is the steps stored per second, timed from the moment every producer is
  told to start until every finished step is visible in the database (process start-up is not
  counted; producing the events is);
* **per request**: one ``httpx`` client posts realistic 1,000-event msgpack batches (events of
  the same runs, as ``HttpTransport`` sends them) to ``POST /api/v1/events`` one after the other:
  p50/p99 latency; then a fifth as many 5,000-event requests, what ``HttpTransport`` sends under
  load (its ``max_batch``);
* **scale**: the same 5,000-event requests with 10,000 and then 100,000 runs already stored
  (p50 per request and the ratio): the cost of a batch must not grow with the data;
* **fresh data**: while N producers run, ``GET /api/v1/runs`` is polled every 20 ms; how long
  after its end each finished run first appears there (p50/p99; the poll adds up to 20 ms):
  with the producers flat out (the server's backlog), then at half the best end-to-end rate;
* **client memory**: one producer makes 1,000,000 steps through ``HttpTransport`` to this
  server, which is slower than it: the producer's RSS growth, with the defaults and with its
  queue bounded by count alone (as before) in the same run (the rest goes to the spool; nothing
  is dropped);
* **baseline**: raw ``COPY`` of the same step rows with psycopg into a scratch table shaped like
  ``steps`` with its indexes (one transaction) — the most the database can take without merging;
  the end-to-end figure is printed as a share of it.

The target is printed as information, never as an exit status: a noisy machine must not fail
anything.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._ingest_server import Server, empty_tables, finished_steps, running_server
from benchmarks._machine import machine_lines, postgres_version

ROOT = Path(__file__).resolve().parent.parent
STEPS_PER_RUN = 100
EVENTS_PER_REQUEST = 1000  # a realistic request
TRANSPORT_BATCH = 5000  # HttpTransport's default max_batch: its requests under load
TARGET_STEPS_PER_S = 100_000
#: The end-to-end figure as a share of raw indexed COPY of the same rows, in the same run.
TARGET_SHARE_OF_COPY = 0.75
#: Runs stored before the scale measurement's requests (the cost must be flat between them).
SCALE_RUNS = (10_000, 100_000)
TARGET_FRESH_P50_MS = 150
#: Runs of the client memory measurement (1,000,000 steps) and its target RSS growth.
MEMORY_RUNS = 10_000
TARGET_CLIENT_MB = 40
TARGET_FRESH_P99_MS = 500
_STORE_TIMEOUT_S = 600


# --- what a producer does ---------------------------------------------------------------------


#: The pipeline of the producers' runs (their root step's name).
PIPELINE = "pipeline"


def _pipeline_steps() -> Any:
    """The traced program: a root step calling a child step 99 times (100 steps a run), of the
    pipeline ``PIPELINE``."""
    import pipelens

    @pipelens.step
    def work(i: int) -> int:
        return i + 1

    @pipelens.step
    def pipeline(n: int) -> int:
        return sum(work(i) for i in range(n - 1))

    return pipeline


def _produce(url: str, runs: int, max_batch: int | None, pace: float | None) -> dict[str, Any]:
    """Producer worker: wait for "go" on stdin, make ``runs`` runs, flush, report on stdout.

    ``pace``: runs per second at most (a program with work between its runs); none: flat out.
    """
    import pipelens

    # The defaults users get, unless --max-batch says otherwise.
    options = {} if max_batch is None else {"max_batch": max_batch}
    transport = pipelens.HttpTransport(url, **options)
    pipelens.configure(transport=transport)
    pipeline = _pipeline_steps()
    print("ready", flush=True)
    sys.stdin.readline()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_at_start = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    for i in range(runs):
        if pace is not None and (wait := start + i / pace - time.perf_counter()) > 0:
            time.sleep(wait)
        pipeline(STEPS_PER_RUN)
    produced = time.perf_counter() - start
    flushed = pipelens.flush(_STORE_TIMEOUT_S)
    stats = transport.stats()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu_at_start,
        "produce_s": produced,
        "flush_s": time.perf_counter() - start,
        "flushed": flushed,
        "sent": stats.sent,
        "retried": stats.retried,
        "spooled": stats.spooled,
        "dropped": stats.dropped,
    }


def _memory_worker(url: str, runs: int, count_bound: bool) -> dict[str, Any]:
    """Memory worker: ``runs`` runs as fast as it can to ``url``; RSS growth, then out.

    ``count_bound``: the transport as it was before its queue was bounded by bytes (100,000
    events whatever they weigh, 32 MiB of request bodies beside them).
    """
    import pipelens
    from benchmarks._contenders import _rss_bytes

    class CountBound(pipelens.HttpTransport):
        def _queue_budget(self) -> None:
            return None

    if count_bound:
        transport: pipelens.HttpTransport = CountBound(url, max_buffer_bytes=32 * 2**20 * 4 // 3)
        transport._limit = transport.max_queue
    else:
        transport = pipelens.HttpTransport(url)
    pipelens.configure(transport=transport)
    pipeline = _pipeline_steps()
    for _ in range(100):  # warm-up: imports, caches, allocator arenas, the connection
        pipeline(STEPS_PER_RUN)
    before = peak = _rss_bytes()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_at_start = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    peak_queue = 0
    for i in range(runs):
        pipeline(STEPS_PER_RUN)
        if i % 50 == 0:
            peak = max(peak, _rss_bytes())
            peak_queue = max(peak_queue, len(transport._queue))
    after = _rss_bytes()
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    transport.flush(0)  # what is not sent yet goes to the spool: the server need not catch up
    stats = transport.stats()
    return {
        "steps": runs * STEPS_PER_RUN,
        "seconds": seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu_at_start,
        "growth_mb": (after - before) / 2**20,
        "peak_growth_mb": (max(peak, after) - before) / 2**20,
        "peak_buffer_mb": transport._delivery.peak_bytes / 2**20,
        "peak_queue": peak_queue,
        "spooled": stats.spooled,
        "dropped": stats.dropped,
    }


def client_memory(server: Server, runs: int) -> list[dict[str, Any]]:
    """The memory worker with the defaults, then with the queue bounded by count alone."""
    measured = []
    for count_bound in (False, True):
        spool = tempfile.mkdtemp(prefix="pipelens-bench-spool-")
        command = [sys.executable, "-m", "benchmarks.ingest", "--memory-worker", server.url]
        command += ["--runs", str(runs)]
        if count_bound:
            command.append("--count-bound")
        try:
            out = subprocess.run(
                command,
                cwd=ROOT,
                env={**os.environ, "PIPELENS_SPOOL_DIR": spool},
                capture_output=True,
                text=True,
                check=True,
                timeout=_STORE_TIMEOUT_S,
            ).stdout
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        measured.append({"count_bound": count_bound, **json.loads(out)})
    return measured


# --- the three measurements -------------------------------------------------------------------


def end_to_end(
    server: Server,
    producers: int,
    runs: int,
    max_batch: int | None = None,
    pace: float | None = None,
    keep_history: bool = False,
) -> dict[str, Any]:
    """Steps per second from ``producers`` processes until every step is in the database.

    ``keep_history``: on the tables as they are (``benchmarks.scale``: millions of steps stored,
    none of them of the producers' pipeline), instead of emptied first.
    """
    url, conninfo = server.url, server.conninfo
    if not keep_history:
        empty_tables(conninfo)
    spool = tempfile.mkdtemp(prefix="pipelens-bench-spool-")
    env = {**os.environ, "PIPELENS_SPOOL_DIR": spool}
    command = [sys.executable, "-m", "benchmarks.ingest", "--worker", url, "--runs", str(runs)]
    if max_batch is not None:
        command += ["--max-batch", str(max_batch)]
    if pace is not None:
        command += ["--pace", str(pace)]
    procs = [
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(producers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"a producer did not start (exit {proc.wait()})")
        expected = producers * runs * STEPS_PER_RUN
        cpu_before = server.cpu_seconds()
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        # A producer prints its report once pipelens.flush() returned, i.e. once the server
        # answered that everything was committed; the database is then asked, once (polling it
        # all along would take CPU from what is measured), and again until every step is there.
        reports = []
        for proc in procs:
            assert proc.stdout is not None
            reports.append(json.loads(proc.stdout.readline()))
        deadline = time.monotonic() + _STORE_TIMEOUT_S
        while (stored := finished_steps(conninfo, PIPELINE)) < expected and (
            time.monotonic() < deadline
        ):
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        cpu_after = server.cpu_seconds()
        for proc in procs:
            proc.communicate(timeout=_STORE_TIMEOUT_S)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(spool, ignore_errors=True)
    return {
        "producers": producers,
        "steps": expected,
        "stored": stored,
        "seconds": elapsed,
        "steps_per_s": stored / elapsed,
        "produce_s": max(r["produce_s"] for r in reports),
        "flush_s": max(r["flush_s"] for r in reports),
        "spooled": sum(r["spooled"] for r in reports),
        "dropped": sum(r["dropped"] for r in reports),
        "retried": sum(r["retried"] for r in reports),
        "cpu_producers": sum(r["cpu_s"] for r in reports),
        "cpu_server": cpu_after[0] - cpu_before[0],
        "cpu_postgres": cpu_after[1] - cpu_before[1],
    }


def realistic_events(runs: int) -> list[Any]:
    """The events ``@pipelens.step`` makes for ``runs`` runs of 100 steps, in emit order."""
    import pipelens
    from pipelens import MemoryTransport

    memory = MemoryTransport()
    pipelens.configure(transport=memory)
    pipeline = _pipeline_steps()
    for _ in range(runs):
        pipeline(STEPS_PER_RUN)
    pipelens.configure(transport=None)
    return memory.events


def request_latency(url: str, events: list[Any], size: int) -> dict[str, Any]:
    """Post ``events`` in ``size``-event msgpack requests, one after the other; time each."""
    import httpx

    from pipelens.events import Batch, encode_msgpack

    bodies = [
        encode_msgpack(Batch(events=events[i : i + size])) for i in range(0, len(events), size)
    ]
    times = []
    headers = {"content-type": "application/msgpack"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for body in bodies:
            start = time.perf_counter()
            response = client.post("/api/v1/events", content=body)
            times.append(time.perf_counter() - start)
            if response.status_code != 202:
                raise SystemExit(f"ingest answered {response.status_code}: {response.text}")
    times.sort()
    return {
        "requests": len(times),
        "bytes": statistics.mean(len(b) for b in bodies),
        "p50_ms": _percentile(times, 50) * 1e3,
        "p99_ms": _percentile(times, 99) * 1e3,
        "size": size,
        "events_per_s": len(times) * size / sum(times),
    }


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    index = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


def raw_copy(conninfo: str, events: list[Any]) -> dict[str, Any]:
    """``COPY`` the step rows of ``events`` into a scratch table like ``steps`` (its indexes
    too), in one go."""
    import psycopg

    from pipelens.events import Batch
    from pipelens_server._ingest._decode import batch_rows
    from pipelens_server._ingest._rows import STEPS

    rows = list(batch_rows(Batch(events=events)).steps.values())
    columns = ", ".join(STEPS.column_names)
    with psycopg.connect(conninfo) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy_steps")
        conn.execute(
            "CREATE TABLE bench_copy_steps (LIKE steps INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY bench_copy_steps ({columns}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - start
        conn.execute("DROP TABLE bench_copy_steps")
    return {"rows": len(rows), "seconds": elapsed, "rows_per_s": len(rows) / elapsed}


FRESH_POLL_S = 0.02
#: The paced fresh-data producers make this share of the best end-to-end rate of the same run.
FRESH_SHARE = 0.5


def freshness(
    server: Server, producers: int, runs: int, pace: float | None = None
) -> dict[str, Any]:
    """Seconds from a run's end until ``GET /api/v1/runs`` shows it finished, under load:
    producers flat out (what is measured is then the backlog the server has to work through),
    or at ``pace`` runs per second each."""
    import threading

    import httpx

    seen: dict[str, float] = {}
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not done.is_set():
                answer = client.get("/api/v1/runs", params={"status": "completed", "limit": 200})
                now = time.time_ns()
                for run in answer.json()["runs"]:
                    if run["run_id"] not in seen and run["end_ns"] is not None:
                        seen[run["run_id"]] = (now - run["end_ns"]) / 1e9
                done.wait(FRESH_POLL_S)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        flow = end_to_end(server, producers, runs, pace=pace)
    finally:
        done.set()
        poller.join()
    delays = sorted(seen.values()) or [float("nan")]
    return {
        "producers": producers,
        "runs": len(delays),
        "p50_ms": _percentile(delays, 50) * 1e3,
        "p99_ms": _percentile(delays, 99) * 1e3,
        "pace": pace,
        **flow,
    }


def at_scale(server: Server, events: list[Any], requests: int) -> list[dict[str, Any]]:
    """5,000-event requests timed with ``SCALE_RUNS`` runs already stored (one size after the
    other, the same requests each time on emptied tables)."""
    import psycopg

    measured = []
    for stored in SCALE_RUNS:
        empty_tables(server.conninfo)
        with psycopg.connect(server.conninfo) as conn:
            # Finished runs of ten steps each, as the benchmark's own would be, then analysed as
            # autovacuum would have done by then.
            conn.execute(
                "INSERT INTO runs (run_id, pipeline, status, start_ns, end_ns, last_seen_ns) "
                "SELECT 'stored-' || g, 'stored', 'completed', g, g + 1, 0 "
                "FROM generate_series(1, %s) AS g",
                (stored,),
            )
            conn.execute(
                "INSERT INTO steps (run_id, key, pipeline, step_id, name, status, start_ns) "
                "SELECT 'stored-' || (g / 10 + 1), 'work___' || g, 'stored', 's' || g, 'work', "
                "'completed', g FROM generate_series(0, %s) AS g",
                (stored * 10 - 1,),
            )
            conn.commit()
            conn.execute("ANALYZE runs")
            conn.execute("ANALYZE steps")
        latency = request_latency(server.url, events[: requests * TRANSPORT_BATCH], TRANSPORT_BATCH)
        measured.append({"stored": stored, **latency})
    return measured


# --- the report -------------------------------------------------------------------------------


def _report(
    machine: list[str],
    flows: list[dict[str, Any]],
    latency: list[dict[str, Any]],
    scale: list[dict[str, Any]],
    fresh: list[dict[str, Any]],
    memory: list[dict[str, Any]],
    copy: dict[str, Any],
    quick: bool,
) -> str:
    lines = [
        "PipeLens ingest: pipelens serve on the embedded PostgreSQL",
        *machine,
        "",
        f"end to end through HttpTransport (runs of {STEPS_PER_RUN} @pipelens.step steps, "
        "timed until every step is visible in the database):",
    ]
    for f in flows:
        lines.append(
            f"  {f['producers']} producers: {f['stored']:,} steps in {f['seconds']:.2f} s = "
            f"{f['steps_per_s']:,.0f} steps/s (producing took {f['produce_s']:.2f} s, "
            f"flushing ended at {f['flush_s']:.2f} s; "
            f"retried {f['retried']}, spooled {f['spooled']}, dropped {f['dropped']})"
        )
        per_step = 1e6 / f["stored"]
        lines.append(
            f"    CPU µs per step: producers {f['cpu_producers'] * per_step:.1f}, server "
            f"{f['cpu_server'] * per_step:.1f}, PostgreSQL {f['cpu_postgres'] * per_step:.1f}"
        )
    lines += [
        "",
        *(
            f"POST /api/v1/events, {lat['requests']} sequential requests of {lat['size']:,} "
            f"events ({lat['bytes'] / 1024:.0f} KiB msgpack): p50 {lat['p50_ms']:.1f} ms, "
            f"p99 {lat['p99_ms']:.1f} ms, {lat['events_per_s']:,.0f} events/s"
            for lat in latency
        ),
        *(
            f"with {sc['stored']:,} runs stored: {sc['requests']} requests of {sc['size']:,} "
            f"events, p50 {sc['p50_ms']:.1f} ms, p99 {sc['p99_ms']:.1f} ms"
            for sc in scale
        ),
        *(
            [
                f"  p50 at {scale[-1]['stored']:,} runs / at {scale[0]['stored']:,}: "
                f"{scale[-1]['p50_ms'] / scale[0]['p50_ms']:.2f}x"
            ]
            if len(scale) > 1
            else []
        ),
        *(
            f"fresh data, {f['producers']} producers "
            + ("flat out" if f["pace"] is None else f"at {f['pace']:.1f} runs/s each")
            + f" ({f['steps_per_s']:,.0f} steps/s): {f['runs']} finished runs shown by "
            f"GET /api/v1/runs p50 {f['p50_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms after their "
            f"end (polled every {FRESH_POLL_S * 1e3:.0f} ms); CPU µs per step: producers "
            f"{f['cpu_producers'] * 1e6 / f['stored']:.1f}, server "
            f"{f['cpu_server'] * 1e6 / f['stored']:.1f}, PostgreSQL "
            f"{f['cpu_postgres'] * 1e6 / f['stored']:.1f}"
            for f in fresh
        ),
        *(
            f"client memory, {m['steps']:,} steps to this server, "
            + ("queue bounded by count (before)" if m["count_bound"] else "defaults")
            + f": RSS +{m['growth_mb']:.1f} MB (peak +{m['peak_growth_mb']:.1f}), bodies in "
            f"memory at most {m['peak_buffer_mb']:.1f} MiB, events queued at most "
            f"{m['peak_queue']:,}, spooled {m['spooled']:,}, dropped {m['dropped']}; "
            f"{m['steps'] / m['seconds']:,.0f} steps/s, "
            f"CPU {m['cpu_s'] * 1e6 / m['steps']:.1f} µs per step"
            for m in memory
        ),
        f"raw COPY baseline (psycopg write_row, one transaction, into a table with the indexes of "
        f"steps): {copy['rows']:,} step rows in {copy['seconds']:.3f} s = "
        f"{copy['rows_per_s']:,.0f} rows/s",
        "",
        "targets (information, never an exit status"
        + ("; --quick figures mean nothing):" if quick else "):"),
    ]
    best = max(f["steps_per_s"] for f in flows)
    share = best / copy["rows_per_s"]
    lines.append(
        f"  end to end >= {TARGET_STEPS_PER_S:,} steps/s: "
        f"{'met' if best >= TARGET_STEPS_PER_S else 'missed'} ({best:,.0f} steps/s at best)"
    )
    paced = fresh[-1]
    fresh_met = paced["p50_ms"] <= TARGET_FRESH_P50_MS and paced["p99_ms"] <= TARGET_FRESH_P99_MS
    lines.append(
        f"  fresh data p50 <= {TARGET_FRESH_P50_MS} ms, p99 <= {TARGET_FRESH_P99_MS} ms at "
        f"{FRESH_SHARE:.0%} of the best end-to-end rate: {'met' if fresh_met else 'missed'}"
    )
    growth = memory[0]["peak_growth_mb"]
    lines.append(
        f"  client RSS growth < {TARGET_CLIENT_MB} MB over {memory[0]['steps']:,} steps: "
        f"{'met' if growth < TARGET_CLIENT_MB else 'missed'} (+{growth:.1f} MB at peak)"
    )
    lines.append(
        f"  end to end >= {TARGET_SHARE_OF_COPY:.0%} of raw indexed COPY in this run: "
        f"{'met' if share >= TARGET_SHARE_OF_COPY else 'missed'} ({share:.0%})"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the server, measure, print the report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--producers", help="comma-separated producer process counts (default 2,4)")
    parser.add_argument("--runs", type=int, help="runs of 100 steps per producer (default 500)")
    parser.add_argument("--requests", type=int, help="timed 1,000-event requests (default 100)")
    parser.add_argument(
        "--max-batch", type=int, help="HttpTransport(max_batch=...) of the producers (its default)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a producer posting to this URL
    parser.add_argument(
        "--otlp",
        action="store_true",
        help="OTLP ingest beside msgpack (benchmarks/_ingest_otlp.py)",
    )
    parser.add_argument("--otlp-senders", type=int, default=2, help="sender threads (--otlp)")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)  # the client memory worker
    parser.add_argument("--count-bound", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pace", type=float, help=argparse.SUPPRESS)  # a producer's runs/s
    args = parser.parse_args(argv)
    quick = args.quick
    runs = args.runs if args.runs is not None else (2 if quick else 500)
    requests = args.requests if args.requests is not None else (3 if quick else 100)
    scale_requests = 1 if quick else 10
    try:
        producers = [int(n) for n in (args.producers or ("1" if quick else "2,4")).split(",")]
    except ValueError:
        parser.error(f"--producers {args.producers}: expected counts like 2,4")
    checks = [("--runs", runs), ("--requests", requests), *(("--producers", n) for n in producers)]
    if args.max_batch is not None:
        checks.append(("--max-batch", args.max_batch))
    checks.append(("--otlp-senders", args.otlp_senders))
    for name, value in checks:
        if value < 1:
            parser.error(f"{name} {value}: expected a positive integer")

    if args.worker:
        print(json.dumps(_produce(args.worker, runs, args.max_batch, args.pace)), flush=True)
        return 0
    if args.memory_worker:
        print(json.dumps(_memory_worker(args.memory_worker, runs, args.count_bound)), flush=True)
        return 0
    if args.otlp:
        return _otlp_main(requests, args.otlp_senders, quick)

    directory = Path(tempfile.mkdtemp(prefix="pipelens-bench-"))
    try:
        with running_server(directory) as server:
            url, conninfo = server.url, server.conninfo
            machine = machine_lines(
                ("pipelens", "litestar", "uvicorn", "psycopg"), postgres_version(conninfo)
            )
            flows = []
            for n in producers:
                print(f"measuring {n} producers ...", file=sys.stderr, flush=True)
                flows.append(end_to_end(server, n, runs, args.max_batch))
            print("measuring client memory ...", file=sys.stderr, flush=True)
            memory = client_memory(server, 20 if quick else MEMORY_RUNS)
            print("measuring fresh data ...", file=sys.stderr, flush=True)
            fresh_runs = -(-runs // 5)
            fresh = [freshness(server, max(producers), fresh_runs)]
            # Then below what the server takes, so that the figure is the delay, not a backlog.
            best = max(f["steps_per_s"] for f in flows)
            pace = best * FRESH_SHARE / max(producers) / STEPS_PER_RUN
            fresh.append(freshness(server, max(producers), fresh_runs, pace))
            print("measuring request latency ...", file=sys.stderr, flush=True)
            # Runs of 202 events: enough whole runs for the requests, new run ids throughout.
            latency: list[dict[str, Any]] = []
            copied: list[Any] = []
            sizes = ((EVENTS_PER_REQUEST, requests), (TRANSPORT_BATCH, -(-requests // 5)))
            for size, count in sizes:
                events = realistic_events(-(-count * size // 202))[: count * size]
                latency.append(request_latency(url, events, size))
                copied = copied or events
            print("measuring raw COPY ...", file=sys.stderr, flush=True)
            copy = raw_copy(conninfo, copied)
            print("measuring requests with runs stored ...", file=sys.stderr, flush=True)
            scale_events = realistic_events(-(-scale_requests * TRANSPORT_BATCH // 202))
            scale = at_scale(server, scale_events, scale_requests)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(_report(machine, flows, latency, scale, fresh, memory, copy, quick))
    return 0


def _otlp_main(requests: int, senders: int, quick: bool) -> int:
    """``--otlp``: OTLP and msgpack ingest on one server, in one run."""
    from benchmarks._ingest_otlp import compare

    directory = Path(tempfile.mkdtemp(prefix="pipelens-bench-"))
    try:
        with running_server(directory) as server:
            machine = machine_lines(
                ("pipelens", "litestar", "uvicorn", "psycopg", "protobuf", "opentelemetry-proto"),
                postgres_version(server.conninfo),
            )
            print("measuring msgpack and OTLP ingest ...", file=sys.stderr, flush=True)
            lines = compare(server, requests, senders, realistic_events)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    title = "PipeLens ingest, OTLP beside msgpack: pipelens serve on the embedded PostgreSQL"
    note = ["(--quick figures mean nothing)"] if quick else []
    print("\n".join([title, *machine, "", *lines, *note]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

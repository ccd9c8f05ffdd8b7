"""Ingest and reads with millions of steps stored: the data built once, both measured on it.

Run ``python -m benchmarks.scale`` (``--steps 10000000`` by default; ``--quick`` for a smoke run
whose figures mean nothing). It starts an embedded PostgreSQL in a temporary directory and
``pipelens serve`` on it (``benchmarks/_ingest_server.py``), then, in one run:

1. **ingest on an empty history**: the producers of ``benchmarks/ingest.py`` (4 processes making
   runs of 100 ``@pipelens.step`` steps through ``HttpTransport``), timed until every step is
   stored, then sequential 5,000-event requests (p50/p99);
2. **reads at a small size**: the history of ``benchmarks/dashboard.py`` (its big runs, then
   10,000 runs of 20 steps over 30 days), rolled up, and every page and API route of that
   benchmark timed in process;
3. **reads at ``--steps``**: runs of 20 steps loaded on top until the steps table holds
   ``--steps`` rows, rolled up, every page timed again (the ratio to the small size beside it);
4. **ingest at ``--steps``**: the same producers and requests as in 1, on that history.

The ingest figures at ``--steps`` over those on the empty history answer whether the cost of
ingest grows with the history (what partitioning by time, docs/scaling.md, would flatten). The
data directory is deleted at the end. Figures are information, never an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import dashboard, ingest
from benchmarks._ingest_server import Server, empty_tables, running_server
from benchmarks._machine import machine_lines, postgres_version

STEPS = 10_000_000
SMALL_RUNS = dashboard.SIZES[0]
#: Runs loaded per statement on the way to ``--steps`` (progress on stderr between them).
CHUNK_RUNS = 100_000


def ingest_figures(server: Server, producers: int, runs: int, requests: int) -> dict[str, Any]:
    """The producers end to end on the tables as they are, then ``requests`` 5,000-event
    requests; the producers' steps are left stored."""
    flow = ingest.end_to_end(server, producers, runs, keep_history=True)
    size = ingest.TRANSPORT_BATCH
    events = ingest.realistic_events(-(-requests * size // 202))[: requests * size]
    return {"flow": flow, "latency": ingest.request_latency(server.url, events, size)}


def load(conninfo: str, first: int, last: int) -> float:
    """Runs ``first`` to ``last`` loaded by ``dashboard.grow``, ``CHUNK_RUNS`` at a time."""
    seconds = 0.0
    for start in range(first, last + 1, CHUNK_RUNS):
        end = min(last, start + CHUNK_RUNS - 1)
        print(f"loading runs {start:,} to {end:,} of {last:,} ...", file=sys.stderr, flush=True)
        seconds += dashboard.grow(conninfo, start, end)
    return seconds


def table_bytes(conninfo: str) -> int:
    """The steps table with its indexes and TOAST, in bytes."""
    import psycopg

    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT pg_total_relation_size('steps')").fetchone()
    return int(row[0]) if row else 0


def _ingest_lines(label: str, figures: dict[str, Any]) -> list[str]:
    f, lat = figures["flow"], figures["latency"]
    return [
        f"  {label}: {f['producers']} producers, {f['stored']:,} steps in {f['seconds']:.2f} s = "
        f"{f['steps_per_s']:,.0f} steps/s (retried {f['retried']}, spooled {f['spooled']}, "
        f"dropped {f['dropped']}); CPU µs per step: server "
        f"{f['cpu_server'] * 1e6 / f['stored']:.1f}, PostgreSQL "
        f"{f['cpu_postgres'] * 1e6 / f['stored']:.1f}",
        f"    {lat['requests']} sequential requests of {lat['size']:,} events: "
        f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms",
    ]


def _report(
    machine: list[str],
    empty: dict[str, Any],
    full: dict[str, Any],
    stored: int,
    stored_bytes: int,
    pages: str,
    quick: bool,
) -> str:
    speed = full["flow"]["steps_per_s"] / empty["flow"]["steps_per_s"]
    p50 = full["latency"]["p50_ms"] / empty["latency"]["p50_ms"]
    server = (full["flow"]["cpu_server"] / full["flow"]["stored"]) / max(
        empty["flow"]["cpu_server"] / empty["flow"]["stored"], 1e-12
    )
    postgres = (full["flow"]["cpu_postgres"] / full["flow"]["stored"]) / max(
        empty["flow"]["cpu_postgres"] / empty["flow"]["stored"], 1e-12
    )
    lines = [
        f"PipeLens at scale: ingest and reads with {stored:,} steps stored",
        *machine,
        f"steps table with its indexes: {stored_bytes / 2**30:.2f} GiB",
        "",
        "ingest (pipelens serve, producers of benchmarks/ingest.py through HttpTransport, "
        f"runs of {ingest.STEPS_PER_RUN} steps, timed until every step is stored):",
        *_ingest_lines("empty history", empty),
        *_ingest_lines(f"{stored:,} steps stored", full),
        f"  at {stored:,} steps over empty: steps/s {speed:.2f}x, request p50 {p50:.2f}x, "
        f"CPU per step server {server:.2f}x, PostgreSQL {postgres:.2f}x",
        "  (ingest cost "
        + ("does not grow" if speed >= 1 / dashboard.FLAT_RATIO else "grows")
        + f" with the history at the {dashboard.FLAT_RATIO:g}x bar"
        + ("; --quick figures mean nothing)" if quick else ")"),
        "",
        pages,
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the server, measure ingest, load and time the pages at two sizes, measure ingest."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--steps", type=int, help=f"steps stored at the large size ({STEPS:,})")
    parser.add_argument("--producers", type=int, help="producer processes (default 4)")
    parser.add_argument("--runs", type=int, help="runs of 100 steps per producer (default 250)")
    parser.add_argument("--requests", type=int, help="timed 5,000-event requests (default 10)")
    parser.add_argument("--repeat", type=int, help="timed requests per page (default 7)")
    args = parser.parse_args(argv)
    quick = args.quick
    steps = args.steps if args.steps is not None else (5_000 if quick else STEPS)
    producers = args.producers if args.producers is not None else (1 if quick else 4)
    runs = args.runs if args.runs is not None else (2 if quick else 250)
    requests = args.requests if args.requests is not None else (1 if quick else 10)
    repeat = args.repeat if args.repeat is not None else (2 if quick else 7)
    checks = [("--steps", steps), ("--producers", producers), ("--runs", runs)]
    for name, value in [*checks, ("--requests", requests), ("--repeat", repeat)]:
        if value < 1:
            parser.error(f"{name} {value}: expected a positive integer")
    # The big runs of benchmarks/dashboard.py, tiny when quick (as there).
    batches, items, wide = (3, 4, 300) if quick else (99, 100, dashboard.WIDE_ROOTS)
    small = 100 if quick else SMALL_RUNS
    big_steps = 2 * (1 + batches * (1 + items)) + (1 + batches * (1 + items)) + wide
    large = (steps - big_steps) // dashboard.STEPS_PER_RUN
    if large <= small:
        least = big_steps + (small + 1) * dashboard.STEPS_PER_RUN
        parser.error(f"--steps {steps}: expected at least {least:,} (more than the small size)")

    directory = Path(tempfile.mkdtemp(prefix="pipelens-bench-scale-"))
    try:
        with running_server(directory) as server:
            logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
            conninfo = server.conninfo
            machine = machine_lines(
                ("pipelens", "litestar", "uvicorn", "psycopg"), postgres_version(conninfo)
            )
            print("measuring ingest on an empty history ...", file=sys.stderr, flush=True)
            empty = ingest_figures(server, producers, runs, requests)
            empty_tables(conninfo)
            sizes = []
            loaded = 0
            for count in (small, large):
                load_s = dashboard.load_big(conninfo, batches, items, wide) if not loaded else 0.0
                load_s += load(conninfo, loaded + 1, count)
                loaded = count
                rollup_s = asyncio.run(dashboard.roll_up_loaded(conninfo))
                timings = dashboard.time_pages(conninfo, batches, repeat)
                sizes.append(dashboard.Size(*dashboard.counts(conninfo), load_s, rollup_s, timings))
            stored = sizes[-1].steps
            stored_bytes = table_bytes(conninfo)
            explained = {
                t.page.label: [
                    plan
                    for _, query, params in t.queries
                    if (plan := dashboard.explain(conninfo, query, params))
                ]
                for t in sizes[-1].timings
                if t.queries
            }
            pages = dashboard.report([], sizes, explained, repeat, quick)
            print(f"measuring ingest at {stored:,} steps ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            full = ingest_figures(server, producers, runs, requests)
            print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(_report(machine, empty, full, stored, stored_bytes, pages, quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

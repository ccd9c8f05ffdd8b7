"""The runs search (``q=``) at 100,000 runs, and what its index (migration 0015) costs ingest.

Run ``python -m benchmarks.search`` (``--quick`` for a smoke run whose figures mean nothing).
It starts an embedded PostgreSQL in a temporary directory and migrates it, then, in one run:

* **ingest**: the app (in process, Litestar's test client) takes msgpack batches of runs of 20
  steps, every step recording a sentence unique to its run and one run in 20 failing (the
  index's worst realistic case), then runs whose steps record nothing (``benchmarks.ingest``'s
  program); steps stored per second with 0015's index and with it dropped, rounds alternating,
  and the ratio;
* **search**: ``--runs`` runs loaded as ``benchmarks.dashboard`` loads them (20 steps, 4
  pipelines, one in 20 failed with ``bad input N``), one step of each recording a sentence with
  the run's id and an md5; then ``runs_page`` (the runs page's read, 50 a page, 30 days of
  ``pipeline_0``) timed for a common and a rare text of each kind, one found nowhere, one under
  three characters and a run id prefix. ``--baseline DIR`` times the same reads of another
  source tree (a checkout of an earlier revision) on the same database in a subprocess: the
  before/after of a change in one run.

Figures are printed as information, never as an exit status: a noisy machine must not fail
anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._machine import machine_lines, postgres_version

INDEX = "steps_search_grams_idx"
STEPS_PER_RUN = 20
BATCH = 1000
#: The step of each loaded run that records a sentence (``benchmarks.dashboard``'s keys).
RECORDED_KEY = "%.step_03"
_RECORDS = """
UPDATE steps SET records = jsonb_build_object(
    'query', 'what does customer ' || run_id || ' want to know about order ' || md5(run_id),
    'n_docs', 3, 'docs', jsonb_build_array('doc a', 'doc b'))
WHERE key LIKE %s
"""


def _program(records: bool) -> Any:
    """A root step calling 19 children; with ``records``, each records a sentence of its run's
    and one run in 20 fails."""
    import uuid

    import pipelens

    @pipelens.step
    def child(i: int, note: str) -> int:
        if records:
            pipelens.record("query", note)
        return i

    @pipelens.step
    def pipeline(n: int) -> int:
        note = f"what does customer {uuid.uuid4().hex} want to know about order {n}"
        total = sum(child(i, note) for i in range(STEPS_PER_RUN - 1))
        if records and n % 20 == 0:
            raise ValueError(f"bad input {n}: {note}")
        return total

    return pipeline


def _events(runs: int, records: bool) -> list[Any]:
    import pipelens
    from pipelens import MemoryTransport

    memory = MemoryTransport()
    pipelens.configure(transport=memory)
    pipeline = _program(records)
    for n in range(runs):
        with contextlib.suppress(ValueError):  # the failing runs, as meant
            pipeline(n)
    pipelens.configure(transport=None)
    return memory.events


def _post(client: Any, events: list[Any]) -> float:
    """Post ``events`` in ``BATCH``-event msgpack requests; the seconds they took."""
    from pipelens.events import Batch, encode_msgpack

    bodies = [
        encode_msgpack(Batch(events=events[i : i + BATCH])) for i in range(0, len(events), BATCH)
    ]
    headers = {"content-type": "application/msgpack"}
    start = time.perf_counter()
    for body in bodies:
        response = client.post("/api/v1/events", content=body, headers=headers)
        if response.status_code != 202:
            raise SystemExit(f"ingest answered {response.status_code}: {response.text}")
    return time.perf_counter() - start


def ingest_cost(conninfo: str, runs: int, rounds: int) -> dict[str, dict[str, float]]:
    """Steps per second stored with the index and without, per workload (median of rounds)."""
    import psycopg
    from litestar.testing import TestClient

    from pipelens_server import Settings, create_app

    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [INDEX])
        definition = str((row.fetchone() or ("",))[0])
    if not definition:
        raise SystemExit(f"no index {INDEX}: is migration 0015 in this tree?")
    figures: dict[str, dict[str, float]] = {}
    app = create_app(Settings(database_url=conninfo))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for workload, records in (("records", True), ("no records", False)):
            rates: dict[str, list[float]] = {"with": [], "without": []}
            for _ in range(rounds):
                for indexed in ("with", "without"):
                    events = _events(runs, records)
                    with psycopg.connect(conninfo, autocommit=True) as conn:
                        conn.execute("TRUNCATE runs, steps, pipelines CASCADE")
                        conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
                        if indexed == "with":
                            conn.execute(definition)
                    rates[indexed].append(runs * STEPS_PER_RUN / _post(client, events))
            figures[workload] = {k: statistics.median(v) for k, v in rates.items()}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("TRUNCATE runs, steps, pipelines CASCADE")
        conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
        conn.execute(definition)
    return figures


def terms(runs: int) -> dict[str, str]:
    """The searched texts, by label."""
    import hashlib

    # A failed run of pipeline_0 (every 20th run fails, every 4th is pipeline_0's).
    rare = f"run-{max(runs // 2 - runs // 2 % 20, 20):07d}"
    return {
        "step name, every run (step_1)": "STEP_1",
        "record value, every run (customer)": "Customer",
        "error text, one run": f"bad input {int(rare[4:])}",
        "record value, one run (md5)": hashlib.md5(rare.encode()).hexdigest()[:12],
        "found nowhere": "zzqx nothing",
        "under three characters, nowhere": "zq",
        "run id prefix (100 runs)": rare[:-2],
    }


def search_times(conninfo: str, runs: int, repeat: int) -> dict[str, float]:
    """The median milliseconds of ``runs_page`` per searched text (after one warm-up)."""
    from psycopg_pool import AsyncConnectionPool

    from pipelens_server._read._runs import runs_page
    from pipelens_server._read._search import RunSearch

    async def timed() -> dict[str, float]:
        medians = {}
        async with AsyncConnectionPool(conninfo, min_size=1, max_size=1, open=False) as pool:
            for label, text in terms(runs).items():
                seconds = []
                for _ in range(repeat + 1):
                    start = time.perf_counter()
                    await runs_page(
                        pool,
                        pipeline="pipeline_0",
                        since_ns=time.time_ns() - 30 * 86400 * 10**9,
                        status=None,
                        after=None,
                        limit=50,
                        search=RunSearch(text=text),
                    )
                    seconds.append(time.perf_counter() - start)
                medians[label] = statistics.median(seconds[1:]) * 1e3
        return medians

    return asyncio.run(timed())


def load(conninfo: str, runs: int) -> tuple[float, float]:
    """``runs`` runs as ``benchmarks.dashboard`` loads them, then one recording step each;
    the seconds of each part."""
    import psycopg

    from benchmarks.dashboard import grow

    load_s = grow(conninfo, 1, runs)
    start = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(_RECORDS, [RECORDED_KEY])
        conn.execute("VACUUM ANALYZE steps")
    return load_s, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--runs", type=int, help="runs searched (default 100000)")
    parser.add_argument("--ingest-runs", type=int, help="runs of 20 steps a round (default 250)")
    parser.add_argument("--rounds", type=int, help="ingest rounds each way (default 3)")
    parser.add_argument("--repeat", type=int, help="timed reads per text (default 5)")
    parser.add_argument("--baseline", metavar="DIR", help="a source tree to compare with")
    parser.add_argument("--measure-only", metavar="CONNINFO", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    runs = args.runs or (200 if args.quick else 100_000)
    ingest_runs = args.ingest_runs or (10 if args.quick else 250)
    rounds = args.rounds or (1 if args.quick else 3)
    repeat = args.repeat or (2 if args.quick else 5)
    if args.measure_only:
        print(json.dumps(search_times(args.measure_only, runs, repeat)))
        return 0

    from pipelens_server import EmbeddedPostgres
    from pipelens_server._logging import configure_logging

    configure_logging()  # the embedded PostgreSQL's messages to stderr: stdout is the report
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    directory = Path(tempfile.mkdtemp(prefix="pipelens-bench-search-"))
    database = EmbeddedPostgres(directory / "data")
    try:
        conninfo = database.start()
        from benchmarks.dashboard import _migrate

        asyncio.run(_migrate(conninfo))
        machine = machine_lines(("pipelens", "litestar", "psycopg"), postgres_version(conninfo))
        print("measuring ingest ...", file=sys.stderr, flush=True)
        ingest = ingest_cost(conninfo, ingest_runs, rounds)
        print(f"loading {runs:,} runs ...", file=sys.stderr, flush=True)
        load_s, records_s = load(conninfo, runs)
        baseline = None
        if args.baseline:
            print(f"measuring the baseline {args.baseline} ...", file=sys.stderr, flush=True)
            env = {**os.environ, "PYTHONPATH": str(Path(args.baseline).resolve())}
            command = [sys.executable, str(Path(__file__).resolve()), "--measure-only", conninfo]
            command += ["--runs", str(runs), "--repeat", str(repeat)]
            answer = subprocess.run(
                command, env=env, cwd=args.baseline, stdout=subprocess.PIPE, text=True, check=True
            )
            baseline = json.loads(answer.stdout.strip().splitlines()[-1])
        print("measuring the search ...", file=sys.stderr, flush=True)
        searched = search_times(conninfo, runs, repeat)
    finally:
        database.stop()
        shutil.rmtree(directory, ignore_errors=True)
    lines = [*machine, ""]
    lines.append(f"ingest, {ingest_runs} runs of {STEPS_PER_RUN} steps a round, {rounds} rounds:")
    for workload, rates in ingest.items():
        ratio = rates["with"] / rates["without"]
        lines.append(
            f"  {workload:11} {rates['with']:9,.0f} steps/s with {INDEX}, "
            f"{rates['without']:9,.0f} without: x{ratio:.2f}"
        )
    lines.append("")
    lines.append(
        f"search at {runs:,} runs (loaded in {load_s:.0f} s, records in {records_s:.0f} s), "
        f"median of {repeat} (ms):"
    )
    head = f"  {'text':40} {'this tree':>10}"
    lines.append(head + (f" {'baseline':>10} {'ratio':>7}" if baseline else ""))
    for label, ms in searched.items():
        line = f"  {label:40} {ms:10.1f}"
        if baseline and label in baseline:
            line += f" {baseline[label]:10.1f} {ms / baseline[label]:7.3f}"
        lines.append(line)
    lines.append("target: a rare text <= 100 ms at 100,000 runs; a common one bounded by the page")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

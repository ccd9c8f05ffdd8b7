"""Server time of the dashboard's pages and API routes at two data sizes, and the ratio.

Run ``python -m benchmarks.dashboard`` (``--quick`` for a smoke run whose figures mean nothing).
It starts an embedded PostgreSQL in a temporary directory, migrates it, and loads, in SQL
(``generate_series``: the point is the read side), two runs of 10,000 steps (a root, 99 batches
of 100 items), one finished and one still running, a finished run of 10,000 steps whose root
calls one step 9,999 times (a loop), and a finished run of 1,000,000 root steps (the page shows
200 of them: it must not read them all). Then, for each size of ``--runs`` in turn (10,000 then
100,000 runs by default, each loaded on top of the one before), runs of 20 steps over 4
pipelines, their start times spread over 30 days, one run in 20 failed, and every page is timed
(``--runs 10000,1000000`` for the issue's sizes, where the machine can load them).
The app answers in process through Litestar's test client (no network), so a figure is the
server's time for a request: routing, queries, layout and templates. Each page is asked
``--repeat`` times after a warm-up; the table shows the median at each size, the ratio of the
largest to the smallest (the issue's target: at most 1.5x) and the size of the answer.

Measured: the overview over 30 days, the runs page (30 days, newest page), the 10,000-step run
pages as they open (big subtrees collapsed) and with every subtree opened, the poll of the
running one (htmx ``run_live``), the comparison of the two 10,000-step runs (page: changed
and all steps; API), the step stats page over 30 days, and the JSON API's pipelines,
run lists, one run, and a step key's stats and time series. A page whose median misses its
target at the largest size gets the EXPLAIN (ANALYZE, BUFFERS) of the queries it ran, slowest
first.

Also measured: the overview over 24 hours and 30 days (its sparklines and totals included),
and the pictures the runs and run pages ask for apart once shown (the runs timeline, the run's
time strip). ``--baseline DIR`` times the same pages of another source tree (a checkout of an
earlier revision) on the same database in a subprocess first, and prints each page's ratio
against it: the before/after of a change in one run.

``--only REGEX`` times just the pages whose label matches (``--only 'overview|API runs'``): a
short before/after of the pages a change touches.

The targets are printed as information, never as an exit status: a noisy machine must not fail
anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._machine import machine_lines, postgres_version

DAYS = 30
PIPELINES = 4
STEPS_PER_RUN = 20
BIG_BATCHES = 99
BIG_ITEMS = 100
BIG_RUN = "big-run"
BIG_RUNNING = "big-run-running"
LOOP_RUN = "loop-run"
#: A finished run of only root steps (1,000,000 by default, ``--wide-roots``).
WIDE_RUN = "wide-run"
WIDE_ROOTS = 1_000_000
#: The run counts measured in turn, each loaded on top of the one before. 1,000,000 runs (20M
#: steps) did not load in 16 minutes on the shared 2-core machine; 100,000 load in about 3.
SIZES = [10_000, 100_000]
STATS_KEY_INDEX = 5  # the stats page of the key "pipeline_0.step_05"
HTMX = {"HX-Request": "true"}


@dataclass(frozen=True)
class Page:
    """A page to time: its label, URL, extra headers and target median (ms), if it has one."""

    label: str
    url: str
    target_ms: float | None
    headers: dict[str, str] = field(default_factory=dict)
    #: Only in this tree (a picture asked apart): a baseline tree has nothing to compare.
    new: bool = False


@dataclass
class Timing:
    """What one page measured: seconds per request, the answer's status and size, its queries."""

    page: Page
    seconds: list[float]
    status: int
    size: int
    queries: list[tuple[float, Any, Any]] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3


# --- loading ----------------------------------------------------------------------------------

_LOAD = """
SELECT setseed(0.42);
INSERT INTO pipelines (name) SELECT 'pipeline_' || p FROM generate_series(0, %(pipelines)s - 1) p
ON CONFLICT (name) DO NOTHING;
INSERT INTO runs (run_id, pipeline, status, start_ns, end_ns, duration_ns, step_count,
                  error_type, error_message)
SELECT 'run-' || lpad(i::text, 7, '0'),
       'pipeline_' || (i %% %(pipelines)s),
       CASE WHEN i %% 20 = 0 THEN 'failed' ELSE 'completed' END,
       s.start_ns, s.start_ns + s.duration_ns, s.duration_ns, %(steps)s,
       CASE WHEN i %% 20 = 0 THEN 'ValueError' END,
       CASE WHEN i %% 20 = 0 THEN 'bad input ' || i END
FROM generate_series(%(first)s::int, %(runs)s::int) i
CROSS JOIN LATERAL (
    SELECT %(now)s - (random() * %(span)s)::bigint AS start_ns,
           (50000000 + random() * 2000000000)::bigint + i * 0 AS duration_ns
) s;
INSERT INTO steps (run_id, key, pipeline, step_id, parent_id, name, status, start_ns, end_ns,
                   duration_ns, error_type, error_message)
SELECT r.run_id,
       CASE WHEN j = 0 THEN r.pipeline ELSE r.pipeline || '.step_' || lpad(j::text, 2, '0') END,
       r.pipeline, 's' || j, CASE WHEN j > 0 THEN 's0' END,
       CASE WHEN j = 0 THEN r.pipeline ELSE 'step_' || lpad(j::text, 2, '0') END,
       CASE WHEN r.status = 'failed' AND j IN (0, %(steps)s - 1) THEN 'failed' ELSE 'completed' END,
       CASE WHEN j = 0 THEN r.start_ns ELSE r.start_ns + (j - 1) * (r.duration_ns / %(steps)s) END,
       CASE WHEN j = 0 THEN r.end_ns ELSE r.start_ns + j * (r.duration_ns / %(steps)s) END,
       CASE WHEN j = 0 THEN r.duration_ns ELSE r.duration_ns / %(steps)s END,
       CASE WHEN r.status = 'failed' AND j IN (0, %(steps)s - 1) THEN 'ValueError' END,
       CASE WHEN r.status = 'failed' AND j IN (0, %(steps)s - 1) THEN r.error_message END
FROM runs r CROSS JOIN generate_series(0, %(steps)s - 1) j
WHERE r.run_id LIKE 'run-%%' AND r.run_id >= 'run-' || lpad(%(first)s::text, 7, '0');
"""

# A run of 1 + batches * (1 + items) steps: a root, its batches, each batch's items. Times in
# microseconds from the run's start; the running run's last batch and its last item still run.
_BIG = """
INSERT INTO runs (run_id, pipeline, status, start_ns, end_ns, duration_ns, step_count)
VALUES (%(run)s, 'pipeline_0', %(status)s, %(start)s,
        CASE WHEN %(running)s THEN NULL ELSE %(start)s + %(span)s END,
        CASE WHEN %(running)s THEN NULL ELSE %(span)s END, %(count)s);
INSERT INTO steps (run_id, key, pipeline, step_id, parent_id, name, status, start_ns, end_ns,
                   duration_ns)
SELECT %(run)s, 'pipeline_0', 'pipeline_0', 'root', NULL, 'pipeline_0', %(status)s, %(start)s,
       CASE WHEN %(running)s THEN NULL ELSE %(start)s + %(span)s END,
       CASE WHEN %(running)s THEN NULL ELSE %(span)s END
UNION ALL
SELECT %(run)s, 'pipeline_0.batch' || CASE WHEN b > 0 THEN '___' || b ELSE '' END,
       'pipeline_0', 'b' || b, 'root', 'batch',
       CASE WHEN %(running)s AND b = %(batches)s - 1 THEN 'running' ELSE 'completed' END,
       %(start)s + b * %(batch_ns)s,
       CASE WHEN %(running)s AND b = %(batches)s - 1 THEN NULL
            ELSE %(start)s + (b + 1) * %(batch_ns)s END,
       CASE WHEN %(running)s AND b = %(batches)s - 1 THEN NULL ELSE %(batch_ns)s END
FROM generate_series(0::bigint, %(batches)s - 1) b
UNION ALL
SELECT %(run)s,
       'pipeline_0.batch' || CASE WHEN b > 0 THEN '___' || b ELSE '' END
           || '.item' || CASE WHEN k > 0 THEN '___' || k ELSE '' END,
       'pipeline_0', 'b' || b || 'i' || k, 'b' || b, 'item',
       CASE WHEN %(running)s AND b = %(batches)s - 1 AND k = %(items)s - 1 THEN 'running'
            WHEN k %% 97 = 13 THEN 'failed' ELSE 'completed' END,
       %(start)s + b * %(batch_ns)s + k * %(item_ns)s,
       CASE WHEN %(running)s AND b = %(batches)s - 1 AND k = %(items)s - 1 THEN NULL
            ELSE %(start)s + b * %(batch_ns)s + (k + 1) * %(item_ns)s END,
       CASE WHEN %(running)s AND b = %(batches)s - 1 AND k = %(items)s - 1 THEN NULL
            ELSE %(item_ns)s END
FROM generate_series(0::bigint, %(batches)s - 1) b
CROSS JOIN generate_series(0::bigint, %(items)s - 1) k;
"""


_KEEP_EVERYTHING = """
DO $$ BEGIN
    IF to_regclass('retention_default') IS NOT NULL THEN
        UPDATE retention_default SET days = 3650;
    END IF;
END $$
"""
#: Only reads are explained: a recorded query may also be the server's purge, running meanwhile.
_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)


# A run whose root calls one step %(count)s - 1 times (a loop): one step with 9,999 children.
_LOOP = """
INSERT INTO runs (run_id, pipeline, status, start_ns, end_ns, duration_ns, step_count)
VALUES (%(run)s, 'pipeline_1', 'completed', %(start)s, %(start)s + %(span)s, %(span)s, %(count)s);
INSERT INTO steps (run_id, key, pipeline, step_id, parent_id, name, status, start_ns, end_ns,
                   duration_ns)
SELECT %(run)s, 'pipeline_1', 'pipeline_1', 'root', NULL, 'pipeline_1', 'completed', %(start)s,
       %(start)s + %(span)s, %(span)s
UNION ALL
SELECT %(run)s, 'pipeline_1.call' || CASE WHEN k > 0 THEN '___' || k ELSE '' END, 'pipeline_1',
       'c' || k, 'root', 'call', 'completed', %(start)s + k * %(item_ns)s,
       %(start)s + (k + 1) * %(item_ns)s, %(item_ns)s
FROM generate_series(0::bigint, %(count)s - 2) k;
"""


# A run of %(count)s root steps and nothing else.
_WIDE = """
INSERT INTO runs (run_id, pipeline, status, start_ns, end_ns, duration_ns, step_count)
VALUES (%(run)s, 'pipeline_2', 'completed', %(start)s, %(start)s + %(span)s, %(span)s, %(count)s);
INSERT INTO steps (run_id, key, pipeline, step_id, parent_id, name, status, start_ns, end_ns,
                   duration_ns)
SELECT %(run)s, 'pipeline_2.call' || CASE WHEN k > 0 THEN '___' || k ELSE '' END, 'pipeline_2',
       'w' || k, NULL, 'call', 'completed', %(start)s + k * %(item_ns)s,
       %(start)s + (k + 1) * %(item_ns)s, %(item_ns)s
FROM generate_series(0::bigint, %(count)s - 1) k;
"""


def _statements(script: str) -> list[str]:
    return [statement for statement in script.split(";\n") if statement.strip()]


#: Every start the tables hold (the big runs' too: loaded before the first size).
_LOADED_STARTS = "(SELECT start_ns FROM runs UNION ALL SELECT start_ns FROM steps) loaded"


def grow(conninfo: str, first: int, last: int) -> float:
    """Load the runs ``first`` to ``last`` (numbered from 1) and their steps, their hours noted
    for the roll-up; return seconds."""
    import psycopg

    from pipelens_server._db._rollup import NOTE_DIRTY

    now = time.time_ns()
    span = DAYS * 86400 * 1_000_000_000
    start = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        params = {"pipelines": PIPELINES, "first": first, "runs": last, "steps": STEPS_PER_RUN}
        # One statement at a time: parameters cannot be bound to several at once.
        for statement in _statements(_LOAD):
            conn.execute(statement, {**params, "now": now, "span": span})
        # Written by hand into hours already sealed (the migration sealed up to its hour): noted
        # dirty as the server's writers would, or the roll-up skips them and the overview reads
        # empty rollups there.
        conn.execute(NOTE_DIRTY.format(rows=_LOADED_STARTS))
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - start


def load_big(conninfo: str, batches: int, items: int, wide: int = WIDE_ROOTS) -> float:
    """Load the big runs (the same at every size); return seconds."""
    import psycopg

    now = time.time_ns()
    start = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        item_ns = 50_000_000
        batch_ns = items * item_ns
        for run, running in ((BIG_RUN, False), (BIG_RUNNING, True)):
            begin = now - batches * batch_ns - (0 if running else 3600 * 1_000_000_000)
            for statement in _statements(_BIG):
                conn.execute(
                    statement,
                    {
                        "run": run,
                        "running": running,
                        "status": "running" if running else "completed",
                        "start": begin,
                        "span": batches * batch_ns,
                        "count": 1 + batches * (1 + items),
                        "batches": batches,
                        "items": items,
                        "batch_ns": batch_ns,
                        "item_ns": item_ns,
                    },
                )
        count = 1 + batches * (1 + items)
        loop = {"run": LOOP_RUN, "count": count, "item_ns": item_ns, "span": count * item_ns}
        for statement in _statements(_LOOP):
            conn.execute(statement, {**loop, "start": now - 7200 * 1_000_000_000})
        roots = {"run": WIDE_RUN, "count": wide, "item_ns": 1_000, "span": wide * 1_000}
        for statement in _statements(_WIDE):
            conn.execute(statement, {**roots, "start": now - 7200 * 1_000_000_000})
        # Keep all 30 days: the server's periodic purge (14 days by default) must not thin them.
        conn.execute(_KEEP_EVERYTHING)
    return time.perf_counter() - start


def counts(conninfo: str) -> tuple[int, int]:
    """How many runs and steps the database holds."""
    import psycopg

    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM steps)")
        found = row.fetchone() or (0, 0)
    return found[0], found[1]


async def roll_up_loaded(conninfo: str) -> float:
    """Roll up what the load wrote (the server's job would, within its interval); seconds."""
    from psycopg_pool import AsyncConnectionPool

    from pipelens_server._db._rollup import roll_up

    start = time.perf_counter()
    async with AsyncConnectionPool(conninfo, min_size=1, max_size=1, open=False) as pool:
        await roll_up(pool)
    return time.perf_counter() - start


async def _migrate(conninfo: str) -> None:
    import psycopg

    from pipelens_server import migrate

    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        await migrate(conn)


# --- measuring --------------------------------------------------------------------------------


@contextmanager
def recorded_queries() -> Iterator[list[tuple[float, Any, Any]]]:
    """Every query the app runs meanwhile, with its seconds and parameters (psycopg's async
    cursor, wrapped for the benchmark only)."""
    import psycopg

    queries: list[tuple[float, Any, Any]] = []
    original = psycopg.AsyncCursor.execute

    async def execute(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await original(self, query, params, **kwargs)
        finally:
            queries.append((time.perf_counter() - start, query, params))

    psycopg.AsyncCursor.execute = execute  # type: ignore[method-assign]
    try:
        yield queries
    finally:
        psycopg.AsyncCursor.execute = original  # type: ignore[method-assign]


def measure(get: Callable[..., Any], page: Page, repeat: int) -> Timing:
    """Ask ``page`` once to warm up, then ``repeat`` times; then once more recording queries."""
    response = get(page.url, headers=page.headers)
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = get(page.url, headers=page.headers)
        seconds.append(time.perf_counter() - start)
    timing = Timing(page, seconds, response.status_code, len(response.content))
    slow = page.target_ms is not None and timing.median_ms > page.target_ms
    if slow and response.status_code < 400:
        with recorded_queries() as queries:
            get(page.url, headers=page.headers)
        timing.queries = sorted(queries, key=lambda q: -q[0])
    return timing


def stats_route_exists() -> bool:
    """Whether the app has the step stats page yet (another change brings it)."""
    from pipelens_server._pages import _stats as _pages_stats

    return bool(_pages_stats.route_handlers)


def pages(batches: int, only: str = "") -> list[Page]:
    """The pages and API routes to time, with the issue's targets (none for an API route: only
    its ratio between the sizes has one); with ``only``, those whose label matches it."""
    every_batch = "&".join(
        f"expand=pipeline_0.batch{f'___{b}' if b else ''}" for b in range(batches)
    )
    key = f"pipeline_0.step_{STATS_KEY_INDEX:02d}"
    stats = f"/pipelines/pipeline_0/steps/{key}?range=30d"
    compare = f"/compare?a={BIG_RUN}&b={BIG_RUNNING}"
    listed = [
        Page("overview (24 hours)", "/", 20),
        Page("overview (30 days)", "/?range=30d", 20),
        Page("runs page (30 days, first page)", "/pipelines/pipeline_0/runs?range=30d", 10),
        Page(
            "runs timeline (30 days, htmx)",
            "/pipelines/pipeline_0/runs?range=30d",
            300,
            {**HTMX, "HX-Target": "runs_timeline"},
            new=True,
        ),
        Page(
            "runs page (30 days, failed only)",
            "/pipelines/pipeline_0/runs?range=30d&status=failed",
            10,
        ),
        Page(
            "runs page (search q=step_1, every run)",
            "/pipelines/pipeline_0/runs?range=30d&q=STEP_1",
            10,
        ),
        Page(
            "runs page (search q=input 12, 1 in 20)",
            "/pipelines/pipeline_0/runs?range=30d&q=INPUT+12",
            10,
        ),
        Page(f"run page ({BIG_RUN}, finished)", f"/runs/{BIG_RUN}", 40),
        Page(f"run page ({BIG_RUN}, every row open)", f"/runs/{BIG_RUN}?{every_batch}", 200),
        Page(f"run page ({LOOP_RUN}, finished)", f"/runs/{LOOP_RUN}", 40),
        Page(f"run page ({LOOP_RUN}, every row open)", f"/runs/{LOOP_RUN}?all=pipeline_1", 200),
        Page(f"run page ({WIDE_RUN}, finished)", f"/runs/{WIDE_RUN}", 40),
        Page(f"run page ({BIG_RUNNING}, running)", f"/runs/{BIG_RUNNING}", 40),
        Page(
            f"run strip ({BIG_RUN}, htmx)",
            f"/runs/{BIG_RUN}",
            500,
            {**HTMX, "HX-Target": "run_strip"},
            new=True,
        ),
        Page(
            f"run strip ({WIDE_RUN}, htmx)",
            f"/runs/{WIDE_RUN}",
            2000,
            {**HTMX, "HX-Target": "run_strip"},
            new=True,
        ),
        Page(
            f"poll of {BIG_RUNNING} (htmx run_live)",
            f"/runs/{BIG_RUNNING}",
            40,
            {**HTMX, "HX-Target": "run_live"},
        ),
        # The two 10,000-step runs compared: beside their run pages, timed in the same run.
        Page("compare page (10,000 steps, changed)", compare, None),
        Page("compare page (10,000 steps, all)", f"{compare}&view=all", None),
        Page("API compare (10,000 steps)", f"/api/v1/{compare[1:]}", None),
    ]
    if stats_route_exists():
        listed.append(Page("step stats page (30 days)", stats, 50))
    api = f"/api/v1/pipelines/pipeline_0/steps/{key}"
    listed += [
        Page("API pipelines (30 days)", "/api/v1/pipelines?range=30d", None),
        Page("API runs (newest 50)", "/api/v1/runs", None),
        Page("API runs (pipeline, 30 days)", "/api/v1/runs?pipeline=pipeline_0&range=30d", None),
        Page("API runs (failed, 30 days)", "/api/v1/runs?status=failed&range=30d", None),
        Page("API runs (search q=input 12)", "/api/v1/runs?range=30d&q=input+12", None),
        Page("API run (20 steps)", "/api/v1/runs/run-0000001", None),
        Page("API step stats (30 days)", f"{api}/stats?range=30d", None),
        Page("API step timeseries (30 days)", f"{api}/timeseries?range=30d", None),
    ]
    return [page for page in listed if re.search(only, page.label)]


def time_pages(conninfo: str, batches: int, repeat: int, only: str = "") -> list[Timing]:
    """Time every page of :func:`pages` on the app of this tree against ``conninfo``."""
    from litestar.testing import TestClient

    from pipelens_server import Settings, create_app

    timings = []
    # A loopback base URL: the server answers no other Host (DNS rebinding).
    app = create_app(Settings(database_url=conninfo))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        client.cookies.set("tz", "UTC")
        for page in pages(batches, only):
            print(f"measuring {page.label} ...", file=sys.stderr, flush=True)
            timings.append(measure(client.get, page, repeat))
    return timings


def explain(conninfo: str, query: Any, params: Any) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of one recorded query; nothing for a write."""
    import psycopg
    from psycopg import sql

    prefix = "EXPLAIN (ANALYZE, BUFFERS) "
    with psycopg.connect(conninfo) as conn:
        text = query if isinstance(query, str) else query.as_string(conn)
        if _WRITES.search(text):
            return []
        statement = prefix + query if isinstance(query, str) else sql.SQL(prefix) + query
        rows = conn.execute(statement, params).fetchall()
        conn.rollback()
    return [row[0] for row in rows]


# --- the report -------------------------------------------------------------------------------


@dataclass
class Size:
    """One size measured: the runs and steps stored, the seconds their loading took, timings."""

    runs: int
    steps: int
    load_s: float
    rollup_s: float
    timings: list[Timing]


#: The most a page's time may grow from the smallest size to the largest.
FLAT_RATIO = 1.5


def _short(runs: int) -> str:
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if runs >= div and runs % div == 0:
            return f"{runs // div}{unit}"
    return str(runs)


def report(
    machine: list[str],
    sizes: list[Size],
    explained: dict[str, list[list[str]]],
    repeat: int,
    quick: bool,
    baseline: dict[str, float] | None = None,
    baseline_dir: str | None = None,
    only: str = "",
) -> str:
    small, large = sizes[0], sizes[-1]
    lines = [
        "PipeLens dashboard: server time per page (Litestar test client, no network)",
        *machine,
        *(
            f"data:     {s.runs:,} runs, {s.steps:,} steps over {DAYS} days, "
            f"{PIPELINES} pipelines (loaded in {s.load_s:.1f} s, rolled up in {s.rollup_s:.1f} s)"
            for s in sizes
        ),
        f"(median of {repeat} requests after one warm-up; ratio: the largest size over the "
        "smallest, measured in this run)",
        *(
            [
                f"baseline: the same pages of {baseline_dir}, same database, at the largest size, "
                "measured first"
            ]
            if baseline_dir
            else []
        ),
        "",
        f"{'page':<44}"
        + "".join(f"{_short(s.runs) + ' ms':>10}" for s in sizes)
        + f"{'ratio':>8}{'status':>8}{'KiB':>9}"
        + (f"{'baseline ms':>13}{'x baseline':>12}" if baseline is not None else ""),
    ]
    for i, t in enumerate(large.timings):
        first = small.timings[i]
        ratio = t.median_ms / first.median_ms if first.median_ms else float("nan")
        line = (
            f"{t.page.label:<44}"
            + "".join(f"{s.timings[i].median_ms:>10.1f}" for s in sizes)
            + f"{ratio:>7.2f}x{t.status:>8}{t.size / 1024:>9.1f}"
        )
        if baseline is not None:
            before = baseline.get(t.page.label)
            line += (
                f"{before:>13.1f}{t.median_ms / before:>11.2f}x"
                if before
                else f"{'—':>13}{'new':>12}"
            )
        lines.append(line)
    if not any(t.page.label.startswith("step stats page") for t in large.timings) and not only:
        lines.append(f"{'step stats page (30 days)':<44}{'not measured: no such page yet':>37}")
    lines += [
        "",
        f"targets at {large.runs:,} runs, and at most {FLAT_RATIO:g}x from {small.runs:,} "
        "(information, never an exit status"
        + ("; --quick figures mean nothing):" if quick else "):"),
    ]
    for i, t in enumerate(large.timings):
        first = small.timings[i]
        ratio = t.median_ms / first.median_ms if first.median_ms else float("nan")
        if t.status >= 400 or first.status >= 400:  # an error page's time says nothing
            lines.append(f"  {t.page.label}: not measured: it answered {t.status}")
            continue
        flat = "met" if ratio <= FLAT_RATIO else "missed"
        verdicts = [f"ratio {ratio:.2f} <= {FLAT_RATIO:g}: {flat}"]
        if t.page.target_ms is not None:
            met = "met" if t.median_ms <= t.page.target_ms else "missed"
            verdicts.insert(0, f"< {t.page.target_ms:g} ms: {met} ({t.median_ms:.1f} ms)")
        lines.append(f"  {t.page.label}: " + "; ".join(verdicts))
    for label, plans in explained.items():
        lines += ["", f"EXPLAIN (ANALYZE, BUFFERS) of the queries of {label}, slowest first:"]
        for plan in plans:
            lines += ["", *(f"  {line}" for line in plan)]
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    """``10000,1000000``: the run counts, ascending, each positive."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or any(n < 1 for n in sizes) or sizes != sorted(set(sizes)):
        raise argparse.ArgumentTypeError(
            f"{text}: expected a positive integer (two or more, ascending: 10000,1000000)"
        )
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    """Start the database, load each size in turn, time the pages, print the report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument(
        "--runs", type=_sizes, help="run counts of 20 steps measured in turn (10000,100000)"
    )
    parser.add_argument("--big-batches", type=int, help="batches of the big runs (default 99)")
    parser.add_argument("--big-items", type=int, help="items per batch (default 100)")
    parser.add_argument("--wide-roots", type=int, help="root steps of the wide run (1000000)")
    parser.add_argument("--repeat", type=int, help="timed requests per page (default 7)")
    parser.add_argument("--baseline", metavar="DIR", help="a source tree to compare with")
    parser.add_argument("--only", metavar="REGEX", default="", help="pages whose label matches")
    parser.add_argument("--measure-only", metavar="CONNINFO", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = args.runs if args.runs is not None else ([100, 200] if quick else SIZES)
    batches = args.big_batches if args.big_batches is not None else (3 if quick else BIG_BATCHES)
    items = args.big_items if args.big_items is not None else (4 if quick else BIG_ITEMS)
    repeat = args.repeat if args.repeat is not None else (2 if quick else 7)
    wide = args.wide_roots if args.wide_roots is not None else (300 if quick else WIDE_ROOTS)
    checks = [("--big-batches", batches), ("--big-items", items), ("--wide-roots", wide)]
    for name, value in [*checks, ("--repeat", repeat)]:
        if value < 1:
            parser.error(f"{name} {value}: expected a positive integer")

    from litestar.testing import TestClient

    from pipelens_server import EmbeddedPostgres, Settings, create_app
    from pipelens_server._logging import configure_logging

    configure_logging()  # the embedded PostgreSQL's messages to stderr: stdout is the report
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if args.measure_only:
        # The baseline's side: this script's pages, timed against the importable tree's app.
        app = create_app(Settings(database_url=args.measure_only))
        medians = {}
        with TestClient(app, base_url="http://127.0.0.1") as client:
            client.cookies.set("tz", "UTC")
            for page in pages(batches, args.only):
                if not page.new:
                    medians[page.label] = measure(client.get, page, repeat).median_ms
        print(json.dumps(medians))
        return 0
    directory = Path(tempfile.mkdtemp(prefix="pipelens-bench-dashboard-"))
    database = EmbeddedPostgres(directory / "data")
    measured: list[Size] = []
    try:
        conninfo = database.start()
        asyncio.run(_migrate(conninfo))
        big_s = load_big(conninfo, batches, items, wide)
        machine = machine_lines(
            ("pipelens", "litestar", "jinja2", "psycopg"), postgres_version(conninfo)
        )
        loaded = 0
        baseline = None
        for runs in sizes:
            print(f"loading {runs:,} runs ...", file=sys.stderr, flush=True)
            load_s = grow(conninfo, loaded + 1, runs) + (big_s if not loaded else 0.0)
            loaded = runs
            rollup_s = asyncio.run(roll_up_loaded(conninfo))
            if args.baseline and runs == sizes[-1]:
                print(f"measuring the baseline {args.baseline} ...", file=sys.stderr, flush=True)
                baseline = _baseline(args.baseline, conninfo, repeat, batches, items, args.only)
            timings = time_pages(conninfo, batches, repeat, args.only)
            measured.append(Size(*counts(conninfo), load_s, rollup_s, timings))
        explained = {
            t.page.label: [
                plan for _, query, params in t.queries if (plan := explain(conninfo, query, params))
            ]
            for t in measured[-1].timings
            if t.queries
        }
    finally:
        database.stop()
        shutil.rmtree(directory, ignore_errors=True)
    print(report(machine, measured, explained, repeat, quick, baseline, args.baseline, args.only))
    return 0


def _baseline(
    tree: str, conninfo: str, repeat: int, batches: int, items: int, only: str
) -> dict[str, float]:
    """The medians of this script's pages as the app of ``tree`` answers them (a subprocess
    importing ``pipelens_server`` from ``tree``), by label."""
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
    command = [sys.executable, str(Path(__file__).resolve()), "--measure-only", conninfo]
    command += ["--repeat", str(repeat), "--big-batches", str(batches), "--big-items", str(items)]
    command += ["--only", only]
    answer = subprocess.run(
        command, env=env, cwd=tree, stdout=subprocess.PIPE, text=True, check=True
    )
    medians: dict[str, float] = json.loads(answer.stdout.strip().splitlines()[-1])
    return medians


if __name__ == "__main__":
    raise SystemExit(main())

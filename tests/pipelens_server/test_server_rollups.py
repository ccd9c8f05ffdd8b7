"""Rollups (migration 0013): the overview's and the step statistics' figures read from hourly and
daily sums plus raw edges agree with the raw rows' answer, before and after late writes (ingest,
retention and the abandoned-run check note the hours they change, migration 0014), on a real
PostgreSQL."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import psycopg
import pytest
from _otlp_kit import memory_provider, protobuf_body
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens.events import Batch, Event, RunFinished, StepFinished, StepStarted
from pipelens_server._db._abandon import abandon
from pipelens_server._db._retention import purge, set_pipeline_days
from pipelens_server._db._rollup import DAY_NS, HOUR_NS, roll_up
from pipelens_server._ingest._decode import batch_rows
from pipelens_server._ingest._otlp import decode_request, request_rows
from pipelens_server._ingest._store import create_staging_tables, store
from pipelens_server._read._pictures import duration_histogram, raw_buckets
from pipelens_server._read._rollup import MERGED, SUMMED, combine, merge, plan, sources
from pipelens_server._read._runs import overview_figures, pipeline_summaries
from pipelens_server._read._stats import duration_series, slowest_and_failed, step_stats

#: Half a bucket: how far a rolled-up percentile may be from the nearest-rank value.
HALF_BUCKET = 2 ** (1 / 16)
DAYS = 3
RUNS = 6000
KEY = "bulk.work"
#: Every answer from the rollups, however few the rows (the default reads small ranges raw).
ROLLED = {"exact_below": 0}
#: Every answer from raw rows.
RAW = {"exact_below": 10**12}
#: When the transaction that runs it began, in ns.
_BEGAN = "SELECT (extract(epoch FROM now()) * 1000000000)::bigint"


def _load(database_url: str, first: int, count: int, now: int) -> None:
    """Runs ``b<first>``.. of pipeline ``bulk`` spread over the last ``DAYS`` days, each with a
    root and one ``work`` step of 1 ms to ~8 s (log-uniform, so every bucket has some); one run
    in 40 failed, one in 100 still running, one in 250 abandoned."""
    span = DAYS * 24 * HOUR_NS
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT setseed(0.25)")
        conn.execute("INSERT INTO pipelines (name) VALUES ('bulk') ON CONFLICT DO NOTHING")
        conn.execute(
            "INSERT INTO runs (run_id, pipeline, status, start_ns, duration_ns) "
            "SELECT 'b' || i, 'bulk', s.status, %(now)s - (random() * %(span)s)::bigint, "
            "CASE WHEN s.status = 'running' THEN NULL "
            "ELSE (1000000 * power(8000, random()))::bigint END "
            "FROM generate_series(%(first)s::int, %(last)s::int) i CROSS JOIN LATERAL (SELECT "
            "CASE WHEN i %% 100 = 0 THEN 'running' WHEN i %% 250 = 0 THEN 'abandoned' "
            "WHEN i %% 40 = 0 THEN 'failed' ELSE 'completed' END AS status) s",
            {"now": now, "span": span, "first": first, "last": first + count - 1},
        )
        conn.execute(
            "INSERT INTO steps (run_id, key, pipeline, step_id, name, status, start_ns, "
            "duration_ns) SELECT run_id, %(key)s, 'bulk', 'w', 'work', "
            "CASE WHEN status = 'abandoned' THEN 'completed' ELSE status END, start_ns, "
            "CASE WHEN status = 'running' THEN NULL "
            "ELSE (1000000 * power(8000, random()))::bigint END "
            "FROM runs WHERE run_id = ANY(%(ids)s)",
            {"key": KEY, "ids": [f"b{i}" for i in range(first, first + count)]},
        )
        # Written by hand, so noted by hand (as migration 0014 asks): PipeLens's own writers
        # note the ended hours they write into.
        conn.execute(
            "INSERT INTO rollup_dirty (hour_ns) SELECT DISTINCT pipelens_hour(start_ns) "
            "FROM runs WHERE run_id = ANY(%(ids)s)",
            {"ids": [f"b{i}" for i in range(first, first + count)]},
        )


def _late_events(
    first: int, count: int, now: int, *, steps: int = 1, hours: int = DAYS * 24
) -> list[Event]:
    """Runs ``b<first>``.. of pipeline ``bulk`` as wire events, spread over the ``hours`` before
    ``now``, finished (one in 40 failed) with ``steps`` steps each, the first keyed ``KEY``."""
    pick = random.Random(first)
    span = hours * HOUR_NS
    events: list[Event] = []
    for i in range(first, first + count):
        start = now - pick.randrange(span)
        status = "failed" if i % 40 == 0 else "completed"
        run_id = f"b{i}"
        for n in range(steps):
            duration = int(1_000_000 * 8000 ** pick.random())
            events.append(
                StepFinished(
                    run_id=run_id,
                    step_id=f"s{n}",
                    key=KEY if n == 0 else f"{KEY}___{n}",
                    name="work",
                    start_ns=start + n,
                    end_ns=start + n + duration,
                    duration_ns=duration,
                    status=status,
                )
            )
        duration = int(1_000_000 * 8000 ** pick.random())
        events.append(
            RunFinished(
                run_id=run_id,
                pipeline="bulk",
                start_ns=start,
                end_ns=start + duration,
                duration_ns=duration,
                status=status,
            )
        )
    return events


async def _ingest(pool: AsyncConnectionPool[Any], events: list[Event]) -> None:
    """Store ``events`` as one batch, as ``POST /api/v1/events`` does."""
    await store(pool, batch_rows(Batch(events=events), partial=True), timeout=60)


def _exact(database_url: str, since: int) -> dict[str, Any]:
    """The raw rows' figures: the nearest-rank percentiles, as rollups approximate them."""
    with psycopg.connect(database_url) as conn:
        steps = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'failed'), count(duration_ns), "
            "min(duration_ns), max(duration_ns), avg(duration_ns)::float8, "
            "percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ns), "
            "percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ns), "
            "percentile_disc(0.99) WITHIN GROUP (ORDER BY duration_ns) "
            "FROM steps WHERE pipeline = 'bulk' AND key = %s AND start_ns >= %s",
            [KEY, since],
        ).fetchone()
        runs = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'failed'), "
            "count(*) FILTER (WHERE status = 'running'), "
            "count(*) FILTER (WHERE status = 'abandoned'), "
            "percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ns) "
            "FILTER (WHERE status <> 'abandoned'), "
            "percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ns) "
            "FILTER (WHERE status <> 'abandoned') "
            "FROM runs WHERE pipeline = 'bulk' AND start_ns >= %s",
            [since],
        ).fetchone()
    assert steps is not None
    assert runs is not None
    return {"steps": steps, "runs": runs}


def _near(approx: float | None, exact: int) -> bool:
    assert approx is not None
    return exact / HALF_BUCKET <= approx <= exact * HALF_BUCKET


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    # Both connections made and configured before the test: a connection the pool added while a
    # test ran would hold its configure transaction open, and the rollup job waits for it.
    async with AsyncConnectionPool(
        database_url, min_size=2, max_size=2, open=False, configure=create_staging_tables
    ) as opened:
        await opened.wait()
        yield opened


async def _check(pool: AsyncConnectionPool[Any], database_url: str, since: int) -> None:
    exact = _exact(database_url, since)
    stats = await step_stats(pool, "bulk", KEY, since, **ROLLED)
    count, failed, finished, low, high, mean, p50, p95, p99 = exact["steps"]
    assert (stats.count, stats.failed, stats.finished) == (count, failed, finished)
    assert (stats.min_ns, stats.max_ns) == (low, high)
    assert stats.avg_ns == pytest.approx(mean)
    assert [_near(stats.p50_ns, p50), _near(stats.p95_ns, p95), _near(stats.p99_ns, p99)] == [
        True,
        True,
        True,
    ]
    [summary] = await pipeline_summaries(pool, since, **ROLLED)
    runs, runs_failed, running, abandoned, run_p50, run_p95 = exact["runs"]
    figures = (summary.runs, summary.failed, summary.running, summary.abandoned)
    assert figures == (runs, runs_failed, running, abandoned)
    assert [_near(summary.p50_ns, run_p50), _near(summary.p95_ns, run_p95)] == [True, True]
    # The slowest and the latest failed runs are the raw rows' very ones.
    assert await slowest_and_failed(pool, "bulk", KEY, since, **ROLLED) == (
        await slowest_and_failed(pool, "bulk", KEY, since, **RAW)
    )
    series = await duration_series(pool, stats, since, max_points=1, **ROLLED)
    assert series.downsampled
    assert (sum(b.count for b in series.buckets), sum(b.failed for b in series.buckets)) == (
        finished,
        failed,
    )
    assert (min(b.min_ns for b in series.buckets), max(b.max_ns for b in series.buckets)) == (
        low,
        high,
    )


async def test_rolled_up_figures_agree_with_the_raw_rows_within_half_a_bucket(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """Over ranges cut anywhere (days, hours and raw edges), counts, failures, min, max and mean
    equal the raw rows', percentiles are within half a bucket of the nearest-rank value, the
    slowest and failed runs and the series' sums are the raw rows'."""
    now = time.time_ns()
    _load(database_url, 1, RUNS, now)
    assert await roll_up(pool) > 0
    async with pool.connection() as conn:
        whole = await plan(conn, now - DAYS * 24 * HOUR_NS, None)
    assert (len(whole.days) >= 1, len(whole.hours) >= 1) == (True, True)
    for since in (now - DAYS * 24 * HOUR_NS, now - 30 * HOUR_NS - 12345, now - 5 * HOUR_NS):
        await _check(pool, database_url, since)
    stats = await step_stats(pool, "bulk", KEY, now - 5 * HOUR_NS, **ROLLED)
    hourly = await duration_series(pool, stats, now - 5 * HOUR_NS, max_points=1, **ROLLED)
    assert (hourly.bucket_ns, len(hourly.buckets) in (5, 6)) == (HOUR_NS, True)


async def test_a_late_write_into_a_rolled_up_hour_is_counted_before_and_after_the_next_round(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """Runs ingested into hours already rolled up (a late batch, an import) are noted dirty by
    the ingest: reads take those hours raw until the job rolls them up again, then from the
    rollups; runs closed as abandoned and runs deleted by retention likewise."""
    now = time.time_ns()
    since = now - DAYS * 24 * HOUR_NS
    _load(database_url, 1, RUNS, now)
    await roll_up(pool)
    await _ingest(pool, _late_events(RUNS + 1, 500, now, hours=20))
    async with pool.connection() as conn:
        late = await plan(conn, since, None)
    assert late.raw != [(since, None)]  # some hours stay rolled up
    await _check(pool, database_url, since)
    await roll_up(pool)
    await _check(pool, database_url, since)
    # Every running run of _load's is silent: abandoned now, in the hours it started in.
    assert await abandon(pool, 0, now_ns=time.time_ns() + 10**9) == RUNS // 100
    await _check(pool, database_url, since)
    await roll_up(pool)
    await _check(pool, database_url, since)
    await set_pipeline_days(pool, "bulk", 1)
    assert await purge(pool) > 0
    await _check(pool, database_url, since)
    await roll_up(pool)
    await _check(pool, database_url, since)


def _per_hour(database_url: str, sealed_before: int) -> tuple[list[Any], list[Any]]:
    """Steps per hour and pipeline from the rollups and from the raw rows, of sealed hours."""
    with psycopg.connect(database_url) as conn:
        rolled = conn.execute(
            "SELECT start_ns, pipeline, sum(n)::int FROM rollups WHERE kind = 'step' "
            "AND span_ns = %s AND bucket >= -1 GROUP BY 1, 2 ORDER BY 1, 2",
            [HOUR_NS],
        ).fetchall()
        raw = conn.execute(
            "SELECT pipelens_hour(start_ns), pipeline, count(*)::int FROM steps "
            "WHERE pipeline IS NOT NULL AND start_ns < %s GROUP BY 1, 2 ORDER BY 1, 2",
            [sealed_before],
        ).fetchall()
    return rolled, raw


async def test_a_big_batch_into_ended_hours_is_rolled_up_hour_by_hour(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """One batch of 20,000 steps over hours that had ended notes each of them: the next round
    rolls them all up, and every hour's step count is the raw rows'."""
    await roll_up(pool)  # the hours before now are sealed, empty
    now = time.time_ns()
    hour = now - now % HOUR_NS
    await _ingest(pool, _late_events(1, 200, hour, steps=100, hours=48))
    assert await roll_up(pool) > 0
    rolled, raw = _per_hour(database_url, hour)
    assert (len(raw) > 24, sum(n for *_, n in raw)) == (True, 20_000)
    assert rolled == raw


async def test_steps_whose_pipeline_or_start_a_later_batch_changes_are_rolled_up_again(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """A step stored before its run event counts once the run names its pipeline, and a step
    whose start an earlier piece moves to another hour leaves the hour it was in: both hours are
    noted by the batch that changes them."""
    await roll_up(pool)
    now = time.time_ns()
    hour = now - now % HOUR_NS
    [step, run] = _late_events(1, 1, hour - 5 * HOUR_NS)
    assert isinstance(step, StepFinished)
    await _ingest(pool, [step])
    await roll_up(pool)
    assert _per_hour(database_url, hour) == ([], [])  # no pipeline known yet
    await _ingest(pool, [run])
    await roll_up(pool)
    rolled, raw = _per_hour(database_url, hour)
    assert (rolled, len(raw)) == (raw, 1)
    earlier = StepStarted(
        run_id=step.run_id,
        step_id=step.step_id,
        key=step.key,
        name=step.name,
        start_ns=step.start_ns - 2 * HOUR_NS,
    )
    await _ingest(pool, [earlier])
    await roll_up(pool)
    rolled, moved = _per_hour(database_url, hour)
    assert (rolled, len(moved), moved != raw) == (moved, 1, True)


async def test_small_ranges_are_answered_exactly_from_raw_rows(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """Below ``EXACT_BELOW`` rows the figures are the raw rows' (``percentile_cont``), rolled up
    or not."""
    now = time.time_ns()
    since = now - DAYS * 24 * HOUR_NS
    _load(database_url, 1, 2000, now)
    await roll_up(pool)
    assert await step_stats(pool, "bulk", KEY, since) == await step_stats(
        pool, "bulk", KEY, since, **RAW
    )
    assert await pipeline_summaries(pool, since) == await pipeline_summaries(pool, since, **RAW)


async def test_an_hour_is_sealed_only_once_no_transaction_begun_before_its_end_is_open(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """A write begun before an hour ended notes nothing for it (the hour was open): the job
    waits for that transaction before sealing the hour, so its rows are never missed."""

    def sealed() -> int:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT sealed_until_ns FROM rollup_state").fetchone()
        assert row is not None
        return int(row[0])

    with psycopg.connect(database_url) as open_conn:
        # A transaction begun now, its hour read from it (a clock read before it may be in the
        # hour before).
        began = open_conn.execute(_BEGAN).fetchone()
        assert began is not None
        hour = began[0] - began[0] % HOUR_NS
        await roll_up(pool, now_ns=hour + 3 * HOUR_NS)
        assert sealed() <= hour
    await roll_up(pool, now_ns=hour + 3 * HOUR_NS)
    assert sealed() == hour + 3 * HOUR_NS


async def test_rollup_rows_summed_in_postgresql_combine_to_what_merging_them_gives(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """The overview sums rollup rows per group in PostgreSQL (``SUMMED``, a group's duration
    buckets as arrays) and combines those rows: the same counts, durations and duration buckets
    as merging the group's rollup rows one per bucket (``merge``), for groups of several days,
    of one day, and of the unfinished runs alone (no duration: bucket -1 only)."""
    now = time.time_ns()
    _load(database_url, 1, RUNS, now)
    await roll_up(pool)
    async with pool.connection() as conn:
        the_plan = await plan(conn, now - DAYS * DAY_NS, None)
        params: list[Any] = [DAY_NS]
        rows = sources("run", sql.SQL("key = %s"), [""], the_plan, params)
        # Groups: a UTC day (a daily rollup row's start_ns is its day's midnight, so a day counted
        # from ``now`` would move it into the day before), and whether the rows are the unfinished
        # runs' (bucket -1).
        groups = "SELECT start_ns / %s, bucket < 0, {} FROM ({}) r GROUP BY 1, 2"
        per_bucket = sql.SQL(groups + ", bucket").format(sql.SQL("bucket, " + MERGED), rows)
        summed = sql.SQL(groups).format(sql.SQL(SUMMED), rows)
        merged: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for row in await (await conn.execute(per_bucket, params)).fetchall():
            merged.setdefault(row[:2], []).append(row[2:])
        found = await (await conn.execute(summed, params)).fetchall()
    combined = {row[:2]: combine([row[2:]]) for row in found}
    expected = {group: merge(rows) for group, rows in merged.items()}
    expected["all", None] = merge(row for rows in merged.values() for row in rows)
    combined["all", None] = combine(row[2:] for row in found)
    # The UTC days wholly inside the range each hold ~20 unfinished runs; the range's first and
    # last part-days may hold none (a run after midnight is unlikely in the first minutes).
    whole_days = range(-(-(now - DAYS * DAY_NS) // DAY_NS), now // DAY_NS)
    assert len(whole_days) >= DAYS - 1
    assert {(day, True) for day in whole_days} <= {group for group in combined if group[1]}
    assert all(combined[day, True].finished == 0 < combined[day, True].count for day in whole_days)
    assert all(combined[group].finished == 0 for group in combined if group[1])
    assert 0 < combined["all", None].finished < combined["all", None].count
    assert combine([]) == merge([])
    for group, want in expected.items():
        got = combined[group]
        assert got.dur_sum == pytest.approx(want.dur_sum)
        assert msgspec.structs.replace(got, dur_sum=None) == msgspec.structs.replace(
            want, dur_sum=None
        )
    assert combined.keys() == expected.keys()


async def test_sparkline_buckets_come_from_the_rollups_and_agree_with_the_raw_rows(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """The overview's sparklines over a rolled-up range: whole hours per bucket (3 days in 24
    buckets), whole UTC days once a bucket spans a day (30 days); each bucket's runs and
    failures equal the raw rows' on the same grid, its p95 within half a bucket of the
    nearest-rank value; the overview's one read gives the same sparklines and figures; and the
    rolled-up hours are read from the rollups, not the raw rows (with the rollups emptied they
    count nothing)."""
    now = time.time_ns()
    _load(database_url, 1, RUNS, now)
    await roll_up(pool)
    # Buckets start at the hour (or the UTC day) holding the range's start, whatever their width.
    for days, width, unit in ((DAYS, 3 * HOUR_NS, HOUR_NS), (30, DAY_NS, DAY_NS)):
        lo = now - days * DAY_NS + 12345
        _, grid = await overview_figures(pool, lo, lo, now + 1, 24, **ROLLED)
        assert (grid.width_ns, grid.lo_ns % unit, lo - unit < grid.lo_ns <= lo) == (width, 0, True)
        assert grid.count * grid.width_ns >= now + 1 - grid.lo_ns
        with psycopg.connect(database_url) as conn:
            exact = conn.execute(
                "SELECT (start_ns - %(first)s) / %(width)s, count(*), "
                "count(*) FILTER (WHERE status = 'failed'), "
                "percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ns) "
                "FILTER (WHERE status NOT IN ('running', 'abandoned')) "
                "FROM runs WHERE start_ns >= %(lo)s GROUP BY 1 ORDER BY 1",
                {"first": grid.lo_ns, "width": grid.width_ns, "lo": lo},
            ).fetchall()
        assert [(b.index, b.runs, b.failed) for b in grid.rows] == [r[:3] for r in exact]
        assert all(_near(b.p95_ns, r[3]) for b, r in zip(grid.rows, exact, strict=True))
        # The overview's figures beside them come from the same read of the rollups.
        summaries, _ = await overview_figures(pool, lo, lo, now + 1, 24, **ROLLED)
        assert summaries == await pipeline_summaries(pool, lo, **ROLLED)
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM rollups WHERE kind = 'run'")
    since = now - DAYS * DAY_NS
    _, emptied = await overview_figures(pool, since, since, now + 1, 24, **ROLLED)
    assert sum(b.runs for b in emptied.rows) < RUNS / 10  # the raw edges alone


async def test_the_overviews_bars_read_the_rollups_once_until_a_statement_changes_them(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """The bars of the rolled-up days are read once and kept: with the trigger that counts the
    rollups' changes (migration 0018) turned off, a change by hand is not seen; the next
    statement on ``rollups`` with it on makes the next read see it."""
    now = time.time_ns()
    _load(database_url, 1, RUNS, now)
    await roll_up(pool)
    lo = now - 30 * DAY_NS + 12345
    _, first = await overview_figures(pool, lo, lo, now + 1, 24, **ROLLED)
    assert sum(b.runs for b in first.rows) == RUNS
    with psycopg.connect(database_url) as conn:
        conn.execute("ALTER TABLE rollups DISABLE TRIGGER rollups_changed")
        conn.execute("UPDATE rollups SET n = n * 2 WHERE kind = 'run'")
    _, kept = await overview_figures(pool, lo, lo, now + 1, 24, **ROLLED)
    assert kept == first
    with psycopg.connect(database_url) as conn:
        conn.execute("ALTER TABLE rollups ENABLE TRIGGER rollups_changed")
        conn.execute("UPDATE rollups SET n = n WHERE kind = 'run'")
    _, read = await overview_figures(pool, lo, lo, now + 1, 24, **ROLLED)
    # Doubled but for the raw edges (the hour in progress, the range's first partial hour).
    assert sum(b.runs for b in read.rows) > 1.8 * RUNS


async def test_an_overview_of_few_runs_reads_them_raw_exactly_though_rolled_up(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """A rolled-up range of no more than ``exact_below`` runs: the overview reads its figures and
    its sparklines from raw rows (exact p95s, the raw grid from the range's start), as cheap as
    the rollups' rows there; one run more and both come from the rollups (hour-aligned grid)."""
    now = time.time_ns()
    _load(database_url, 1, RUNS, now)
    await roll_up(pool)
    lo = now - DAYS * DAY_NS + 12345
    async with pool.connection() as conn:
        raw = await raw_buckets(conn, lo, now + 1, 24)
    summaries, grid = await overview_figures(pool, lo, lo, now + 1, 24, exact_below=RUNS)
    assert (summaries, grid) == (await pipeline_summaries(pool, lo, **RAW), raw)
    assert grid.lo_ns == lo
    _, rolled = await overview_figures(pool, lo, lo, now + 1, 24, exact_below=RUNS - 1)
    assert rolled.lo_ns % HOUR_NS == 0
    assert rolled != raw


async def test_the_step_histogram_comes_from_the_rollups_each_step_within_half_a_bucket(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """Over a rolled-up range, the step histogram counts every finished step and every failed
    one; below each bin's edge it counts no fewer steps than the raw rows below the edge over
    half a bucket and no more than below it times half a bucket (each step in the bin of its
    bucket's middle); with the rollups emptied, only the raw edges count."""
    now = time.time_ns()
    _load(database_url, 1, RUNS, now)
    await roll_up(pool)
    since = now - DAYS * DAY_NS
    stats = await step_stats(pool, "bulk", KEY, since)
    assert stats.min_ns is not None
    assert stats.max_ns is not None
    lo, hi, bins = stats.min_ns, stats.max_ns, 24
    counts = await duration_histogram(pool, "bulk", KEY, since, lo, hi, bins, **ROLLED)
    assert (sum(c for c, _ in counts), sum(f for _, f in counts)) == (stats.finished, stats.failed)
    with psycopg.connect(database_url) as conn:

        def below(edge: float) -> int:
            row = conn.execute(
                "SELECT count(*) FROM steps WHERE key = %s AND start_ns >= %s AND duration_ns < %s",
                [KEY, since, edge],
            ).fetchone()
            assert row is not None
            return int(row[0])

        for i in range(1, bins):
            edge = lo + (hi - lo) * i / bins
            rolled = sum(c for c, _ in counts[:i])
            assert below(edge / HALF_BUCKET) <= rolled <= below(edge * HALF_BUCKET) + 1
        conn.execute("DELETE FROM rollups WHERE kind = 'step'")
    emptied = await duration_histogram(pool, "bulk", KEY, since, lo, hi, bins, **ROLLED)
    assert sum(c for c, _ in emptied) < RUNS / 10  # the raw edges alone


async def test_steps_whose_name_path_a_later_otlp_request_changes_are_rolled_up_again(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """Two OTLP spans ``x`` under a root that has not come, five and three hours ago, sent one
    at a time: the earlier one, coming second, renumbers the later one's path (``x`` to
    ``x___1``) without writing its row otherwise, and the later one's hour is noted for it."""
    now = time.time_ns()
    hour = now - now % HOUR_NS
    with memory_provider() as (provider, memory):
        tracer = provider.get_tracer("tests.rollups")
        root = tracer.start_span("pipeline", start_time=hour - 6 * HOUR_NS)
        context = trace.set_span_in_context(root)
        for back in (5, 3):
            child = tracer.start_span("x", context=context, start_time=hour - back * HOUR_NS)
            child.end(end_time=hour - back * HOUR_NS + 1000)
        spans = list(memory.get_finished_spans())
    earlier, later = spans

    async def send(span: ReadableSpan) -> None:
        message = decode_request(protobuf_body([span]), is_json=False)
        await store(pool, request_rows(message).rows, timeout=60)

    await send(later)
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM rollup_dirty")
    await send(earlier)
    with psycopg.connect(database_url) as conn:
        paths = conn.execute("SELECT start_ns, path FROM steps ORDER BY start_ns").fetchall()
        noted = {h for (h,) in conn.execute("SELECT hour_ns FROM rollup_dirty").fetchall()}
    assert [path for _, path in paths] == ["x", "x___1"]
    assert noted == {hour - 5 * HOUR_NS, hour - 3 * HOUR_NS}


async def test_the_pipelines_api_and_the_overview_read_alike_at_the_threshold(
    database_url: str, pool: AsyncConnectionPool[Any]
) -> None:
    """Right at ``exact_below`` the API's figures (``pipeline_summaries``) and the overview's
    come from the same source, by the same count of the runs in range: a run whose pipeline is
    not yet known counts there but not in the rollups' sums (which alone the API summed)."""
    now = time.time_ns()
    _load(database_url, 1, RUNS, now)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, status, start_ns) VALUES ('nameless', 'running', %s)",
            [now - HOUR_NS],
        )
    await roll_up(pool)
    lo = now - DAYS * DAY_NS + 12345
    for threshold in (RUNS - 1, RUNS, RUNS + 1):
        overview, _ = await overview_figures(pool, lo, lo, now + 1, 24, exact_below=threshold)
        assert await pipeline_summaries(pool, lo, exact_below=threshold) == overview
    rolled = await pipeline_summaries(pool, lo, exact_below=RUNS)
    assert rolled != await pipeline_summaries(pool, lo, **RAW)  # RUNS + 1 counted: rollups

"""The figures the dashboard's small pictures draw, beside the tables that already read the rest:
runs per time bucket of each pipeline (the overview's sparklines), the runs of a range as points
(the runs page's timeline), where a run's time went (the run page's strip), and a step key's
durations as a histogram (the step statistics page).

Each query reads a bounded answer: buckets, at most ``MAX_POINTS`` runs, one row. The sparklines
of a range holding rolled-up hours read the rollups (``_rollup``) there and raw rows only at its
edges, as the overview's figures beside them do, so the overview reads no raw row it did not
read before.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens_server._read._rollup import (
    DAY_NS,
    EXACT_BELOW,
    HOUR_NS,
    SUMMED_COUNTS,
    Merged,
    Plan,
    bucket_middle,
    combine,
    plan,
    raw_source,
    rolled_source,
    sources,
)
from pipelens_server._read._search import RunSearch, rare_text_runs, search_conditions

#: The most runs the timeline draws one by one; past it, each of ``POINT_BUCKETS`` time buckets
#: keeps its slowest run and its slowest failed run (the outliers stay, each still a real run).
MAX_POINTS = 1000
POINT_BUCKETS = 400
#: Bars of a histogram.
HISTOGRAM_BINS = 24
_KEY = sql.SQL("pipeline = %s AND key = %s")


class RunBucket(msgspec.Struct, kw_only=True, frozen=True):
    """A pipeline's runs started in the ``index``-th bucket of a range."""

    pipeline: str
    index: int
    runs: int
    failed: int
    #: Of the finished runs (an abandoned run's duration is only how long it was heard of).
    p95_ns: float | None


class RunBuckets(msgspec.Struct, kw_only=True, frozen=True):
    """The sparklines' time grid, ``count`` buckets of ``width_ns`` from ``lo_ns``, and each
    pipeline's buckets that hold a run."""

    lo_ns: int
    width_ns: int
    count: int
    rows: list[RunBucket]


class RunPoint(msgspec.Struct, kw_only=True, frozen=True):
    """One run on the timeline: a running run's duration is its time so far."""

    run_id: str
    status: str
    start_ns: int
    duration_ns: int


class Points(msgspec.Struct, kw_only=True, frozen=True):
    """The runs drawn, how many there are in all, and the span of their starts."""

    points: list[RunPoint]
    total: int
    first_ns: int | None
    last_ns: int | None

    @property
    def sampled(self) -> bool:
        """Whether only the slowest of each time bucket are drawn."""
        return self.total > len(self.points)


class TimeSplit(msgspec.Struct, kw_only=True, frozen=True):
    """Where a run's step time went: in LLM calls, in the other steps that have no children,
    and in parents while none of their children ran (their own work, or waiting)."""

    llm_ns: int
    steps_ns: int
    idle_ns: int

    @property
    def total_ns(self) -> int:
        """The three together (more than the run's duration when steps ran side by side)."""
        return self.llm_ns + self.steps_ns + self.idle_ns


_BUCKETS = sql.SQL(
    """
    SELECT pipeline, ((start_ns - %(lo)s) / %(width)s)::int AS index, count(*),
           count(*) FILTER (WHERE status = 'failed'),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns)
               FILTER (WHERE status NOT IN ('abandoned', 'running'))
    FROM runs
    WHERE pipeline IS NOT NULL AND start_ns >= %(lo)s AND start_ns < %(hi)s
    GROUP BY 1, 2 ORDER BY 1, 2
    """
)


async def first_start(pool: AsyncConnectionPool[Any]) -> int | None:
    """When the first run known started (the start of the ``all`` range)."""
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT min(start_ns) FROM runs")
        row = await cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def bucket_width(lo_ns: int, hi_ns: int, buckets: int) -> int:
    """The width of each of ``buckets`` equal buckets covering ``[lo_ns, hi_ns)``."""
    return max(1, -(-(hi_ns - lo_ns) // buckets))


async def raw_buckets(
    conn: psycopg.AsyncConnection[Any], lo_ns: int, hi_ns: int, buckets: int
) -> RunBuckets:
    """Each pipeline's runs, failures and p95 duration in ``buckets`` equal time buckets of
    ``[lo_ns, hi_ns)`` from raw rows; buckets without a run are left out."""
    width = bucket_width(lo_ns, hi_ns, buckets)
    cursor = await conn.execute(_BUCKETS, {"lo": lo_ns, "hi": hi_ns, "width": width})
    rows = [
        RunBucket(pipeline=r[0], index=r[1], runs=r[2], failed=r[3], p95_ns=r[4])
        for r in await cursor.fetchall()
    ]
    return RunBuckets(lo_ns=lo_ns, width_ns=width, count=buckets, rows=rows)


async def rolled_buckets(
    conn: psycopg.AsyncConnection[Any], the_plan: Plan, lo_ns: int, hi_ns: int, buckets: int
) -> tuple[RunBuckets, dict[str, Merged]] | None:
    """:func:`raw_buckets` from the rollups of ``the_plan`` (a range starting at or before
    ``lo_ns``), with each pipeline's sums over the whole plan (the overview's figures, from the
    same read); ``None`` when the plan rolls nothing up or a bucket would be shorter than an
    hour.

    The grid is then whole hours (whole UTC days once a bucket spans a day or more), so that
    each rolled-up hour or day falls in one bucket, from the hour or day holding ``lo_ns``; the
    p95 is within half a duration bucket (``_rollup``) and the first and last buckets are
    partial."""
    width = bucket_width(lo_ns, hi_ns, buckets)
    if width < HOUR_NS or not the_plan.rolled:
        return None
    unit = DAY_NS if width >= DAY_NS else HOUR_NS
    width = max(1, round(width / unit)) * unit
    first = lo_ns - lo_ns % unit
    count = -(-(hi_ns - first) // width)
    if unit == HOUR_NS:  # a day would straddle buckets: its hours instead
        the_plan = msgspec.structs.replace(the_plan, days=[], hours=the_plan.clean_hours())
    bars = await _rolled_bars(conn, the_plan, first, width)
    bars = sorted([*bars, *await _raw_bars(conn, the_plan, first, width)], key=lambda r: r[:2])
    found = []
    by_pipeline: dict[str, list[tuple[Any, ...]]] = {}
    for (pipeline, index), group in itertools.groupby(bars, key=lambda r: r[:2]):
        sums = [row[2:] for row in group]  # a bar's rollup rows and its raw rows
        by_pipeline.setdefault(pipeline, []).extend(sums)
        if 0 <= index < count:  # the plan may reach past hi_ns
            merged = combine(sums)
            p95 = merged.percentile(0.95)
            found.append(
                RunBucket(
                    pipeline=pipeline,
                    index=index,
                    runs=merged.count,
                    failed=merged.failed,
                    p95_ns=p95,
                )
            )
    totals = {pipeline: combine(rows) for pipeline, rows in by_pipeline.items()}
    grid = RunBuckets(lo_ns=first, width_ns=width, count=count, rows=found)
    return grid, totals


#: What :func:`_rolled_bars` read, by the plan's version and what the read covered: the
#: rollups change when the rollup job writes (every ``_db._rollup.INTERVAL_S`` at most, mostly
#: once an hour) while an open overview asks every few seconds.
_ROLLED_BARS: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
#: Reads kept (ranges and sizes of bars), the oldest dropped first.
_ROLLED_BARS_KEPT = 16
_BARS = "SELECT pipeline, ((start_ns - %s) / %s)::int AS bar, {} FROM ({}) r GROUP BY 1, 2"


async def _rolled_bars(
    conn: psycopg.AsyncConnection[Any], the_plan: Plan, first: int, width: int
) -> list[tuple[Any, ...]]:
    """The rolled-up runs of ``the_plan`` summed per pipeline and bar (a bar's duration buckets
    as arrays: a row per bar, not per bar and duration bucket), read once per version of the
    rollups."""
    key = (the_plan.version, tuple(the_plan.days), tuple(the_plan.hours), first, width)
    kept = _ROLLED_BARS.get(key) if the_plan.version is not None else None
    if kept is not None:
        return kept
    params: list[Any] = [first, width]
    runs = rolled_source("run", sql.SQL("key = %s"), [""], the_plan, params)
    query = sql.SQL(_BARS).format(sql.SQL(SUMMED_COUNTS), runs)
    # The planner expects some 25 times fewer rows than ANY(days) matches, and sorts them to
    # group them: hashing them is faster (30 days at 100k runs: ~5 ms of ~20).
    await conn.execute("SELECT set_config('enable_sort', 'off', true)")
    try:
        rows = await (await conn.execute(query, params)).fetchall()
    finally:
        await conn.execute("SELECT set_config('enable_sort', 'on', true)")
    if the_plan.version is not None:
        while len(_ROLLED_BARS) >= _ROLLED_BARS_KEPT:
            del _ROLLED_BARS[next(iter(_ROLLED_BARS))]
        _ROLLED_BARS[key] = rows
    return rows


async def _raw_bars(
    conn: psycopg.AsyncConnection[Any], the_plan: Plan, first: int, width: int
) -> list[tuple[Any, ...]]:
    """The raw runs of ``the_plan`` (its edges, the current hour, dirty hours) summed as
    :func:`_rolled_bars`, read every time."""
    if not the_plan.raw:
        return []
    params: list[Any] = [first, width]
    runs = raw_source("run", sql.SQL("key = %s"), [""], the_plan, params)
    query = sql.SQL(_BARS).format(sql.SQL(SUMMED_COUNTS), runs)
    return await (await conn.execute(query, params)).fetchall()


async def run_points(
    pool: AsyncConnectionPool[Any],
    *,
    pipeline: str,
    since_ns: int,
    until_ns: int | None,
    now_ns: int,
    status: str | None,
    search: RunSearch,
    max_points: int = MAX_POINTS,
) -> Points:
    """The runs of ``pipeline`` the runs page lists (the same range and filters) as points: all
    of them up to ``MAX_POINTS``, else the slowest and the slowest failed of each time bucket."""
    conditions: list[sql.Composable] = [
        sql.SQL("pipeline = %s"),
        sql.SQL("start_ns >= %s"),
        sql.SQL("start_ns IS NOT NULL"),
    ]
    params: list[Any] = [pipeline, since_ns]
    if until_ns is not None:
        conditions.append(sql.SQL("start_ns < %s"))
        params.append(until_ns)
    if status is not None:
        conditions.append(sql.SQL("status = %s"))
        params.append(status)
    search_conditions(search, conditions, params, await rare_text_runs(pool, search))
    where = sql.SQL(" AND ").join(conditions)
    span = sql.SQL("SELECT count(*), min(start_ns), max(start_ns) FROM runs WHERE {}").format(where)
    async with pool.connection() as conn:
        cursor = await conn.execute(span, params)
        row = await cursor.fetchone()
        assert row is not None  # an aggregate always answers one row
        total, lo, hi = row
        if not total:
            return Points(points=[], total=0, first_ns=None, last_ns=None)
        duration = sql.SQL("coalesce(duration_ns, greatest(%s - start_ns, 0))")
        if total <= max_points:
            query = sql.SQL(
                "SELECT run_id, status, start_ns, {} FROM runs WHERE {} ORDER BY start_ns, run_id"
            ).format(duration, where)
            cursor = await conn.execute(query, [now_ns, *params])
        else:
            width = max(1, -(-(hi - lo + 1) // POINT_BUCKETS))
            # DISTINCT ON must lead the ORDER BY with the same expressions: named columns, so
            # that no parameter appears twice.
            query = sql.SQL(
                """
                SELECT run_id, status, start_ns, d FROM (
                    SELECT DISTINCT ON (b, f) run_id, status, start_ns, d FROM (
                        SELECT run_id, status, start_ns, {} AS d,
                               (start_ns - %s) / %s AS b, status = 'failed' AS f
                        FROM runs WHERE {}
                    ) r ORDER BY b, f, d DESC, run_id
                ) slowest ORDER BY start_ns, run_id
                """
            ).format(duration, where)
            cursor = await conn.execute(query, [now_ns, lo, width, *params])
        rows = await cursor.fetchall()
    points = [RunPoint(run_id=r[0], status=r[1], start_ns=r[2], duration_ns=r[3]) for r in rows]
    return Points(points=points, total=total, first_ns=lo, last_ns=hi)


_SPLIT = """
    WITH children AS (
        SELECT parent_id, sum(duration_ns) AS busy_ns
        FROM steps WHERE run_id = %(run)s AND parent_id IS NOT NULL GROUP BY parent_id
    )
    SELECT coalesce(sum(s.duration_ns) FILTER (WHERE s.kind = 'llm'), 0),
           coalesce(sum(s.duration_ns) FILTER (WHERE s.kind <> 'llm' AND c.parent_id IS NULL), 0),
           coalesce(sum(greatest(s.duration_ns - c.busy_ns, 0))
                    FILTER (WHERE s.kind <> 'llm' AND c.parent_id IS NOT NULL), 0)
    FROM steps s LEFT JOIN children c ON c.parent_id = s.step_id
    WHERE s.run_id = %(run)s
"""


async def time_split(pool: AsyncConnectionPool[Any], run_id: str) -> TimeSplit:
    """Where the finished steps of ``run_id`` spent their time (a step still running counts
    once it ends)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(_SPLIT, {"run": run_id})
        row = await cursor.fetchone()
    assert row is not None  # an aggregate always answers one row
    return TimeSplit(llm_ns=int(row[0]), steps_ns=int(row[1]), idle_ns=int(row[2]))


#: In float8 (a duration near the wire's largest times the bins overflows a bigint) and clamped
#: to the bins (a step stored between the stats read and this one may fall outside lo..hi).
_HISTOGRAM = """
    SELECT greatest(0, least(
               floor((duration_ns - %(lo)s)::float8 * %(bins)s / %(span)s)::int, %(bins)s - 1
           )) AS bin,
           count(*), count(*) FILTER (WHERE status = 'failed')
    FROM steps
    WHERE pipeline = %(pipeline)s AND key = %(key)s AND start_ns >= %(since)s
      AND duration_ns IS NOT NULL
    GROUP BY 1 ORDER BY 1
"""


async def duration_histogram(
    pool: AsyncConnectionPool[Any],
    pipeline: str,
    key: str,
    since_ns: int,
    lo_ns: int,
    hi_ns: int,
    bins: int = HISTOGRAM_BINS,
    *,
    exact_below: int = EXACT_BELOW,
) -> list[tuple[int, int]]:
    """How many finished steps of ``key`` (and how many of them failed) took a duration in each
    of ``bins`` equal bins of ``[lo_ns, hi_ns]``, bin by bin (the step index's own columns).

    A range of more than ``exact_below`` steps with rolled-up hours is read from the rollups'
    duration buckets there (raw rows at its edges), each bucket's steps counted in the bin of
    its geometric middle (clamped to ``[lo_ns, hi_ns]``, the exact minimum and maximum): a step
    may then sit one bin off, by at most half a bucket (4.4 %) of its duration."""
    counts = [(0, 0)] * bins
    span = max(1, hi_ns - lo_ns)
    async with pool.connection() as conn:
        the_plan = await plan(conn, since_ns, None)
        if the_plan.rolled:
            params: list[Any] = []
            rows = sources("step", _KEY, [pipeline, key], the_plan, params)
            query = sql.SQL(
                "SELECT bucket, sum(n)::bigint, sum(failed)::bigint FROM ({}) r "
                "WHERE bucket >= 0 GROUP BY bucket"
            ).format(rows)
            found = await (await conn.execute(query, params)).fetchall()
            if sum(row[1] for row in found) > exact_below:
                for bucket, count, failed in found:
                    middle = min(max(bucket_middle(bucket), lo_ns), hi_ns)
                    index = min(bins - 1, int((middle - lo_ns) * bins / span))
                    before = counts[index]
                    counts[index] = (before[0] + count, before[1] + failed)
                return counts
        params_raw = {
            "pipeline": pipeline,
            "key": key,
            "since": since_ns,
            "lo": lo_ns,
            "span": span,
            "bins": bins,
        }
        cursor = await conn.execute(_HISTOGRAM, params_raw)
        for index, count, failed in await cursor.fetchall():
            counts[index] = (count, failed)
    return counts

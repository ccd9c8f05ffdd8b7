"""Step statistics: the figures, durations over time, the slowest and the failed runs of one step
key of one pipeline over a time range.

A step is grouped by its path, ``coalesce(path, key)``: the key our own client gives, the name
path migration 0016 stores for a step whose key had to be made of its id (an OTLP span, a part
of a run continued in another process), so those group across runs too. Every query filters on
``pipeline = … AND coalesce(path, key) = … AND start_ns >= …`` so that it reads the
``steps (pipeline, coalesce(path, key), start_ns)`` index (migration 0016) and only that step's
rows. Durations
are of finished steps (a running step has none yet); the count and the error rate include every
step started in the range.

A range that holds rolled-up hours (``_rollup``: every whole hour but the current one, once the
job has seen it) is read from the rollups there and from raw rows only at its edges, so a page
costs the same over 30 days of any size: the percentiles are then within half a bucket (4.4 %)
of the nearest-rank value, the other figures exact; the slowest runs are looked for only in the
hours whose slowest step could be among them, the latest failures only in the latest hours that
had failures. A range of raw rows only (the last hour) is answered exactly, as
``percentile_cont``.
"""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens_server._read._rollup import (
    EXACT_BELOW,
    HOUR_NS,
    MERGED,
    Plan,
    merge,
    plan,
    raw_condition,
    sources,
)

#: Above this many durations in the range, the time series is downsampled.
MAX_POINTS = 2000
#: How many time buckets a downsampled series has (about one per two pixels of the chart).
BUCKETS = 500
#: How many slowest and failed runs are listed.
TOP_RUNS = 10
#: What steps are grouped by: their name path where they have one, else their key.
PATH = "coalesce(path, key)"


class StepStats(msgspec.Struct, kw_only=True, frozen=True):
    """One step key over a range. Durations (ns) are of finished steps, ``None`` without any."""

    pipeline: str
    key: str
    count: int
    failed: int
    error_rate: float | None
    finished: int
    min_ns: int | None
    avg_ns: float | None
    p50_ns: float | None
    p95_ns: float | None
    p99_ns: float | None
    max_ns: int | None
    first_start_ns: int | None
    last_start_ns: int | None


class StepRun(msgspec.Struct, kw_only=True, frozen=True):
    """The step in one run: a slowest or a failed run."""

    run_id: str
    status: str
    start_ns: int | None
    duration_ns: int | None
    error_type: str | None
    error_message: str | None
    #: The step's key in that run (its path's step: an OTLP span's key holds its span id).
    step_key: str = ""


class Point(msgspec.Struct, kw_only=True, frozen=True):
    """One finished step: when it started and how long it took."""

    start_ns: int
    duration_ns: int
    status: str
    run_id: str


class Bucket(msgspec.Struct, kw_only=True, frozen=True):
    """The finished steps started in ``[start_ns, start_ns + width)``: their durations' min, mean
    and max."""

    start_ns: int
    count: int
    failed: int
    min_ns: int
    avg_ns: float
    max_ns: int


class Series(msgspec.Struct, kw_only=True, frozen=True):
    """Durations over time: every point, or (``downsampled``) per time bucket min/avg/max."""

    downsampled: bool
    total: int
    bucket_ns: int | None
    points: list[Point]
    buckets: list[Bucket]


def _where(
    pipeline: str, key: str, since_ns: int, until_ns: int | None
) -> tuple[sql.Composable, list[Any]]:
    """The index's filter: one pipeline's step key started in ``[since_ns, until_ns)``."""
    text = f"pipeline = %s AND {PATH} = %s AND start_ns >= %s"
    params: list[Any] = [pipeline, key, since_ns]
    if until_ns is not None:
        text += " AND start_ns < %s"
        params.append(until_ns)
    return sql.SQL(text), params


_STATS = """
    SELECT count(*),
           count(*) FILTER (WHERE status = 'failed'),
           count(duration_ns),
           min(duration_ns),
           avg(duration_ns)::float8,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ns),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns),
           max(duration_ns),
           min(start_ns),
           max(start_ns)
    FROM steps WHERE {}
"""


async def step_stats(
    pool: AsyncConnectionPool[Any],
    pipeline: str,
    key: str,
    since_ns: int,
    until_ns: int | None = None,
    *,
    exact_below: int = EXACT_BELOW,
) -> StepStats:
    """Count, error rate and duration figures of ``key`` in ``pipeline`` over the range."""
    async with pool.connection() as conn:
        the_plan = await plan(conn, since_ns, until_ns)
        if the_plan.rolled:
            rolled = await _rolled_stats(conn, pipeline, key, the_plan)
            if rolled.count > exact_below:
                return rolled
        return await _exact_stats(conn, pipeline, key, since_ns, until_ns)


async def _exact_stats(
    conn: psycopg.AsyncConnection[Any],
    pipeline: str,
    key: str,
    since_ns: int,
    until_ns: int | None,
) -> StepStats:
    where, params = _where(pipeline, key, since_ns, until_ns)
    cursor = await conn.execute(sql.SQL(_STATS).format(where), params)
    row = await cursor.fetchone()
    assert row is not None  # an aggregate always answers one row
    count, failed = row[0], row[1]
    return StepStats(
        pipeline=pipeline,
        key=key,
        count=count,
        failed=failed,
        error_rate=failed / count if count else None,
        finished=row[2],
        min_ns=row[3],
        avg_ns=row[4],
        p50_ns=row[5],
        p95_ns=row[6],
        p99_ns=row[7],
        max_ns=row[8],
        first_start_ns=row[9],
        last_start_ns=row[10],
    )


#: Rollup rows (and ``rollup_source``'s) of one pipeline's step path.
_KEY = sql.SQL("pipeline = %s AND key = %s")
#: Step rows of one pipeline's step path (the index's expression).
_STEPS_KEY = sql.SQL(f"pipeline = %s AND {PATH} = %s")


async def _rolled_stats(
    conn: psycopg.AsyncConnection[Any], pipeline: str, key: str, the_plan: Plan
) -> StepStats:
    params: list[Any] = []
    rows = sources("step", _KEY, [pipeline, key], the_plan, params)
    query = sql.SQL("SELECT bucket, {} FROM ({}) r GROUP BY bucket").format(sql.SQL(MERGED), rows)
    merged = merge(await (await conn.execute(query, params)).fetchall())
    count = merged.count
    return StepStats(
        pipeline=pipeline,
        key=key,
        count=count,
        failed=merged.failed,
        error_rate=merged.failed / count if count else None,
        finished=merged.finished,
        min_ns=merged.min_ns,
        avg_ns=merged.dur_sum / merged.finished if merged.dur_sum is not None else None,
        p50_ns=merged.percentile(0.5),
        p95_ns=merged.percentile(0.95),
        p99_ns=merged.percentile(0.99),
        max_ns=merged.max_ns,
        first_start_ns=merged.first_ns if count else None,
        last_start_ns=merged.last_ns if count else None,
    )


async def duration_series(
    pool: AsyncConnectionPool[Any],
    stats: StepStats,
    since_ns: int,
    until_ns: int | None = None,
    max_points: int = MAX_POINTS,
    *,
    exact_below: int = EXACT_BELOW,
) -> Series:
    """The durations of ``stats``'s step over the range: every finished step when there are at
    most ``max_points``, else ``BUCKETS`` equal time buckets over the steps' span with each
    bucket's min, avg and max (the max keeps every spike visible)."""
    where, params = _where(stats.pipeline, stats.key, since_ns, until_ns)
    where = sql.SQL("{} AND duration_ns IS NOT NULL").format(where)
    lo, hi = stats.first_start_ns, stats.last_start_ns
    if stats.finished <= max_points or lo is None or hi is None:
        query = sql.SQL(
            "SELECT start_ns, duration_ns, status, run_id FROM steps WHERE {} "
            "ORDER BY start_ns, run_id"
        ).format(where)
        async with pool.connection() as conn:
            cursor = await conn.execute(query, params)
            rows = await cursor.fetchall()
        points = [Point(start_ns=r[0], duration_ns=r[1], status=r[2], run_id=r[3]) for r in rows]
        return Series(
            downsampled=False, total=len(points), bucket_ns=None, points=points, buckets=[]
        )
    async with pool.connection() as conn:
        the_plan = await plan(conn, since_ns, until_ns)
        if the_plan.rolled and stats.count > exact_below:
            return await _rolled_series(conn, stats, the_plan)
    width = max(1, -(-(hi - lo + 1) // BUCKETS))  # ceiling: BUCKETS buckets cover [lo, hi]
    query = sql.SQL(
        """
        SELECT (start_ns - %s) / %s AS bucket,
               count(*),
               count(*) FILTER (WHERE status = 'failed'),
               min(duration_ns),
               avg(duration_ns)::float8,
               max(duration_ns)
        FROM steps WHERE {}
        GROUP BY bucket ORDER BY bucket
        """
    ).format(where)
    async with pool.connection() as conn:
        cursor = await conn.execute(query, [lo, width, *params])
        rows = await cursor.fetchall()
    buckets = [
        Bucket(
            start_ns=lo + r[0] * width,
            count=r[1],
            failed=r[2],
            min_ns=r[3],
            avg_ns=r[4],
            max_ns=r[5],
        )
        for r in rows
    ]
    total = sum(b.count for b in buckets)
    return Series(downsampled=True, total=total, bucket_ns=width, points=[], buckets=buckets)


async def _rolled_series(
    conn: psycopg.AsyncConnection[Any], stats: StepStats, the_plan: Plan
) -> Series:
    """Hour by hour: the rollups' hour totals (bucket -2), raw rows by hour at the edges."""
    params: list[Any] = [stats.pipeline, stats.key, the_plan.clean_hours()]
    raw = raw_condition(the_plan.raw, params)
    params += [stats.pipeline, stats.key]
    query = sql.SQL(
        f"SELECT start_ns, n, failed, dur_min, dur_sum::float8 / n, dur_max FROM rollups "  # noqa: S608 - constants only
        f"WHERE kind = 'step' AND {{key}} AND span_ns = {HOUR_NS} AND bucket = -2 "
        "AND start_ns = ANY(%s) "
        "UNION ALL SELECT pipelens_hour(start_ns), count(*), "
        "count(*) FILTER (WHERE status = 'failed'), min(duration_ns), avg(duration_ns)::float8, "
        "max(duration_ns) FROM steps WHERE {raw} AND {steps_key} AND duration_ns IS NOT NULL "
        "GROUP BY 1 ORDER BY 1"
    ).format(key=_KEY, steps_key=_STEPS_KEY, raw=raw)
    rows = await (await conn.execute(query, params)).fetchall()
    buckets = [
        Bucket(start_ns=r[0], count=r[1], failed=r[2], min_ns=r[3], avg_ns=r[4], max_ns=r[5])
        for r in rows
    ]
    total = sum(b.count for b in buckets)
    return Series(downsampled=True, total=total, bucket_ns=HOUR_NS, points=[], buckets=buckets)


_RUN_FIELDS = sql.SQL("run_id, status, start_ns, duration_ns, error_type, error_message, key")


async def slowest_and_failed(
    pool: AsyncConnectionPool[Any],
    pipeline: str,
    key: str,
    since_ns: int,
    until_ns: int | None = None,
    limit: int = TOP_RUNS,
    *,
    exact_below: int = EXACT_BELOW,
) -> tuple[list[StepRun], list[StepRun]]:
    """The runs where the step took longest, and the latest runs where it failed."""
    async with pool.connection() as conn:
        the_plan = await plan(conn, since_ns, until_ns)
        where, params = _where(pipeline, key, since_ns, until_ns)
        slow_where, slow_params = where, params
        failed_where, failed_params = where, params
        hours = await _slow_hours(conn, pipeline, key, the_plan, limit) if the_plan.rolled else None
        if hours is not None and hours[0] > exact_below:
            slow_where, slow_params = _in_hours(pipeline, key, hours[1], the_plan.raw)
            failed_where, failed_params = await _failed_hours(conn, pipeline, key, the_plan, limit)
        # Pick the runs from the covering index alone, then read just those rows' error columns.
        top = sql.SQL(
            "SELECT {fields} FROM ("  # noqa: S608 - constants only
            "SELECT run_id FROM steps WHERE {where} AND {cond} ORDER BY {order} LIMIT %s"
            f") t JOIN steps USING (run_id) WHERE {PATH} = %s ORDER BY {{order}}"
        )
        slowest = top.format(
            fields=_RUN_FIELDS,
            where=slow_where,
            cond=sql.SQL("duration_ns IS NOT NULL"),
            order=sql.SQL("duration_ns DESC, run_id"),
        )
        failed = top.format(
            fields=_RUN_FIELDS,
            where=failed_where,
            cond=sql.SQL("status = 'failed'"),
            order=sql.SQL("start_ns DESC, run_id DESC"),
        )
        slow_rows = await (await conn.execute(slowest, [*slow_params, limit, key])).fetchall()
        failed_rows = await (await conn.execute(failed, [*failed_params, limit, key])).fetchall()
    return [_step_run(r) for r in slow_rows], [_step_run(r) for r in failed_rows]


def _in_hours(
    pipeline: str, key: str, hours: list[int], raw: list[tuple[int, int | None]]
) -> tuple[sql.Composable, list[Any]]:
    """The key's steps started in one of ``hours`` or of the ``raw`` intervals."""
    params: list[Any] = [pipeline, key]
    ranges = [*((h, h + HOUR_NS) for h in sorted(hours)), *raw]
    return sql.SQL("{} AND {}").format(_STEPS_KEY, raw_condition(ranges, params)), params


async def _slow_hours(
    conn: psycopg.AsyncConnection[Any], pipeline: str, key: str, the_plan: Plan, limit: int
) -> tuple[int, list[int]]:
    """How many finished steps the rolled-up hours hold, and the ``limit`` hours with the
    slowest: the slowest ``limit`` steps lie in those or in the raw intervals, since any other
    hour's slowest is slower than none of them."""
    query = (
        f"SELECT start_ns, dur_max, n FROM rollups WHERE kind = 'step' AND pipeline = %s "  # noqa: S608 - constants only
        f"AND key = %s AND span_ns = {HOUR_NS} AND bucket = -2 AND start_ns = ANY(%s)"
    )
    rows = await (await conn.execute(query, [pipeline, key, the_plan.clean_hours()])).fetchall()
    slowest = sorted(rows, key=lambda r: -r[1])[:limit]
    return sum(r[2] for r in rows), [r[0] for r in slowest]


async def _failed_hours(
    conn: psycopg.AsyncConnection[Any],
    pipeline: str,
    key: str,
    the_plan: Plan,
    limit: int,
) -> tuple[sql.Composable, list[Any]]:
    """The latest ``limit`` failures lie in the raw intervals or in the latest rolled-up hours
    that hold ``limit`` failures between them."""
    query = (
        "SELECT start_ns, sum(failed) FROM rollups WHERE kind = 'step' AND pipeline = %s "  # noqa: S608 - constants only
        f"AND key = %s AND span_ns = {HOUR_NS} AND bucket >= -1 AND failed > 0 "
        "AND start_ns = ANY(%s) GROUP BY start_ns ORDER BY start_ns DESC"
    )
    cursor = await conn.execute(query, [pipeline, key, the_plan.clean_hours()])
    hours: list[int] = []
    seen = 0
    async for hour, failed in cursor:
        if seen >= limit:
            break
        hours.append(hour)
        seen += failed
    return _in_hours(pipeline, key, hours, the_plan.raw)


def _step_run(row: tuple[Any, ...]) -> StepRun:
    return StepRun(
        run_id=row[0],
        status=row[1],
        start_ns=row[2],
        duration_ns=row[3],
        error_type=row[4],
        error_message=row[5],
        step_key=row[6],
    )


async def step_path(pool: AsyncConnectionPool[Any], run_id: str, key: str) -> str:
    """What the step statistics of a run's step ``key`` go by: its name path (an OTLP span's,
    migration 0016), else the key itself."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT path FROM steps WHERE run_id = %s AND key = %s", [run_id, key]
        )
        row = await cursor.fetchone()
    return key if row is None or row[0] is None else str(row[0])


async def pipeline_of_run(pool: AsyncConnectionPool[Any], run_id: str) -> str | None:
    """The pipeline a run belongs to, ``None`` when the run is unknown or not yet named."""
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT pipeline FROM runs WHERE run_id = %s", [run_id])
        row = await cursor.fetchone()
    return None if row is None else row[0]


async def step_keys(
    pool: AsyncConnectionPool[Any], pipeline: str, since_ns: int
) -> list[tuple[str, int]]:
    """The step keys of ``pipeline`` started since ``since_ns``, with how many times each ran."""
    query = (
        f"SELECT {PATH}, count(*) FROM steps WHERE pipeline = %s AND start_ns >= %s "  # noqa: S608 - constants only
        "GROUP BY 1 ORDER BY 1"
    )
    async with pool.connection() as conn:
        cursor = await conn.execute(query, [pipeline, since_ns])
        return [(r[0], r[1]) for r in await cursor.fetchall()]

"""Step statistics: the figures, durations over time, the slowest and the failed runs of one step
key of one pipeline over a time range.

Every query filters on ``pipeline = … AND key = … AND start_ns >= …`` so that it reads the
``steps (pipeline, key, start_ns)`` index (migration 0001) and only that step's rows. Durations
are of finished steps (a running step has none yet); the count and the error rate include every
step started in the range.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

#: Above this many durations in the range, the time series is downsampled.
MAX_POINTS = 2000
#: How many time buckets a downsampled series has (about one per two pixels of the chart).
BUCKETS = 500
#: How many slowest and failed runs are listed.
TOP_RUNS = 10


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
    text = "pipeline = %s AND key = %s AND start_ns >= %s"
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
) -> StepStats:
    """Count, error rate and duration figures of ``key`` in ``pipeline`` over the range."""
    where, params = _where(pipeline, key, since_ns, until_ns)
    async with pool.connection() as conn:
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


async def duration_series(
    pool: AsyncConnectionPool[Any],
    stats: StepStats,
    since_ns: int,
    until_ns: int | None = None,
    max_points: int = MAX_POINTS,
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


_RUN_FIELDS = sql.SQL("run_id, status, start_ns, duration_ns, error_type, error_message")


async def slowest_and_failed(
    pool: AsyncConnectionPool[Any],
    pipeline: str,
    key: str,
    since_ns: int,
    until_ns: int | None = None,
    limit: int = TOP_RUNS,
) -> tuple[list[StepRun], list[StepRun]]:
    """The runs where the step took longest, and the latest runs where it failed."""
    where, params = _where(pipeline, key, since_ns, until_ns)
    # Pick the runs from the covering index alone, then read just those rows' error columns.
    top = sql.SQL(
        "SELECT {fields} FROM ("
        "SELECT run_id FROM steps WHERE {where} AND {cond} ORDER BY {order} LIMIT %s"
        ") t JOIN steps USING (run_id) WHERE key = %s ORDER BY {order}"
    )
    slowest = top.format(
        fields=_RUN_FIELDS,
        where=where,
        cond=sql.SQL("duration_ns IS NOT NULL"),
        order=sql.SQL("duration_ns DESC, run_id"),
    )
    failed = top.format(
        fields=_RUN_FIELDS,
        where=where,
        cond=sql.SQL("status = 'failed'"),
        order=sql.SQL("start_ns DESC, run_id DESC"),
    )
    async with pool.connection() as conn:
        slow_rows = await (await conn.execute(slowest, [*params, limit, key])).fetchall()
        failed_rows = await (await conn.execute(failed, [*params, limit, key])).fetchall()
    return [_step_run(r) for r in slow_rows], [_step_run(r) for r in failed_rows]


def _step_run(row: tuple[Any, ...]) -> StepRun:
    return StepRun(
        run_id=row[0],
        status=row[1],
        start_ns=row[2],
        duration_ns=row[3],
        error_type=row[4],
        error_message=row[5],
    )


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
        "SELECT key, count(*) FROM steps WHERE pipeline = %s AND start_ns >= %s "
        "GROUP BY key ORDER BY key"
    )
    async with pool.connection() as conn:
        cursor = await conn.execute(query, [pipeline, since_ns])
        return [(r[0], r[1]) for r in await cursor.fetchall()]

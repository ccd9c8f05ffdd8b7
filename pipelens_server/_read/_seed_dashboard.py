"""The seed dashboard's JSON reads (``/api/dashboard/...``), in the seed's shapes, from our tables.

The seed's dashboard answers in epoch milliseconds and camelCase: a run is ``RunMeta``
(``runId``, ``pipeline``, ``startTime``, ``endTime``, ``duration``, ``status``), a step its
``StepMeta`` (``key``, ``name``, ``time: {startTs, endTs, timeUsageMs}``, ``records``, ``result``,
``error``). Our rows keep nanoseconds and a typed error; here a step's error is its message (its
type when it has none), its records ``{}`` when none were stored, and its result is left out when
it has none, as the seed's ``JSON.stringify`` leaves out ``undefined``. Steps are looked up by
*name* (the seed's time series are per name), where our stats pages go by key.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from pipelens_server._errors import RunNotFoundError

_NS_PER_MS = 1_000_000


class TimeOut(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """A step's ``time``, epoch milliseconds."""

    start_ts: int | None
    end_ts: int | None
    time_usage_ms: int | None


class SeedStep(msgspec.Struct, kw_only=True, frozen=True):
    """The seed's ``StepMeta`` as its dashboard answers it."""

    key: str
    name: str
    time: TimeOut
    records: msgspec.Raw
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    error: str | None


class SeedRun(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """The seed's ``RunMeta``."""

    run_id: str
    pipeline: str | None
    start_time: int | None
    end_time: int | None
    duration: int | None
    status: str


class Pagination(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """The seed's page counters (pages count from 1)."""

    page: int
    page_size: int
    total_items: int
    total_pages: int


class RunPage(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/dashboard/pipelines/:p/runs``."""

    items: list[SeedRun]
    pagination: Pagination


class RunData(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/dashboard/runs/:id``."""

    meta: SeedRun
    steps: list[SeedStep]


class SeriesPoint(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """One finished step of the time series: ``value`` and ``duration`` are its milliseconds."""

    timestamp: int
    run_id: str
    value: int
    step_key: str
    step_meta: SeedStep
    duration: int


class SeriesStats(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """Figures over the whole range (not only the page); durations of zero are left out of the
    max, min and average, as the seed does."""

    max_duration: float
    min_duration: float
    avg_duration: float
    total_executions: int
    error_count: int
    success_count: int


class TimeSeries(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """``GET /api/dashboard/pipelines/:p/steps/:s/time-series``."""

    time_series: list[SeriesPoint]
    stats: SeriesStats
    pagination: Pagination


def _ms(ns: int | None) -> int | None:
    return None if ns is None else round(ns / _NS_PER_MS)


_RUN_COLUMNS = "run_id, pipeline, start_ns, end_ns, duration_ns, status"
_STEP_COLUMNS = (
    "key, name, start_ns, end_ns, duration_ns, COALESCE(records::text, '{}'), result::text, "
    "COALESCE(error_message, error_type)"
)


def _run(row: tuple[Any, ...]) -> SeedRun:
    run_id, pipeline, start_ns, end_ns, duration_ns, status = row
    return SeedRun(
        run_id=run_id,
        pipeline=pipeline,
        start_time=_ms(start_ns),
        end_time=_ms(end_ns),
        duration=_ms(duration_ns),
        status=status,
    )


def _step(row: tuple[Any, ...]) -> SeedStep:
    key, name, start_ns, end_ns, duration_ns, records, result, error = row
    return SeedStep(
        key=key,
        name=name,
        time=TimeOut(start_ts=_ms(start_ns), end_ts=_ms(end_ns), time_usage_ms=_ms(duration_ns)),
        records=msgspec.Raw(records.encode()),
        result=msgspec.UNSET if result is None else msgspec.Raw(result.encode()),
        error=error,
    )


def _pagination(page: int, page_size: int, total: int) -> Pagination:
    return Pagination(
        page=page, page_size=page_size, total_items=total, total_pages=-(-total // page_size)
    )


async def pipeline_names(pool: AsyncConnectionPool[Any]) -> list[str]:
    """The pipelines that have runs, the most recently started first."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT pipeline FROM runs WHERE pipeline IS NOT NULL GROUP BY pipeline "
            "ORDER BY max(start_ns) DESC NULLS LAST, pipeline"
        )
        return [name for (name,) in await cursor.fetchall()]


_RUNS_WHERE = (
    "WHERE pipeline = %(pipeline)s "
    "AND (%(status)s::text IS NULL OR status = %(status)s) "
    "AND (%(since)s::bigint IS NULL OR start_ns >= %(since)s) "
    "AND (%(until)s::bigint IS NULL OR start_ns <= %(until)s) "
    "AND (%(run_id)s::text IS NULL OR run_id = %(run_id)s)"
)
_RUNS_PAGE = (
    f"SELECT {_RUN_COLUMNS} FROM runs {_RUNS_WHERE} "  # noqa: S608 - constants only
    "ORDER BY start_ns DESC NULLS LAST, run_id DESC LIMIT %(limit)s OFFSET %(offset)s"
)
_RUNS_COUNT = f"SELECT count(*) FROM runs {_RUNS_WHERE}"  # noqa: S608 - constants only


async def run_page(
    pool: AsyncConnectionPool[Any],
    pipeline: str,
    *,
    page: int,
    page_size: int,
    status: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    run_id: str | None = None,
) -> RunPage:
    """One page of ``pipeline``'s runs, newest first; the filters are the seed's (its start at
    or after ``since_ns`` and at or before ``until_ns``, a status, one run id)."""
    params = {
        "pipeline": pipeline,
        "status": status,
        "since": since_ns,
        "until": until_ns,
        "run_id": run_id,
        "limit": page_size,
        "offset": (page - 1) * page_size,
    }
    async with pool.connection() as conn:
        rows = await (await conn.execute(_RUNS_PAGE, params)).fetchall()
        count = await (await conn.execute(_RUNS_COUNT, params)).fetchone()
    total = 0 if count is None else int(count[0])
    return RunPage(items=[_run(r) for r in rows], pagination=_pagination(page, page_size, total))


async def run_steps(pool: AsyncConnectionPool[Any], run_id: str) -> list[SeedStep]:
    """Every step of ``run_id`` in start order (none for an unknown run, as the seed)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = %s "  # noqa: S608 - constants only
            "ORDER BY start_ns NULLS LAST, key",
            [run_id],
        )
        return [_step(row) for row in await cursor.fetchall()]


async def run_meta(pool: AsyncConnectionPool[Any], run_id: str) -> SeedRun:
    """A run's ``RunMeta``; ``RunNotFoundError`` when unknown."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = %s",  # noqa: S608 - constants only
            [run_id],
        )
        row = await cursor.fetchone()
    if row is None:
        raise RunNotFoundError(run_id)
    return _run(row)


async def run_data(pool: AsyncConnectionPool[Any], run_id: str) -> RunData:
    """A run and its steps; ``RunNotFoundError`` when unknown."""
    return RunData(meta=await run_meta(pool, run_id), steps=await run_steps(pool, run_id))


async def step_names(pool: AsyncConnectionPool[Any], pipeline: str) -> list[str]:
    """The names of ``pipeline``'s steps that have ended, sorted."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT DISTINCT name FROM steps WHERE pipeline = %s AND end_ns IS NOT NULL "
            "ORDER BY name",
            [pipeline],
        )
        return [name for (name,) in await cursor.fetchall()]


_SERIES_WHERE = (
    "WHERE pipeline = %(pipeline)s AND name = %(name)s AND end_ns IS NOT NULL "
    "AND duration_ns IS NOT NULL AND end_ns BETWEEN %(since)s AND %(until)s"
)
_SERIES_STATS = (
    "SELECT max(duration_ns) FILTER (WHERE duration_ns >= %(positive)s), "  # noqa: S608 - constants
    "min(duration_ns) FILTER (WHERE duration_ns >= %(positive)s), "
    "avg(duration_ns) FILTER (WHERE duration_ns >= %(positive)s), count(*), "
    "count(*) FILTER (WHERE COALESCE(error_message, error_type, '') <> '') "
    f"FROM steps {_SERIES_WHERE}"
)
_SERIES_PAGE = (
    f"SELECT run_id, {_STEP_COLUMNS} FROM steps {_SERIES_WHERE} "  # noqa: S608 - constants only
    "ORDER BY end_ns, run_id, key LIMIT %(limit)s OFFSET %(offset)s"
)


async def step_series(
    pool: AsyncConnectionPool[Any],
    pipeline: str,
    name: str,
    *,
    since_ns: int,
    until_ns: int,
    page: int,
    page_size: int,
) -> TimeSeries:
    """The finished steps called ``name`` in ``pipeline`` that ended in the range (inclusive),
    oldest first, one page of them, with figures over all of them (durations in ms)."""
    params = {
        "pipeline": pipeline,
        "name": name,
        "since": since_ns,
        "until": until_ns,
        "positive": _NS_PER_MS // 2,  # rounds to 1 ms or more: the seed skips zero durations
        "limit": page_size,
        "offset": (page - 1) * page_size,
    }
    async with pool.connection() as conn:
        stats_row = await (await conn.execute(_SERIES_STATS, params)).fetchone()
        rows = await (await conn.execute(_SERIES_PAGE, params)).fetchall()
    high, low, mean, total, errors = stats_row or (None, None, None, 0, 0)
    points = []
    for run_id, *step_row in rows:
        step = _step(tuple(step_row))
        value = step.time.time_usage_ms or 0
        end = step.time.end_ts or 0
        points.append(
            SeriesPoint(
                timestamp=end,
                run_id=run_id,
                value=value,
                step_key=step.key,
                step_meta=step,
                duration=value,
            )
        )
    stats = SeriesStats(
        max_duration=0 if high is None else round(high / _NS_PER_MS),
        min_duration=0 if low is None else round(low / _NS_PER_MS),
        avg_duration=0 if mean is None else float(mean) / _NS_PER_MS,
        total_executions=int(total),
        error_count=int(errors),
        success_count=int(total) - int(errors),
    )
    return TimeSeries(
        time_series=points, stats=stats, pagination=_pagination(page, page_size, int(total))
    )


async def latest_step_key(pool: AsyncConnectionPool[Any], pipeline: str, name: str) -> str | None:
    """The key of ``pipeline``'s most recent step called ``name`` (the stats pages go by key)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT key FROM steps WHERE pipeline = %s AND name = %s "
            "ORDER BY start_ns DESC NULLS LAST LIMIT 1",
            [pipeline, name],
        )
        row = await cursor.fetchone()
    return None if row is None else str(row[0])

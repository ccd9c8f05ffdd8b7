"""The read API's dashboard figures: pipelines over a range, a step key's statistics and its
durations over time, a pipeline's scores beside its runs' duration and LLM cost (the same
queries as the pages).

The time range is a preset (``range``, the pages' presets) or explicit bounds in nanoseconds
since the epoch (``since_ns``, ``until_ns``), which override it.
"""

from __future__ import annotations

import time
from typing import Annotated

import msgspec
from litestar import get
from litestar.exceptions import ValidationException
from litestar.params import FromPath, QueryParameter

from pipelens_server._db._lifespan import PoolDep
from pipelens_server._read._runs import pipeline_summaries
from pipelens_server._read._scores import ScoreSummary, pipeline_scores, run_figures
from pipelens_server._read._stats import (
    MAX_POINTS,
    Series,
    StepRun,
    StepStats,
    duration_series,
    slowest_and_failed,
    step_stats,
)
from pipelens_server._timerange import RangePreset, preset_start

RangeQuery = Annotated[
    RangePreset, QueryParameter(name="range", description="time range preset (default 24h)")
]
#: A time in ns that PostgreSQL's bigint holds: past it, range arithmetic turns into numeric.
_MAX_NS = 2**63 - 1
SinceQuery = Annotated[
    int | None,
    QueryParameter(
        ge=0, le=_MAX_NS, description="start of the range, ns since the epoch (overrides range)"
    ),
]
UntilQuery = Annotated[
    int | None,
    QueryParameter(
        ge=0, le=_MAX_NS, description="end of the range (exclusive), ns since the epoch"
    ),
]


class PipelineOut(msgspec.Struct, kw_only=True, frozen=True):
    """One pipeline over the range; durations (ns) are of finished runs."""

    name: str
    runs: int
    failed: int
    running: int
    #: Running runs whose client stopped reporting (no event or heartbeat in --abandon-after).
    abandoned: int
    error_rate: float | None
    p50_ns: float | None
    p95_ns: float | None
    last_run_id: str | None
    last_start_ns: int | None


class PipelineList(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/v1/pipelines``: every pipeline, most recently run first."""

    since_ns: int
    pipelines: list[PipelineOut]


class StepStatsOut(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/v1/pipelines/{name}/steps/{key}/stats``."""

    since_ns: int
    until_ns: int | None
    stats: StepStats
    slowest: list[StepRun]
    failed: list[StepRun]


class SeriesOut(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/v1/pipelines/{name}/steps/{key}/timeseries``: every point, or when there are
    more than ``max_points``, per time bucket (``bucket_ns`` wide) min/avg/max."""

    since_ns: int
    until_ns: int | None
    series: Series


def _bounds(range_: str, since_ns: int | None, until_ns: int | None) -> tuple[int, int | None]:
    since = preset_start(range_, time.time_ns()) if since_ns is None else since_ns
    if until_ns is not None and until_ns <= since:
        raise ValidationException(
            detail=f"until_ns={until_ns} is not after the range's start {since}: swap them"
        )
    return since, until_ns


@get("/v1/pipelines")
async def get_pipelines(pool: PoolDep, range_: RangeQuery = "24h") -> PipelineList:
    """Every pipeline with its runs, failures, p50/p95 run duration and last run over a range."""
    since, _ = _bounds(range_, None, None)
    summaries = await pipeline_summaries(pool, since)
    return PipelineList(
        since_ns=since,
        pipelines=[
            PipelineOut(
                name=p.name,
                runs=p.runs,
                failed=p.failed,
                running=p.running,
                abandoned=p.abandoned,
                error_rate=p.error_rate,
                p50_ns=p.p50_ns,
                p95_ns=p.p95_ns,
                last_run_id=p.last_run_id,
                last_start_ns=p.last_start_ns,
            )
            for p in summaries
        ],
    )


@get("/v1/pipelines/{name:str}/steps/{key:str}/stats")
async def get_step_stats(
    pool: PoolDep,
    name: FromPath[str],
    key: FromPath[str],
    range_: RangeQuery = "24h",
    since_ns: SinceQuery = None,
    until_ns: UntilQuery = None,
) -> StepStatsOut:
    """A step key's count, error rate, min/avg/p50/p95/p99/max duration, and its slowest and
    latest failed runs over the range."""
    since, until = _bounds(range_, since_ns, until_ns)
    stats = await step_stats(pool, name, key, since, until)
    slowest, failed = await slowest_and_failed(pool, name, key, since, until)
    return StepStatsOut(since_ns=since, until_ns=until, stats=stats, slowest=slowest, failed=failed)


@get("/v1/pipelines/{name:str}/steps/{key:str}/timeseries")
async def get_step_timeseries(
    pool: PoolDep,
    name: FromPath[str],
    key: FromPath[str],
    range_: RangeQuery = "24h",
    since_ns: SinceQuery = None,
    until_ns: UntilQuery = None,
    max_points: Annotated[
        int, QueryParameter(ge=1, le=100_000, description="downsample above this many points")
    ] = MAX_POINTS,
) -> SeriesOut:
    """A step key's durations over the range: every finished step in start order, or per time
    bucket min/avg/max when there are more than ``max_points``."""
    since, until = _bounds(range_, since_ns, until_ns)
    stats = await step_stats(pool, name, key, since, until)
    series = await duration_series(pool, stats, since, until, max_points)
    return SeriesOut(since_ns=since, until_ns=until, series=series)


class PipelineScoresOut(msgspec.Struct, kw_only=True, frozen=True):
    """A pipeline's runs started in the range: each score's count, mean, distribution and mean
    over time (``scores``, the most given first), and beside them (``runs``) the runs' mean
    duration in ms and LLM cost per run in USD over the same time buckets."""

    since_ns: int
    until_ns: int
    runs: list[ScoreSummary]
    scores: list[ScoreSummary]


@get("/v1/pipelines/{name:str}/scores")
async def get_pipeline_scores(
    pool: PoolDep,
    name: FromPath[str],
    range_: RangeQuery = "24h",
    since_ns: SinceQuery = None,
    until_ns: UntilQuery = None,
) -> PipelineScoresOut:
    """The figures the runs page draws under "Scores in this range": each score's distribution
    and mean over time, the runs' mean duration and LLM cost per run over the same buckets."""
    since, until = _bounds(range_, since_ns, until_ns)
    end = time.time_ns() if until is None else until
    return PipelineScoresOut(
        since_ns=since,
        until_ns=end,
        runs=await run_figures(pool, name, since, end),
        scores=await pipeline_scores(pool, name, since, end),
    )


route_handlers = [get_pipelines, get_step_stats, get_step_timeseries, get_pipeline_scores]

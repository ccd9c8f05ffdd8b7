"""The seed dashboard's JSON API (``/api/dashboard/...``): its routes, query parameters and answer
shapes, reading our tables (``_read._seed_dashboard``), for scripts and tools written against the
seed's dashboard.

Where we differ, on purpose: an unknown run is a 404 (the seed answers 500); a bad page, page size
or date is a 400 naming the parameter (the seed reads ``NaN``); the chart route answers the URL of
our own step stats page instead of a quickchart.io image; settings hold the retention only (see
:func:`save_settings`).
"""

from __future__ import annotations

import time
from datetime import UTC
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
from litestar import Request, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import ValidationException
from litestar.params import FromPath, QueryParameter

from pipelens_server._db._lifespan import PoolDep, SettingsDep
from pipelens_server._db._retention import (
    InvalidRetentionError,
    parse_days,
    pipeline_retentions,
    set_pipeline_days,
)
from pipelens_server._errors import InvalidBatchError
from pipelens_server._ingest._import import import_file
from pipelens_server._ingest._store import LimiterDep
from pipelens_server._read._seed_dashboard import (
    RunData,
    RunPage,
    SeedStep,
    TimeSeries,
    latest_step_key,
    pipeline_names,
    run_data,
    run_meta,
    run_page,
    run_steps,
    step_names,
    step_series,
)
from pipelens_server._timerange import parse_moment

_DEFAULT_SPAN_NS = 30 * 86_400 * 1_000_000_000  # the seed's time series: the last 30 days
#: The settings keys the seed's dashboard and its purge read for the retention.
_RETENTION_KEYS = ("retentionDays", "dataRetentionDays")
_settings_decoder = msgspec.json.Decoder(dict[str, Any])

#: The bound keeps the page's offset (page times pageSize) a number PostgreSQL can take.
PageQuery = Annotated[
    int, QueryParameter(ge=1, le=1_000_000, description="page number, from 1 to 1,000,000")
]
PageSizeQuery = Annotated[
    int, QueryParameter(name="pageSize", ge=1, le=1000, description="items per page")
]


def _date_ns(text: str | None, name: str) -> int | None:
    """The seed's ``startDate``/``endDate`` (ISO 8601, UTC unless it names its offset) in ns."""
    if not text:
        return None
    try:  # one rule for times across the API: it also refuses what bigint cannot hold
        return parse_moment(name, text, UTC)
    except ValueError as error:
        raise ValidationException(detail=str(error)) from None


@get("/dashboard/pipelines")
async def list_pipelines(pool: PoolDep) -> list[str]:
    """The names of the pipelines that have runs, most recently run first."""
    return await pipeline_names(pool)


@get("/dashboard/pipelines/{pipeline:str}/runs")
async def list_runs(
    pool: PoolDep,
    pipeline: FromPath[str],
    page: PageQuery = 1,
    page_size: PageSizeQuery = 10,
    status: Annotated[str | None, QueryParameter(description="only runs of this status")] = None,
    start_date: Annotated[
        str | None, QueryParameter(name="startDate", description="runs started at or after")
    ] = None,
    end_date: Annotated[
        str | None, QueryParameter(name="endDate", description="runs started at or before")
    ] = None,
    run_id: Annotated[str | None, QueryParameter(name="runId", description="this run only")] = None,
) -> RunPage:
    """A page of the pipeline's runs, newest first (the seed's ``{items, pagination}``)."""
    return await run_page(
        pool,
        pipeline,
        page=page,
        page_size=page_size,
        status=status or None,
        since_ns=_date_ns(start_date, "startDate"),
        until_ns=_date_ns(end_date, "endDate"),
        run_id=run_id or None,
    )


@get("/dashboard/runs/{run_id:str}")
async def get_run_data(pool: PoolDep, run_id: FromPath[str]) -> RunData:
    """A run's ``meta`` and its ``steps``; 404 when unknown."""
    return await run_data(pool, run_id)


@get("/dashboard/runs/{run_id:str}/steps")
async def list_run_steps(pool: PoolDep, run_id: FromPath[str]) -> list[SeedStep]:
    """A run's steps in start order (empty for an unknown run, as the seed)."""
    return await run_steps(pool, run_id)


@get("/dashboard/pipelines/{pipeline:str}/steps")
async def list_pipeline_steps(pool: PoolDep, pipeline: FromPath[str]) -> list[str]:
    """The names of the pipeline's steps that have ended."""
    return await step_names(pool, pipeline)


def _range(start_date: str | None, end_date: str | None) -> tuple[int, int]:
    until = _date_ns(end_date, "endDate")
    until = time.time_ns() if until is None else until
    since = _date_ns(start_date, "startDate")
    return (until - _DEFAULT_SPAN_NS if since is None else since), until


@get("/dashboard/pipelines/{pipeline:str}/steps/{step:str}/time-series")
async def get_step_series(
    pool: PoolDep,
    pipeline: FromPath[str],
    step: FromPath[str],
    page: PageQuery = 1,
    page_size: PageSizeQuery = 10,
    start_date: Annotated[
        str | None, QueryParameter(name="startDate", description="steps ended at or after")
    ] = None,
    end_date: Annotated[
        str | None, QueryParameter(name="endDate", description="steps ended at or before")
    ] = None,
) -> TimeSeries:
    """The durations of the steps of that name that ended in the range (default: the last 30
    days), oldest first, with their figures."""
    since, until = _range(start_date, end_date)
    return await step_series(
        pool, pipeline, step, since_ns=since, until_ns=until, page=page, page_size=page_size
    )


class ChartUrl(msgspec.Struct, kw_only=True, frozen=True):
    """Where the chart is: our step stats page (the seed answers a quickchart.io image URL)."""

    url: str


@get("/dashboard/pipelines/{pipeline:str}/steps/{step:str}/time-series/chart")
async def get_step_chart(
    request: Request[Any, Any, Any], pool: PoolDep, pipeline: FromPath[str], step: FromPath[str]
) -> ChartUrl:
    """The URL of the duration chart of the step of that name: the stats page of its key (of
    the most recent such step), or the pipeline's step list when no step has that name."""
    base = f"{str(request.base_url).rstrip('/')}/pipelines/{quote(pipeline, safe='')}/steps"
    key = await latest_step_key(pool, pipeline, step)
    return ChartUrl(url=base if key is None else f"{base}/{quote(key, safe='')}?range=30d")


@get("/dashboard/pipelines/{pipeline:str}/settings")
async def get_settings(pool: PoolDep, pipeline: FromPath[str]) -> dict[str, int]:
    """``{"retentionDays": n}`` when the pipeline has its own retention, else ``{}`` (it keeps
    the server-wide default), as the seed answers ``{}`` for a pipeline with no settings."""
    own = [r for r in await pipeline_retentions(pool) if r.pipeline == pipeline and r.overridden]
    return {"retentionDays": own[0].days} if own else {}


class Saved(msgspec.Struct, kw_only=True, frozen=True):
    """The seed's answer to a save."""

    success: bool = True


@post("/dashboard/pipelines/{pipeline:str}/settings", status_code=200)
async def save_settings(
    request: Request[Any, Any, Any], pool: PoolDep, pipeline: FromPath[str]
) -> Saved:
    """Save the pipeline's retention: ``retentionDays`` (what the seed's settings page sends) or
    ``dataRetentionDays`` (what its purge reads), a whole number of days; ``{}`` puts it back on
    the default, as the seed deletes the settings then. Any other key is a 400 naming it, and
    nothing is saved: its settings are the retention only (the seed's free-form settings, such
    as its runs table's ``presetColumns``, have no place here and would be lost silently)."""
    try:
        data = _settings_decoder.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise InvalidBatchError(f"the settings must be a JSON object: {exc}") from None
    unknown = sorted(set(data) - set(_RETENTION_KEYS))
    if unknown:
        raise InvalidRetentionError(
            f"unsupported setting {unknown[0]!r}: this server keeps only the retention "
            f"({' or '.join(_RETENTION_KEYS)}); nothing was saved"
        )
    given = [(k, data[k]) for k in _RETENTION_KEYS if k in data]
    if not given:
        await set_pipeline_days(pool, pipeline, None)
        return Saved()
    for name, value in given:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRetentionError(f"{name} must be a whole number of days, got {value!r}")
    if len({value for _, value in given}) > 1:
        raise InvalidRetentionError("retentionDays and dataRetentionDays differ: send one")
    name, value = given[0]
    await set_pipeline_days(pool, pipeline, parse_days(str(value), f"{pipeline!r} ({name})"))
    return Saved()


class ImportData(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """What an imported file held (its first run's id and times, epoch ms)."""

    run_id: str
    start_time: int | None
    end_time: int | None
    step_count: int


class ImportResult(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """One file's outcome, in the seed's shape."""

    file_name: str
    status: str
    message: str
    data: ImportData | msgspec.UnsetType = msgspec.UNSET


class ImportAnswer(msgspec.Struct, kw_only=True, frozen=True):
    """``POST /api/dashboard/import``."""

    success: bool
    results: list[ImportResult]


@post("/dashboard/import", status_code=200)
async def import_files(
    request: Request[Any, Any, Any], pool: PoolDep, limiter: LimiterDep, settings: SettingsDep
) -> ImportAnswer:
    """Import the uploaded ``files`` (multipart, as the seed's form sends them) with our file
    import: the seed's ``PipelineMeta`` and step arrays, and our own event files; one result per
    file, each file stored whole or not at all."""
    form = await request.form()
    uploads = [f for f in form.getall("files", []) if isinstance(f, UploadFile) and f.filename]
    if not uploads:
        raise ValidationException(
            detail="no files uploaded: send them in the multipart field 'files'"
        )
    results = []
    for upload in uploads:
        content = await upload.read()
        await upload.close()
        done = await import_file(
            pool, limiter, upload.filename, content, timeout=settings.pool_timeout_s
        )
        if done.error is not None:
            results.append(ImportResult(file_name=done.name, status="error", message=done.error))
            continue
        run = await run_meta(pool, done.run_ids[0]) if done.run_ids else None
        data: ImportData | msgspec.UnsetType = msgspec.UNSET
        if run is not None:
            data = ImportData(
                run_id=run.run_id,
                start_time=run.start_time,
                end_time=run.end_time,
                step_count=done.steps,
            )
        message = f"Imported {done.name} ({done.kind}): {done.runs} run(s), {done.steps} step(s)"
        results.append(
            ImportResult(file_name=done.name, status="success", message=message, data=data)
        )
    return ImportAnswer(success=True, results=results)


route_handlers = [
    list_pipelines,
    list_runs,
    get_run_data,
    list_run_steps,
    list_pipeline_steps,
    get_step_series,
    get_step_chart,
    get_settings,
    save_settings,
    import_files,
]

"""The JSON API: ``POST /api/v1/events``, the run list and detail, and the health probes."""

from __future__ import annotations

import time
from datetime import UTC
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.exceptions import ValidationException
from litestar.params import FromPath, FromQuery, QueryParameter

from pipelens_server._db._lifespan import PoolDep, SettingsDep
from pipelens_server._errors import DatabaseUnavailableError
from pipelens_server._ingest._decode import batch_rows, check_media_type, decode_batch
from pipelens_server._ingest._rows import Rows
from pipelens_server._ingest._store import LimiterDep, ingest
from pipelens_server._read._run import get_run
from pipelens_server._read._runs import list_runs
from pipelens_server._read._search import RunSearch, parse_cursor
from pipelens_server._read._shapes import RunDetail, RunList, StatusFilter
from pipelens_server._timerange import RangePreset, custom_range, preset_start


class Accepted(msgspec.Struct, kw_only=True, frozen=True):
    """The answer to an ingest request: how many events, runs and steps it carried."""

    accepted: int
    runs: int
    steps: int


class Health(msgspec.Struct, kw_only=True, frozen=True):
    """The answer of the health probes."""

    status: str


@post("/v1/events", status_code=202)
async def post_events(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    limiter: LimiterDep,
    settings: SettingsDep,
) -> Accepted:
    """Store a batch of wire events; answer only once it is committed."""
    content_type = request.headers.get("content-type")
    check_media_type(content_type)  # 415 before reading the body

    def to_rows(body: bytes) -> tuple[Rows, Accepted]:
        batch = decode_batch(body, content_type)
        rows = batch_rows(batch)
        return rows, Accepted(
            accepted=len(batch.events), runs=len(rows.runs), steps=len(rows.steps)
        )

    return await ingest(request, pool, limiter, settings, to_rows)


@get("/v1/runs")
async def get_runs(
    pool: PoolDep,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
    pipeline: FromQuery[str | None] = None,
    status: FromQuery[StatusFilter | None] = None,
    range_: Annotated[
        RangePreset | None,
        QueryParameter(name="range", description="only runs started in this time range"),
    ] = None,
    from_: Annotated[
        str | None,
        QueryParameter(
            name="from",
            description="only runs started at or after this ISO 8601 time (no offset: UTC)",
        ),
    ] = None,
    to: Annotated[
        str | None,
        QueryParameter(description="only runs started before this ISO 8601 time (no offset: UTC)"),
    ] = None,
    q: Annotated[str, QueryParameter(description="only runs whose id starts with this")] = "",
    step: Annotated[str, QueryParameter(description="only runs having a step of this name")] = "",
    record_key: Annotated[
        str, QueryParameter(description="with record_value: the record key it is under")
    ] = "",
    record_value: Annotated[
        str, QueryParameter(description="only runs having a step that recorded this value")
    ] = "",
    after: Annotated[
        str | None, QueryParameter(description="the page after this one: a previous 'next'")
    ] = None,
) -> RunList:
    """Runs, newest first; ``pipeline``, ``status``, ``range``, ``from``/``to``, ``q`` (run id
    prefix), ``step`` (step name) and ``record_value`` (under ``record_key`` when given) filter
    them, ``after`` (the previous answer's ``next``) pages through them."""
    try:
        cursor = parse_cursor(after) if after else None
        since = None if range_ is None else preset_start(range_, time.time_ns())
        start, until = custom_range(from_ or "", to or "", UTC)
    except ValueError as exc:
        raise ValidationException(detail=str(exc)) from exc
    if start is not None:
        since = start if since is None else max(since, start)
    return await list_runs(
        pool,
        limit=limit,
        pipeline=pipeline,
        status=status,
        since_ns=since,
        until_ns=until,
        run_id_prefix=q.strip(),
        after=cursor,
        search=RunSearch(
            step_name=step.strip(),
            record_key=record_key.strip(),
            record_value=record_value.strip(),
        ),
    )


@get("/v1/runs/{run_id:str}")
async def get_run_detail(pool: PoolDep, run_id: FromPath[str]) -> RunDetail:
    """One run with all its steps; 404 when unknown."""
    return await get_run(pool, run_id)


@get("/healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@get("/readyz")
async def readyz(pool: PoolDep, settings: SettingsDep) -> Health:
    """The database answers."""
    try:
        async with pool.connection(timeout=settings.pool_timeout_s) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:
        raise DatabaseUnavailableError(f"the database does not answer: {exc}") from exc
    return Health(status="ready")

"""The JSON API's runs: ``GET /api/v1/runs`` (filtered, keyset pages) and one run with its steps."""

from __future__ import annotations

import time
from datetime import UTC
from typing import Annotated

from litestar import Response, get
from litestar.exceptions import ValidationException
from litestar.params import FromPath, FromQuery, QueryParameter

from pipelens_server._db._lifespan import PoolDep
from pipelens_server._read._export import ExportFormat, download
from pipelens_server._read._run import get_run
from pipelens_server._read._runs import list_runs
from pipelens_server._read._search import parse_cursor, search_from_query
from pipelens_server._read._shapes import RunDetail, RunList, StatusFilter
from pipelens_server._timerange import RangePreset, custom_range, preset_start


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
    q: Annotated[
        str,
        QueryParameter(
            description="only runs whose id starts with this, or with a step whose name, error "
            "message or a string record value holds it (case-insensitive)"
        ),
    ] = "",
    step: Annotated[str, QueryParameter(description="only runs having a step of this name")] = "",
    record_key: Annotated[
        str, QueryParameter(description="with record_value: the record key it is under")
    ] = "",
    record_value: Annotated[
        str, QueryParameter(description="only runs having a step that recorded this value")
    ] = "",
    tag: Annotated[str, QueryParameter(description="only runs with this tag")] = "",
    user_id: Annotated[str, QueryParameter(description="only runs of this user")] = "",
    session_id: Annotated[str, QueryParameter(description="only runs of this session")] = "",
    metadata: Annotated[
        str, QueryParameter(description="only runs whose metadata has key=value (or the key)")
    ] = "",
    score: Annotated[
        str,
        QueryParameter(
            description="only runs with this score: name, name:value, or name>=number "
            "(also >, <=, <)"
        ),
    ] = "",
    after: Annotated[
        str | None, QueryParameter(description="the page after this one: a previous 'next'")
    ] = None,
) -> RunList:
    """Runs, newest first; ``pipeline``, ``status``, ``range``, ``from``/``to``, ``q`` (run id
    prefix, or a substring of a step's name, error message or record value), ``step`` (step
    name), ``record_value`` (under ``record_key`` when given), ``tag``, ``user_id``,
    ``session_id``, ``metadata`` (``key=value``) and ``score`` (``name``, ``name:value``,
    ``name>=number``) filter them, ``after`` (the previous answer's ``next``) pages through
    them."""
    try:
        cursor = parse_cursor(after) if after else None
        since = None if range_ is None else preset_start(range_, time.time_ns())
        start, until = custom_range(from_ or "", to or "", UTC)
        search = search_from_query(
            q=q,
            step=step,
            record_key=record_key,
            record_value=record_value,
            tag=tag,
            user_id=user_id,
            session_id=session_id,
            metadata=metadata,
            score=score,
        )
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
        after=cursor,
        search=search,
    )


@get("/v1/runs/{run_id:str}")
async def get_run_detail(pool: PoolDep, run_id: FromPath[str]) -> RunDetail:
    """One run with all its steps; 404 when unknown."""
    return await get_run(pool, run_id)


@get("/v1/runs/{run_id:str}/export")
async def get_run_export(
    pool: PoolDep,
    run_id: FromPath[str],
    format_: Annotated[
        ExportFormat,
        QueryParameter(
            name="format",
            description="events: our event file (JSON lines); seed: the seed's PipelineMeta",
        ),
    ] = "events",
) -> Response[bytes]:
    """One run as a file the import reads back: our event file or the seed's JSON; 404 when
    unknown."""
    file = await download(pool, run_id, format_)
    return Response(file.body, media_type=file.media_type, headers=file.headers)


route_handlers = [get_runs, get_run_detail, get_run_export]

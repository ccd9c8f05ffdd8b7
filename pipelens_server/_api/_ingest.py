"""The JSON API's ingest: ``POST /api/v1/events`` (our wire batches) and the seed's endpoints
(``/api/ingestion/...``, shapes and status codes of ``shared/seed/PROTOCOL.md``).

Each reads its body into partial rows (``_ingest``) and stores them in one transaction before it
answers.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import structlog
from litestar import Request, post

from pipelens.events import Batch
from pipelens_server._db._lifespan import PoolDep, SettingsDep
from pipelens_server._ingest import _seed
from pipelens_server._ingest._decode import (
    batch_rows,
    check_json_media_type,
    check_media_type,
    decode_batch,
)
from pipelens_server._ingest._rows import Rows
from pipelens_server._ingest._store import LimiterDep, ingest

log = structlog.get_logger("pipelens_server.ingest")


class RefusedRun(msgspec.Struct, kw_only=True, frozen=True):
    """A run of the batch that was not stored, and why (its id names another run)."""

    run_id: str
    events: int
    detail: str


class Accepted(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The answer to an ingest request: how many events, runs and steps it carried, and the runs
    refused (not stored, the rest of the batch was) because their id names another run."""

    accepted: int
    runs: int
    steps: int
    refused: list[RefusedRun] = []


class Success(msgspec.Struct, kw_only=True, frozen=True):
    """The seed's success answer."""

    success: bool = True
    run_id: str | msgspec.UnsetType = msgspec.field(default=msgspec.UNSET, name="runId")


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

    decoded: list[tuple[Batch, Rows]] = []

    def to_rows(body: bytes) -> tuple[Rows, None]:
        batch = decode_batch(body, content_type)
        rows = batch_rows(batch, partial=True)
        decoded.append((batch, rows))
        return rows, None

    await ingest(request, pool, limiter, settings, to_rows)
    [(batch, rows)] = decoded
    if not rows.refused:
        return Accepted(accepted=len(batch.events), runs=len(rows.runs), steps=len(rows.steps))
    # Known only once stored (the refusal may come from the stored runs): counted now.
    counts = Counter(e.run_id for e in batch.events if e.run_id in rows.refused)
    refused = [
        RefusedRun(run_id=r, events=counts[r], detail=str(e)) for r, e in rows.refused.items()
    ]
    log.warning("ingest refused runs", run_ids=sorted(rows.refused))
    return Accepted(
        accepted=len(batch.events) - sum(counts.values()),
        runs=len(rows.runs) - len(refused),
        steps=sum(1 for key in rows.steps if key[0] not in rows.refused),
        refused=refused,
    )


@post("/ingestion/pipeline/start", status_code=201)
async def pipeline_start(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    limiter: LimiterDep,
    settings: SettingsDep,
) -> Success:
    """A seed run started (its steps, if any, come along)."""
    check_json_media_type(request.headers.get("content-type"))  # 415 first
    run_id = await ingest(request, pool, limiter, settings, _seed.pipeline_start_rows)
    return Success(run_id=run_id)


@post("/ingestion/pipeline/finish", status_code=200)
async def pipeline_finish(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    limiter: LimiterDep,
    settings: SettingsDep,
) -> Success:
    """A seed run ended: the run and every step in ``pipelineMeta.steps`` are upserted."""
    check_json_media_type(request.headers.get("content-type"))  # 415 first
    await ingest(request, pool, limiter, settings, _seed.pipeline_finish_rows)
    return Success()


@post("/ingestion/step/start", status_code=201, name="seed_step_start")
async def step_start(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    limiter: LimiterDep,
    settings: SettingsDep,
) -> Success:
    """A seed step started. Its body may already carry the step's end (the seed's clients build
    it late): it still counts as a start, and a late start never reopens a finished step."""
    check_json_media_type(request.headers.get("content-type"))  # 415 first
    await ingest(request, pool, limiter, settings, _seed.step_start_rows)
    return Success()


@post("/ingestion/step/finish", status_code=200, name="seed_step_finish")
async def step_finish(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    limiter: LimiterDep,
    settings: SettingsDep,
) -> Success:
    """A seed step ended, with its records, result or error."""
    check_json_media_type(request.headers.get("content-type"))  # 415 first
    await ingest(request, pool, limiter, settings, _seed.step_finish_rows)
    return Success()


@post("/ingestion/batch", status_code=200)
async def batch(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    limiter: LimiterDep,
    settings: SettingsDep,
) -> Success:
    """The seed's batched mode: an array of pipeline and step operations, stored together."""
    check_json_media_type(request.headers.get("content-type"))  # 415 first
    await ingest(request, pool, limiter, settings, _seed.batch_rows)
    return Success()


route_handlers = [post_events, pipeline_start, pipeline_finish, step_start, step_finish, batch]

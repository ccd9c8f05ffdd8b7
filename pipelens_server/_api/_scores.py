"""The JSON API's scores: ``POST /api/v1/runs/{run_id}/scores`` gives a run a score (idempotent
by the body's ``score_id``), ``GET`` lists them. Behind the ``/api`` token guard; a browser's
cross-site post is refused by the app's middleware, as every write is."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath

from pipelens_server._db._lifespan import PoolDep, SettingsDep
from pipelens_server._ingest._decode import check_json_media_type
from pipelens_server._ingest._rows import Rows
from pipelens_server._ingest._scores import decode_score, score_rows
from pipelens_server._ingest._store import LimiterDep, ingest
from pipelens_server._read._scores import ensure_run, run_scores, score_by_id
from pipelens_server._read._shapes import ScoreOut


# The body is read by the ingest path (its slot and size limit); ``_openapi`` declares it.
@post("/v1/runs/{run_id:str}/scores", status_code=201)
async def post_score(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    limiter: LimiterDep,
    settings: SettingsDep,
    run_id: FromPath[str],
) -> ScoreOut:
    """Give run ``run_id`` a score: ``{"name": "relevance", "value": 0.9}`` (a number, a boolean
    or a category), with an optional ``comment``, ``step_key`` and ``score_id``. The same
    ``score_id`` again stores nothing new and answers the score stored first. 404 when the
    run is unknown."""
    check_json_media_type(request.headers.get("content-type"))  # 415 first
    await ensure_run(pool, run_id)
    given: list[str] = []

    def to_rows(body: bytes) -> tuple[Rows, None]:
        rows, event = score_rows(run_id, decode_score(body), "api")
        given.append(event.score_id)
        return rows, None

    await ingest(request, pool, limiter, settings, to_rows)
    stored = await score_by_id(pool, run_id, given[0])
    assert stored is not None  # committed above, and scores are never changed
    return stored


@get("/v1/runs/{run_id:str}/scores")
async def get_scores(pool: PoolDep, run_id: FromPath[str]) -> list[ScoreOut]:
    """The scores of run ``run_id`` in the order they were given; 404 when the run is unknown."""
    await ensure_run(pool, run_id)
    return await run_scores(pool, run_id)


route_handlers = [post_score, get_scores]

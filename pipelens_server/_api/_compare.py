"""The JSON API's comparison of two runs: ``GET /api/v1/compare?a=RUN&b=RUN``."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import QueryParameter

from pipelens_server._db._lifespan import PoolDep
from pipelens_server._read._compare import DEFAULT_LIMIT, Comparison, View, compare_runs


@get("/v1/compare")
async def get_compare(
    pool: PoolDep,
    a: Annotated[str, QueryParameter(description="the baseline run's id")],
    b: Annotated[str, QueryParameter(description="the run compared with it")],
    view: Annotated[
        View, QueryParameter(description="changed: the changed steps and their ancestors; all")
    ] = "changed",
    expand: Annotated[
        list[str] | None, QueryParameter(description="keys whose subtrees the all view opens")
    ] = None,
    collapse: Annotated[
        list[str] | None, QueryParameter(description="keys whose subtrees are left out")
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=5000)] = DEFAULT_LIMIT,
) -> Comparison:
    """Run ``b`` against run ``a``: steps aligned by key in tree order (each with both durations,
    statuses and the delta), the counts, the run time, token and cost deltas; 404 names an
    unknown run."""
    return await compare_runs(
        pool, a, b, view=view, expand=expand or (), collapse=collapse or (), limit=limit
    )


route_handlers = [get_compare]

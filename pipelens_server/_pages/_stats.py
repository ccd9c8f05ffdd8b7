"""The step stats pages: one step key of a pipeline over a time range, and the list of its keys.

Statistics are per step key (``answer.retrieve``), not per name: two steps called ``retrieve`` in
different places of the tree are different keys. The range presets are the runs page's; the
range lives in the query string like every filter.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect

from pipelens_server._db._lifespan import PoolDep
from pipelens_server._pages import _pictures, _stats_chart
from pipelens_server._pages._runs import RangeParam
from pipelens_server._pages._templating import (
    base_context,
    page_url,
    pipeline_path,
    render,
    run_path,
    zone_of,
)
from pipelens_server._read._pictures import duration_histogram
from pipelens_server._read._stats import (
    MAX_POINTS,
    duration_series,
    pipeline_of_run,
    slowest_and_failed,
    step_keys,
    step_path,
    step_stats,
)
from pipelens_server._timerange import RANGES, preset_start


def stats_url(pipeline: str, key: str, range_: str | None = None) -> str:
    """The stats page of ``key`` in ``pipeline``."""
    path = f"{pipeline_path(pipeline, 'steps')}/{quote(key, safe='')}"
    return page_url(path, range=range_)


@get("/pipelines/{name:str}/steps/{key:str}")
async def step_stats_page(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    name: FromPath[str],
    key: FromPath[str],
    range_: RangeParam = "24h",
) -> Response[str]:
    """A step key's count, error rate, duration percentiles, durations over time, and its
    slowest and failed runs over a range."""
    now_ns = time.time_ns()
    since = preset_start(range_, now_ns)
    stats = await step_stats(pool, name, key, since)
    series = await duration_series(pool, stats, since)
    slowest, failed = await slowest_and_failed(pool, name, key, since)
    histogram = None
    if stats.min_ns is not None and stats.max_ns is not None:
        counts = await duration_histogram(pool, name, key, since, stats.min_ns, stats.max_ns)
        histogram = _pictures.histogram(
            counts, stats.min_ns, stats.max_ns, stats.p50_ns, stats.p95_ns
        )
    # Regressions: this range against the one just before it, as long (``all`` has none).
    changes: list[_pictures.Change] = []
    if since and stats.count:
        before = await step_stats(pool, name, key, since - (now_ns - since), since)
        changes = [
            _pictures.Change(label="p50", now_ns=stats.p50_ns, before_ns=before.p50_ns),
            _pictures.Change(label="p95", now_ns=stats.p95_ns, before_ns=before.p95_ns),
        ]
    path = stats_url(name, key)
    context = base_context(request, f"Statistics of {key} · {name}") | {
        "pipeline": name,
        "key": key,
        "stats": stats,
        "series": series,
        "max_points": MAX_POINTS,
        "chart": _stats_chart.layout(series, zone_of(request)),
        "histogram": histogram,
        "changes": changes,
        "slowest": slowest,
        "failed": failed,
        "range": range_,
        "ranges": RANGES,
        "path": path,
        "runs_url": page_url(pipeline_path(name, "runs"), range=range_),
        "keys_url": page_url(pipeline_path(name, "steps"), range=range_),
        "run_url": run_path,
    }
    return render(request, "step_stats.html", context)


@get("/pipelines/{name:str}/steps")
async def step_keys_page(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    name: FromPath[str],
    range_: RangeParam = "24h",
) -> Response[str]:
    """The step keys of a pipeline in a range, each linked to its stats."""
    keys = await step_keys(pool, name, preset_start(range_, time.time_ns()))
    context = base_context(request, f"Steps of {name}") | {
        "pipeline": name,
        "keys": keys,
        "range": range_,
        "ranges": RANGES,
        "path": pipeline_path(name, "steps"),
        "stats_url": lambda key: stats_url(name, key, range_),
        "runs_url": page_url(pipeline_path(name, "runs"), range=range_),
    }
    return render(request, "step_keys.html", context)


@get("/runs/{run_id:str}/step-stats", status_code=302)
async def run_step_stats(pool: PoolDep, run_id: FromPath[str], key: FromQuery[str]) -> Redirect:
    """From a step of a run (the run page's step panel) to the stats of its key (its name path,
    for an OTLP span)."""
    pipeline = await pipeline_of_run(pool, run_id)
    if pipeline is None:
        raise HTTPException(
            status_code=404,
            detail=f"run {run_id!r} is unknown or has no pipeline yet: its step has no stats",
        )
    return Redirect(stats_url(pipeline, await step_path(pool, run_id, key), "7d"))


route_handlers = [step_stats_page, step_keys_page, run_step_stats]

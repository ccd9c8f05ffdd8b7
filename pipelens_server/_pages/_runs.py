"""The dashboard's main pages: overview, runs of a pipeline, a run with its Gantt chart, a step.

Every page is a real URL whose filters live in the query string; htmx asks the same URLs for a
fragment (see ``_templating.render``). Live parts poll every 2 s (a run of thousands of steps
every 5 s); a poll of a run that has ended is answered with 286, which tells htmx to stop.
"""

from __future__ import annotations

import time
from datetime import datetime, tzinfo
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import structlog
from litestar import Request, Response, get
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery, QueryParameter

from pipelens_server._db._lifespan import PoolDep, SettingsDep
from pipelens_server._pages import _gantt, _pictures, _score_chart
from pipelens_server._pages._llm_chart import Totals
from pipelens_server._pages._templating import (
    base_context,
    is_htmx,
    page_url,
    pipeline_path,
    render,
    run_path,
    short_id,
    zone_of,
)
from pipelens_server._read._compare import previous_run
from pipelens_server._read._export import ExportFormat, download
from pipelens_server._read._llm import SECOND, CallView, run_llm_totals, step_llm, usage_rows
from pipelens_server._read._pictures import first_start, run_points, time_split
from pipelens_server._read._run import run_tree, step_detail
from pipelens_server._read._runs import overview_figures, runs_page, session_runs
from pipelens_server._read._scores import (
    pipeline_scores,
    run_figures,
    run_scores,
    scores_of_runs,
)
from pipelens_server._read._search import (
    RunCursor,
    RunSearch,
    cursor_text,
    parse_cursor,
    search_from_query,
)
from pipelens_server._read._shapes import RunRow, StepDetail
from pipelens_server._timerange import RANGES, RangePreset, custom_range, preset_start

log = structlog.get_logger("pipelens_server.pages")

StatusChoice = Literal["", "running", "abandoned", "completed", "failed", "cancelled"]

STATUSES = ["running", "abandoned", "completed", "failed", "cancelled"]
PAGE_SIZE = 50
#: htmx's "stop polling" answer.
STOP_POLLING = 286
#: Seconds between two polls of a running run's chart; of one with more than LARGE_RUN_STEPS.
POLL_S = 2
LARGE_RUN_POLL_S = 5
LARGE_RUN_STEPS = 2000
#: Seconds between two polls of the overview (its figures scan the whole range).
OVERVIEW_POLL_S = 5

RangeParam = Annotated[RangePreset, QueryParameter(name="range", description="time range preset")]
#: The runs page's ranges: the presets, or ``custom`` between its ``from`` and ``to``.
RunsRange = Literal["5m", "15m", "1h", "6h", "24h", "7d", "30d", "all", "custom"]


def _input_time(ns: int | None, text: str, zone: tzinfo) -> str:
    """What a ``datetime-local`` input shows for a bound: the time in ``zone``, else as typed."""
    if ns is None:
        return text
    moment = datetime.fromtimestamp(ns / 1e9, zone)
    return f"{moment:%Y-%m-%dT%H:%M}" + (f":{moment:%S}" if moment.second else "")


@get("/")
async def overview(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    settings: SettingsDep,
    range_: RangeParam = "24h",
) -> Response[str]:
    """Every pipeline with its runs, error rate, p50/p95 duration and last run over a range,
    sparklines of its runs (failures in red) and p95 over the range, and the range's totals;
    live (the ``overview_live`` block polls)."""
    now_ns = time.time_ns()
    since = preset_start(range_, now_ns)
    lo = since or await first_start(pool) or now_ns
    pipelines, grid = await overview_figures(pool, since, lo, now_ns + 1, _pictures.SPARK_BARS)
    sparks = _pictures.sparklines(grid, now_ns + 1, zone_of(request)) if pipelines else {}
    llm = Totals()
    for row in await usage_rows(pool, since, now_ns + 1, 86400 * SECOND) if pipelines else []:
        llm.add(row, row.priced())
    context = base_context(request, "Pipelines") | {
        "pipelines": pipelines,
        "sparks": sparks,
        "total_runs": sum(p.runs for p in pipelines),
        "total_failed": sum(p.failed for p in pipelines),
        "llm": llm,
        "poll_s": OVERVIEW_POLL_S,
        "self_url": page_url("/", range=range_),
        "range": range_,
        "ranges": RANGES,
        "server_url": str(request.base_url).rstrip("/"),
        "needs_token": settings.token is not None,
        "runs_url": lambda name: page_url(pipeline_path(name, "runs"), range=range_),
        "run_url": run_path,
    }
    return render(request, "overview.html", context, fragments=("overview_live",))


@get("/pipelines/{name:str}/runs")
async def pipeline_runs(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    name: FromPath[str],
    range_: Annotated[
        RunsRange,
        QueryParameter(name="range", description="time range preset, or custom (from/to)"),
    ] = "24h",
    status: FromQuery[StatusChoice] = "",
    after: FromQuery[str | None] = None,
    q: FromQuery[str] = "",
    from_: Annotated[str, QueryParameter(name="from", description="custom range start")] = "",
    to: FromQuery[str] = "",
    step: FromQuery[str] = "",
    record_key: FromQuery[str] = "",
    record_value: FromQuery[str] = "",
    tag: FromQuery[str] = "",
    user_id: FromQuery[str] = "",
    session_id: FromQuery[str] = "",
    metadata: FromQuery[str] = "",
    score: FromQuery[str] = "",
) -> Response[str]:
    """A pipeline's runs, newest first, keyset pages, live. Filters: status, time range (a
    preset, or ``custom`` from/to in the browser's zone), search (run id prefix, or a substring
    of a step's name, error or record value), step name, a record's value (under
    ``record_key`` when given), tag, user, session, metadata (``key=value``) and score
    (``name``, ``name:value``, ``name>=number``). The page (not its polls) ends with the
    range's scores: each one's distribution and mean over time."""
    zone = zone_of(request)
    custom = range_ == "custom"
    error: str | None = None
    since: int | None = None
    until: int | None = None
    if custom:
        try:
            since, until = custom_range(from_, to, zone)
        except ValueError as exc:
            error = str(exc)
    else:
        since = preset_start(range_, time.time_ns())
    search = RunSearch()
    try:
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
        error = str(exc)
    path = pipeline_path(name, "runs")
    if is_htmx(request) and request.headers.get("hx-target") == "runs_timeline":
        # The timeline is asked apart (on load, on a filter's change, every 10 s), so the list
        # and its 2 s poll never wait for it.
        now_ns = time.time_ns()
        found = None
        if error is None:
            found = await run_points(
                pool,
                pipeline=name,
                since_ns=since or 0,
                until_ns=until,
                now_ns=now_ns,
                status=status or None,
                search=search,
            )
        chart = _pictures.timeline(found, since or None, until or now_ns, zone) if found else None
        context = base_context(request, f"Runs of {name}") | {
            "pipeline": name,
            "timeline": chart,
            "timeline_read": found is not None,
            "run_url": run_path,
        }
        return render(request, "runs.html", context, block="runs_timeline")
    try:
        cursor = parse_cursor(after) if after else None
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    runs: list[RunRow] = []
    next_cursor: RunCursor | None = None
    if error is None:
        runs, next_cursor = await runs_page(
            pool,
            pipeline=name,
            since_ns=since or 0,
            until_ns=until,
            status=status or None,
            after=cursor,
            limit=PAGE_SIZE,
            search=search,
        )
    # Every filter, in every link and poll of this view (from/to only with a custom range).
    filters: dict[str, str | None] = {
        "range": range_,
        "from": from_ if custom else None,
        "to": to if custom else None,
        "status": status,
        "q": q,
        "step": step,
        "record_key": record_key,
        "record_value": record_value,
        "tag": tag,
        "user_id": user_id,
        "session_id": session_id,
        "metadata": metadata,
        "score": score,
    }
    context = base_context(request, f"Runs of {name}") | {
        "pipeline": name,
        "runs": runs,
        "range": range_,
        "ranges": RANGES,
        "from_value": _input_time(since if custom else None, from_, zone),
        "to_value": _input_time(until if custom else None, to, zone),
        "status": status,
        "statuses": STATUSES,
        "path": path,
        "q": q,
        "step_name": step,
        "record_key": record_key,
        "record_value": record_value,
        "tag": tag,
        "user_id": user_id,
        "session_id": session_id,
        "metadata": metadata,
        "searching": search != RunSearch(),
        "error": error,
        "self_url": page_url(path, **filters, after=after),
        "newest_url": page_url(path, **filters) if after else None,
        "next_url": (
            page_url(path, **filters, after=cursor_text(*next_cursor)) if next_cursor else None
        ),
        "run_url": run_path,
        "llm_totals": await run_llm_totals(pool, [run.run_id for run in runs]),
        "score": score,
        "run_scores": await scores_of_runs(pool, [run.run_id for run in runs]),
        "score_charts": (
            await _score_charts(pool, name, since or 0, until, zone)
            if error is None and not is_htmx(request)
            else []
        ),
    }
    # A bad range is shown in the table (htmx swaps only a success) and, on a page, with 400.
    status_code = 400 if error is not None and not is_htmx(request) else 200
    return render(request, "runs.html", context, fragments=("runs_table",), status_code=status_code)


@get("/sessions/{session_id:str}")
async def session_page(
    request: Request[Any, Any, Any], pool: PoolDep, session_id: FromPath[str]
) -> Response[str]:
    """A session's runs (a conversation, across pipelines) in time order, oldest first."""
    runs = await session_runs(pool, session_id)
    context = base_context(request, f"Session {session_id}") | {
        "session_id": session_id,
        "runs": runs,
        "run_url": run_path,
        "pipeline_url": lambda name: pipeline_path(name, "runs"),
    }
    return render(request, "session.html", context)


@get("/runs/{run_id:str}")
async def run_page(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    run_id: FromPath[str],
    step: FromQuery[str | None] = None,
    expand: FromQuery[list[str] | None] = None,
    collapse: FromQuery[list[str] | None] = None,
    show_all: Annotated[list[str] | None, QueryParameter(name="all")] = None,
) -> Response[str]:
    """A run: Gantt chart, step tree and (with ``step``) a step's panel; live while running.

    htmx asks for one part: ``run_live`` (the polled chart and tree: 286 once the run ended) or
    ``step_panel`` (a step chosen, or the polled panel of a running step: 286 once it ended).
    ``expand`` and ``collapse`` name the steps whose subtrees the user opened or closed (a big
    run starts partly collapsed: see ``_gantt``); a toggle asks for ``run_live`` with one more.
    ``all`` names the steps whose children are all shown (past ``_gantt.CHILD_CAP``, a gap row
    stands for those in the middle).
    """
    path = run_path(run_id)
    target = request.headers.get("hx-target") if is_htmx(request) else None
    if target == "run_strip":
        # Asked apart on load: an aggregate over every step of the run, which the chart's
        # capped read never makes.
        totals = (await run_llm_totals(pool, [run_id])).get(run_id)
        context = base_context(request, f"Run {run_id}") | {
            "parts": _pictures.strip(await time_split(pool, run_id)),
            "llm_totals": totals,
        }
        return render(request, "run.html", context, block="run_strip")
    if target == "step_panel":
        detail = await step_detail(pool, run_id, step) if step else None
        context = base_context(request, f"Run {run_id}") | {
            "step": detail,
            "step_key": step,
            "path": path,
        }
        context["llm"] = await _llm_of(pool, detail)
        done = detail is None or detail.status != "running"
        return render(
            request,
            "run.html",
            context,
            block="step_panel",
            status_code=STOP_POLLING if done else 200,
        )
    opened, closed, whole = expand or [], collapse or [], show_all or []
    # Only the steps the page can show, with counts of the others (a run may have millions).
    run, tree = await run_tree(pool, run_id, cap=_gantt.CHILD_CAP, show_all=whole, reveal=step)
    # A poll redraws the chart and the tree only: the step panel keeps itself up to date.
    detail = await step_detail(pool, run_id, step) if step and target != "run_live" else None
    chart = _gantt.layout(
        run,
        tree.steps,
        time.time_ns(),
        expand=set(opened),
        collapse=set(closed),
        reveal=step,
        show_all=set(whole),
        tree=tree,
    )

    def toggle_url(bar: _gantt.Bar) -> str:
        """This view with ``bar``'s subtree closed if open, else opened; for a gap row, with
        all the children of its step."""
        if bar.gap:
            return _run_url(path, step, opened, closed, [*whole, bar.key])
        keep_open = [k for k in opened if k != bar.key] + ([] if bar.open else [bar.key])
        keep_closed = [k for k in closed if k != bar.key] + ([bar.key] if bar.open else [])
        return _run_url(path, step, keep_open, keep_closed, whole)

    # The tab says which run of which pipeline; the whole id is the page's heading.
    title = " · ".join(filter(None, (f"Run {short_id(run_id)}", run.pipeline)))
    context = base_context(request, title) | {
        "run": run,
        "chart": chart,
        "toggle_url": toggle_url,
        # A huge run's poll costs more (its counts are taken over every step): ask less often.
        "poll_s": POLL_S if chart.total <= LARGE_RUN_STEPS else LARGE_RUN_POLL_S,
        "path": path,
        "self_url": _run_url(path, step, opened, closed, whole),
        "step": detail,
        "llm": await _llm_of(pool, detail),
        "step_key": step,
        "pipeline_url": (pipeline_path(run.pipeline, "runs") if run.pipeline else None),
        "llm_totals": (await run_llm_totals(pool, [run_id])).get(run_id),
        # The "compare with…" form's default baseline (read once: a poll keeps the form).
        "previous_run": await previous_run(pool, run_id) if target != "run_live" else None,
        # The scores and their form, outside the polled part (a poll must not wipe a comment
        # being typed).
        "scores": await run_scores(pool, run_id) if target != "run_live" else [],
        "score_url": f"{path}/scores",
        "score_error": None,
        "score_given": {},
    }
    ended = target == "run_live" and run.status != "running"
    return render(
        request,
        "run.html",
        context,
        fragments=("run_live",),
        status_code=STOP_POLLING if ended else 200,
    )


async def _score_charts(
    pool: PoolDep, pipeline: str, since_ns: int, until_ns: int | None, zone: tzinfo
) -> list[_score_chart.ScoreChart]:
    """The charts of each score given to the pipeline's runs in the range (up to now)."""
    until = until_ns if until_ns is not None else time.time_ns()
    summaries = await pipeline_scores(pool, pipeline, since_ns, until)
    if not summaries:
        return []
    # The runs' mean duration and LLM cost first, over the same buckets: a score's fall beside
    # a slowdown or a cheaper model.
    summaries = [*await run_figures(pool, pipeline, since_ns, until), *summaries]
    return [_score_chart.layout(s, since_ns, until, zone) for s in summaries]


async def _llm_of(pool: PoolDep, detail: StepDetail | None) -> CallView | None:
    """The LLM call of the step in the panel, when it is one."""
    if detail is None or detail.kind != "llm":
        return None
    return await step_llm(pool, detail.run_id, detail.key)


def _run_url(
    path: str, step: str | None, expand: list[str], collapse: list[str], show_all: list[str]
) -> str:
    """The run page's URL showing ``step`` with these subtrees opened, closed and shown whole."""
    params = [("step", step)] if step else []
    params += [("expand", key) for key in expand] + [("collapse", key) for key in collapse]
    params += [("all", key) for key in show_all]
    return f"{path}?{urlencode(params)}" if params else path


@get("/runs/{run_id:str}/download")
async def run_download(
    pool: PoolDep,
    run_id: FromPath[str],
    format_: Annotated[ExportFormat, QueryParameter(name="format")] = "events",
) -> Response[bytes]:
    """The run page's download links (behind the login, like the page): the run as our event
    file or the seed's JSON, as ``GET /api/v1/runs/{id}/export`` answers it."""
    file = await download(pool, run_id, format_)
    return Response(file.body, media_type=file.media_type, headers=file.headers)


route_handlers = [overview, pipeline_runs, session_page, run_page, run_download]

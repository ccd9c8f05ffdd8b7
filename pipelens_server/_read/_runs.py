"""The run lists: every pipeline's figures, a page of one pipeline's runs (the runs page), and
the JSON API's run list.

Pages select only the columns they show: the runs page reads no captured values.
"""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens_server._read._llm import priced_runs
from pipelens_server._read._pictures import (
    RunBucket,
    RunBuckets,
    bucket_width,
    raw_buckets,
    rolled_buckets,
)
from pipelens_server._read._rollup import (
    EXACT_BELOW,
    SUMMED,
    Merged,
    Plan,
    combine,
    plan,
    sources,
)
from pipelens_server._read._scores import scores_of_runs
from pipelens_server._read._search import (
    RunCursor,
    RunSearch,
    cursor_text,
    like_escaped,
    rare_text_runs,
    search_conditions,
)
from pipelens_server._read._shapes import (
    RUN_OUT_COLUMNS,
    RUN_ROW_COLUMNS,
    RUN_ROW_FIELDS,
    PipelineSummary,
    RunList,
    RunRow,
    StatusFilter,
    run_out,
)

_OVERVIEW = sql.SQL(
    """
    SELECT p.name, s.runs, s.failed, s.running, s.p50, s.p95, last.run_id, last.start_ns,
           s.abandoned
    FROM pipelines p
    CROSS JOIN LATERAL (
        SELECT count(*) AS runs,
               count(*) FILTER (WHERE r.status = 'failed') AS failed,
               count(*) FILTER (WHERE r.status = 'running') AS running,
               count(*) FILTER (WHERE r.status = 'abandoned') AS abandoned,
               -- An abandoned run's duration is only how long it was heard of.
               percentile_cont(0.5) WITHIN GROUP (ORDER BY r.duration_ns)
                   FILTER (WHERE r.status <> 'abandoned') AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_ns)
                   FILTER (WHERE r.status <> 'abandoned') AS p95
        FROM runs r
        WHERE r.pipeline = p.name AND r.start_ns >= %(since)s
    ) s
    LEFT JOIN LATERAL (
        SELECT r.run_id, r.start_ns FROM runs r
        WHERE r.pipeline = p.name AND r.start_ns IS NOT NULL
        ORDER BY r.start_ns DESC, r.run_id DESC
        LIMIT 1
    ) last ON true
    ORDER BY last.start_ns DESC NULLS LAST, p.name
    """
)


_LAST_RUNS = sql.SQL(
    """
    SELECT p.name, last.run_id, last.start_ns FROM pipelines p
    LEFT JOIN LATERAL (
        SELECT r.run_id, r.start_ns FROM runs r
        WHERE r.pipeline = p.name AND r.start_ns IS NOT NULL
        ORDER BY r.start_ns DESC, r.run_id DESC
        LIMIT 1
    ) last ON true
    """
)


#: The overview of a range of few runs, exact, in one scan of its raw rows: each pipeline's
#: figures (``whole`` 1: the ``_OVERVIEW`` figures) and its sparklines' bars over
#: ``[lo, hi)`` (``_pictures.raw_buckets``' figures; rows outside have no bar). One scan
#: instead of two of the same rows, scattered over the heap.
_RAW_OVERVIEW = """
    SELECT pipeline, GROUPING(bar), bar, count(*),
           count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status = 'running'),
           count(*) FILTER (WHERE status = 'abandoned'),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ns)
               FILTER (WHERE status <> 'abandoned'),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns)
               FILTER (WHERE status <> 'abandoned'),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns)
               FILTER (WHERE status NOT IN ('abandoned', 'running'))
    FROM (
        SELECT pipeline, status, duration_ns,
               CASE WHEN start_ns >= %(lo)s AND start_ns < %(hi)s
                    THEN ((start_ns - %(lo)s) / %(width)s)::int END AS bar
        FROM runs WHERE pipeline IS NOT NULL AND start_ns >= %(since)s
    ) r
    GROUP BY GROUPING SETS ((pipeline), (pipeline, bar))
"""

#: How many runs started since a time, counted up to a limit (the start index, bounded).
_FEW_RUNS = "SELECT count(*) FROM (SELECT 1 FROM runs WHERE start_ns >= %s LIMIT %s) r"


async def pipeline_summaries(
    pool: AsyncConnectionPool[Any], since_ns: int, *, exact_below: int = EXACT_BELOW
) -> list[PipelineSummary]:
    """Every known pipeline, most recently run first, with its figures since ``since_ns``: from
    the rollups for the rolled-up hours of the range (``_rollup``; p50 and p95 then within half
    a bucket), raw rows for the rest; a range of at most ``exact_below`` runs all raw, by the
    same count as :func:`overview_figures` (the API and the page agree at the threshold)."""
    async with pool.connection() as conn:
        if await _few_runs(conn, since_ns, exact_below):
            return await _summaries(conn, since_ns, [], exact_below)
        the_plan = await plan(conn, since_ns, None)
        rows = await _rolled_summaries(conn, the_plan) if the_plan.rolled else []
        return await _summaries(conn, since_ns, rows, -1)


async def _few_runs(conn: psycopg.AsyncConnection[Any], since_ns: int, exact_below: int) -> bool:
    """Whether at most ``exact_below`` runs started since ``since_ns`` (a bounded count)."""
    cursor = await conn.execute(_FEW_RUNS, [since_ns, exact_below + 1])
    return (row := await cursor.fetchone()) is not None and row[0] <= exact_below


async def overview_figures(
    pool: AsyncConnectionPool[Any],
    since_ns: int,
    lo_ns: int,
    hi_ns: int,
    buckets: int,
    *,
    exact_below: int = EXACT_BELOW,
) -> tuple[list[PipelineSummary], RunBuckets]:
    """:func:`pipeline_summaries` and the sparklines' ``_pictures.raw_buckets`` over
    ``[lo_ns, hi_ns)`` (``lo_ns`` at or after ``since_ns``): one read of the rollups serves
    both where the range has them, and a range of at most ``exact_below`` runs is read raw
    (exact, and cheaper than the rollups' rows of its hours)."""
    async with pool.connection() as conn:
        if await _few_runs(conn, since_ns, exact_below):
            return await _raw_overview(conn, since_ns, lo_ns, hi_ns, buckets)
        the_plan = await plan(conn, since_ns, None)
        rolled = await rolled_buckets(conn, the_plan, lo_ns, hi_ns, buckets)
        if rolled is None:
            rows = await _rolled_summaries(conn, the_plan) if the_plan.rolled else []
            summaries = await _summaries(conn, since_ns, rows, exact_below)
            return summaries, await raw_buckets(conn, lo_ns, hi_ns, buckets)
        grid, by_pipeline = rolled
        rows = await _summary_rows(conn, _rolled_figures(by_pipeline))
        # Counted above as more than exact_below: no raw read again (a run or two fewer with a
        # pipeline, or started since the count, must not make it read both).
        return await _summaries(conn, since_ns, rows, -1), grid


async def _raw_overview(
    conn: psycopg.AsyncConnection[Any], since_ns: int, lo_ns: int, hi_ns: int, buckets: int
) -> tuple[list[PipelineSummary], RunBuckets]:
    """:func:`overview_figures` from raw rows, exact, in one scan (``_RAW_OVERVIEW``)."""
    width = bucket_width(lo_ns, hi_ns, buckets)
    params = {"since": since_ns, "lo": lo_ns, "hi": hi_ns, "width": width}
    found = await (await conn.execute(_RAW_OVERVIEW, params)).fetchall()
    figures: dict[str, tuple[Any, ...]] = {}
    bars = []
    for pipeline, whole, bar, runs, failed, running, abandoned, p50, p95, bar_p95 in found:
        if whole:
            figures[pipeline] = (runs, failed, running, p50, p95, abandoned)
        elif bar is not None:
            bars.append(
                RunBucket(pipeline=pipeline, index=bar, runs=runs, failed=failed, p95_ns=bar_p95)
            )
    bars.sort(key=lambda b: (b.pipeline, b.index))
    grid = RunBuckets(lo_ns=lo_ns, width_ns=width, count=buckets, rows=bars)
    return _as_summaries(await _summary_rows(conn, figures)), grid


async def _summaries(
    conn: psycopg.AsyncConnection[Any],
    since_ns: int,
    rows: list[tuple[Any, ...]],
    exact_below: int,
) -> list[PipelineSummary]:
    """``rows`` of ``_OVERVIEW`` as summaries; read raw again, exactly, when they count no more
    than ``exact_below`` runs."""
    if sum(row[1] for row in rows) <= exact_below:
        cursor = await conn.execute(_OVERVIEW, {"since": since_ns})
        rows = await cursor.fetchall()
    return _as_summaries(rows)


def _as_summaries(rows: list[tuple[Any, ...]]) -> list[PipelineSummary]:
    """Rows of ``_OVERVIEW`` as summaries."""
    return [
        PipelineSummary(
            name=row[0],
            runs=row[1],
            failed=row[2],
            running=row[3],
            p50_ns=row[4],
            p95_ns=row[5],
            last_run_id=row[6],
            last_start_ns=row[7],
            abandoned=row[8],
        )
        for row in rows
    ]


async def _rolled_summaries(
    conn: psycopg.AsyncConnection[Any], the_plan: Plan
) -> list[tuple[Any, ...]]:
    """The rows of ``_OVERVIEW``, summed from the rollups and the raw edges."""
    params: list[Any] = []
    runs = sources("run", sql.SQL("key = %s"), [""], the_plan, params)
    query = sql.SQL("SELECT pipeline, {} FROM ({}) r GROUP BY pipeline").format(
        sql.SQL(SUMMED), runs
    )
    rows = await (await conn.execute(query, params)).fetchall()
    return await _summary_rows(conn, _rolled_figures({row[0]: combine([row[1:]]) for row in rows}))


def _rolled_figures(by_pipeline: dict[str, Merged]) -> dict[str, tuple[Any, ...]]:
    """Each pipeline's figures for :func:`_summary_rows` from its sums of rollup rows."""
    return {
        name: (m.count, m.failed, m.running, m.percentile(0.5), m.percentile(0.95), m.abandoned)
        for name, m in by_pipeline.items()
    }


async def _summary_rows(
    conn: psycopg.AsyncConnection[Any], figures: dict[str, tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """The rows of ``_OVERVIEW`` from each pipeline's (runs, failed, running, p50, p95,
    abandoned), every known pipeline's (none for one without runs in the range)."""
    last = await (await conn.execute(_LAST_RUNS)).fetchall()
    rows = []
    for name, run_id, start_ns in last:
        runs, failed, running, p50, p95, abandoned = figures.get(name, (0, 0, 0, None, None, 0))
        rows.append((name, runs, failed, running, p50, p95, run_id, start_ns, abandoned))
    # As _OVERVIEW orders: most recently run first (never run last), then by name.
    rows.sort(key=lambda r: (r[7] is None, -(r[7] or 0), r[0]))
    return rows


async def runs_page(
    pool: AsyncConnectionPool[Any],
    *,
    pipeline: str,
    since_ns: int,
    status: str | None,
    after: RunCursor | None,
    limit: int,
    run_id_prefix: str = "",
    until_ns: int | None = None,
    search: RunSearch | None = None,
) -> tuple[list[RunRow], RunCursor | None]:
    """Up to ``limit`` runs of ``pipeline`` newest first, those after ``after`` (keyset
    pagination), started in [``since_ns``, ``until_ns``), whose id starts with ``run_id_prefix``
    and that match ``search``; and the cursor of the next page, ``None`` on the last one."""
    conditions: list[sql.Composable] = [sql.SQL("pipeline = %s"), sql.SQL("start_ns >= %s")]
    params: list[Any] = [pipeline, since_ns]
    if until_ns is not None:
        conditions.append(sql.SQL("start_ns < %s"))
        params.append(until_ns)
    if search is not None:
        search_conditions(search, conditions, params, await rare_text_runs(pool, search))
    if status is not None:
        conditions.append(sql.SQL("status = %s"))
        params.append(status)
    if run_id_prefix:
        conditions.append(sql.SQL("run_id LIKE %s"))
        params.append(like_escaped(run_id_prefix) + "%")
    if after is not None and after[0] is None:
        # Unknown starts sort first in this order (PostgreSQL's DESC is NULLS FIRST).
        conditions.append(sql.SQL("(start_ns IS NOT NULL OR run_id < %s)"))
        params.append(after[1])
    elif after is not None:
        conditions.append(sql.SQL("(start_ns, run_id) < (%s, %s)"))
        params.extend(after)
    query = sql.SQL(
        "SELECT {} FROM runs WHERE {} ORDER BY start_ns DESC, run_id DESC LIMIT %s"
    ).format(sql.SQL(RUN_ROW_COLUMNS), sql.SQL(" AND ").join(conditions))
    async with pool.connection() as conn:
        cursor = await conn.execute(query, [*params, limit + 1])
        rows = await cursor.fetchall()
    runs = [RunRow(**dict(zip(RUN_ROW_FIELDS, row, strict=True))) for row in rows[:limit]]
    more = len(rows) > limit
    last = runs[-1] if runs else None
    next_cursor = (last.start_ns, last.run_id) if more and last and last.start_ns else None
    return runs, next_cursor


#: The most runs a session page lists (a conversation longer than that shows its first ones).
SESSION_RUNS = 500


async def session_runs(pool: AsyncConnectionPool[Any], session_id: str) -> list[RunRow]:
    """The runs of session ``session_id`` in time order, oldest first (a conversation), of every
    pipeline; migration 0010's ``runs (session_id, start_ns, run_id)`` answers it."""
    query = sql.SQL(
        "SELECT {} FROM runs WHERE session_id = %s ORDER BY start_ns, run_id LIMIT %s"
    ).format(sql.SQL(RUN_ROW_COLUMNS))
    async with pool.connection() as conn:
        cursor = await conn.execute(query, [session_id, SESSION_RUNS])
        rows = await cursor.fetchall()
    return [RunRow(**dict(zip(RUN_ROW_FIELDS, row, strict=True))) for row in rows]


async def list_runs(
    pool: AsyncConnectionPool[Any],
    *,
    limit: int,
    pipeline: str | None = None,
    status: StatusFilter | None = None,
    since_ns: int | None = None,
    run_id_prefix: str = "",
    after: RunCursor | None = None,
    until_ns: int | None = None,
    search: RunSearch | None = None,
) -> RunList:
    """Runs, newest first, optionally of one pipeline and/or one status, started since
    ``since_ns`` and before ``until_ns``, whose id starts with ``run_id_prefix``, matching
    ``search`` (step name, record value); those after ``after`` (keyset pagination in the list's
    order: start descending, unknown starts last, then run id)."""
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    if pipeline is not None:
        conditions.append(sql.SQL("pipeline = %s"))
        params.append(pipeline)
    if status is not None:
        conditions.append(sql.SQL("status = %s"))
        params.append(status)
    if since_ns is not None:
        conditions.append(sql.SQL("start_ns >= %s"))
        params.append(since_ns)
    if until_ns is not None:
        conditions.append(sql.SQL("start_ns < %s"))
        params.append(until_ns)
    if run_id_prefix:
        conditions.append(sql.SQL("run_id LIKE %s"))
        params.append(like_escaped(run_id_prefix) + "%")
    if search is not None:
        search_conditions(search, conditions, params, await rare_text_runs(pool, search))
    if after is not None and after[0] is None:
        conditions.append(sql.SQL("start_ns IS NULL AND run_id > %s"))
        params.append(after[1])
    elif after is not None:
        conditions.append(
            sql.SQL("(start_ns < %s OR (start_ns = %s AND run_id > %s) OR start_ns IS NULL)")
        )
        params.extend([after[0], after[0], after[1]])
    where = sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    query = sql.SQL(
        "SELECT {} FROM runs {} ORDER BY start_ns DESC NULLS LAST, run_id LIMIT %s"
    ).format(RUN_OUT_COLUMNS, where)
    async with pool.connection() as conn:
        cursor = await conn.execute(query, [*params, limit + 1])
        runs = [run_out(row) for row in await cursor.fetchall()]
    more = len(runs) > limit
    runs = runs[:limit]
    next_ = cursor_text(runs[-1].start_ns, runs[-1].run_id) if more else None
    scores = await scores_of_runs(pool, [run.run_id for run in runs])
    runs = [
        msgspec.structs.replace(run, scores=scores.get(run.run_id, []))
        for run in await priced_runs(pool, runs)
    ]
    return RunList(runs=runs, next=next_)

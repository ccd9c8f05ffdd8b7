"""The dashboard's queries: pipeline summaries, a page of runs, a run's steps, one step.

Pages select only the columns they show: the run page reads no captured values (they can be
large, and a run may have thousands of steps); the step panel reads them for one step.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens_server._errors import RunNotFoundError


class PipelineSummary(msgspec.Struct, kw_only=True, frozen=True):
    """One pipeline over a time range; durations are of finished runs."""

    name: str
    runs: int
    failed: int
    running: int
    p50_ns: float | None
    p95_ns: float | None
    last_run_id: str | None
    last_start_ns: int | None

    @property
    def error_rate(self) -> float | None:
        """Failed runs over all runs in the range; ``None`` without runs."""
        return self.failed / self.runs if self.runs else None


class RunRow(msgspec.Struct, kw_only=True, frozen=True):
    """A run as the runs list and the run page show it."""

    run_id: str
    pipeline: str | None
    status: str
    start_ns: int | None
    end_ns: int | None
    duration_ns: int | None
    step_count: int | None
    error_type: str | None
    error_message: str | None


class StepRow(msgspec.Struct, kw_only=True, frozen=True):
    """A step as the Gantt chart and the step tree show it."""

    key: str
    step_id: str
    parent_id: str | None
    name: str
    kind: str
    status: str
    start_ns: int | None
    end_ns: int | None
    duration_ns: int | None


class StepDetail(msgspec.Struct, kw_only=True, frozen=True):
    """One step with its captured values (JSON text) for the step panel."""

    run_id: str
    key: str
    name: str
    kind: str
    status: str
    start_ns: int | None
    end_ns: int | None
    duration_ns: int | None
    inputs: str | None
    result: str | None
    records: str | None
    error_type: str | None
    error_message: str | None
    error_traceback: str | None


#: A position in the runs list: the last run shown (start_ns, run_id).
Cursor = tuple[int, str]

_RUN_COLUMNS = (
    "run_id, pipeline, status, start_ns, end_ns, duration_ns, step_count, error_type, error_message"
)
_RUN_FIELDS = tuple(name.strip() for name in _RUN_COLUMNS.split(","))
_STEP_FIELDS = (
    "key",
    "step_id",
    "parent_id",
    "name",
    "kind",
    "status",
    "start_ns",
    "end_ns",
    "duration_ns",
)
_DETAIL_FIELDS = tuple(name for name in StepDetail.__struct_fields__)

_OVERVIEW = sql.SQL(
    """
    SELECT p.name, s.runs, s.failed, s.running, s.p50, s.p95, last.run_id, last.start_ns
    FROM pipelines p
    CROSS JOIN LATERAL (
        SELECT count(*) AS runs,
               count(*) FILTER (WHERE r.status = 'failed') AS failed,
               count(*) FILTER (WHERE r.status = 'running') AS running,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY r.duration_ns) AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_ns) AS p95
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


async def pipeline_summaries(
    pool: AsyncConnectionPool[Any], since_ns: int
) -> list[PipelineSummary]:
    """Every known pipeline, most recently run first, with its figures since ``since_ns``."""
    async with pool.connection() as conn:
        cursor = await conn.execute(_OVERVIEW, {"since": since_ns})
        rows = await cursor.fetchall()
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
        )
        for row in rows
    ]


async def runs_page(
    pool: AsyncConnectionPool[Any],
    *,
    pipeline: str,
    since_ns: int,
    status: str | None,
    after: Cursor | None,
    limit: int,
    run_id_prefix: str = "",
    until_ns: int | None = None,
    search: RunSearch | None = None,
) -> tuple[list[RunRow], Cursor | None]:
    """Up to ``limit`` runs of ``pipeline`` newest first, those after ``after`` (keyset
    pagination), started in [``since_ns``, ``until_ns``), whose id starts with ``run_id_prefix``
    and that match ``search``; and the cursor of the next page, ``None`` on the last one."""
    conditions: list[sql.Composable] = [sql.SQL("pipeline = %s"), sql.SQL("start_ns >= %s")]
    params: list[Any] = [pipeline, since_ns]
    if until_ns is not None:
        conditions.append(sql.SQL("start_ns < %s"))
        params.append(until_ns)
    if search is not None:
        search_conditions(search, conditions, params)
    if status is not None:
        conditions.append(sql.SQL("status = %s"))
        params.append(status)
    if run_id_prefix:
        conditions.append(sql.SQL("run_id LIKE %s"))
        params.append(_like_escaped(run_id_prefix) + "%")
    if after is not None:
        conditions.append(sql.SQL("(start_ns, run_id) < (%s, %s)"))
        params.extend(after)
    query = sql.SQL(
        "SELECT {} FROM runs WHERE {} ORDER BY start_ns DESC, run_id DESC LIMIT %s"
    ).format(sql.SQL(_RUN_COLUMNS), sql.SQL(" AND ").join(conditions))
    async with pool.connection() as conn:
        cursor = await conn.execute(query, [*params, limit + 1])
        rows = await cursor.fetchall()
    runs = [RunRow(**dict(zip(_RUN_FIELDS, row, strict=True))) for row in rows[:limit]]
    more = len(rows) > limit
    last = runs[-1] if runs else None
    next_cursor = (last.start_ns, last.run_id) if more and last and last.start_ns else None
    return runs, next_cursor


class RunSearch(msgspec.Struct, kw_only=True, frozen=True):
    """Runs having a step named ``step_name``, and/or a step whose records hold ``record_value``
    (under ``record_key`` when given, any top-level key otherwise; a key alone: a step that
    recorded that key). Empty fields match all; the two searches may match different steps."""

    step_name: str = ""
    record_key: str = ""
    record_value: str = ""


def _record_candidates(value: str) -> list[Any]:
    """The JSON values a record value typed as ``value`` may be stored as: the string, and the
    number, boolean or null it spells (``2`` finds ``{"n_docs": 2}`` and ``{"n_docs": "2"}``)."""
    candidates: list[Any] = [value]
    try:
        parsed = json.loads(value)
    except ValueError:
        return candidates
    if parsed is None or isinstance(parsed, bool | int) or _finite(parsed):
        candidates.append(parsed)
    return candidates


def _finite(value: Any) -> bool:
    """A float JSON can hold (``1e999`` parses as infinity, which jsonb refuses)."""
    return isinstance(value, float) and math.isfinite(value)


def search_conditions(
    search: RunSearch, conditions: list[sql.Composable], params: list[Any]
) -> None:
    """Add to ``conditions`` (on table ``runs``) and ``params`` what ``search`` asks for.

    Each is an ``EXISTS`` on the run's steps. A step name is answered by migration 0007's
    ``steps (name, run_id)`` either way the planner goes (run by run for a common name, from the
    few matching steps for a rare one). Record searches read each candidate run's steps by
    primary key, newest run first, within the page's range, until the page is full: records have
    no index, since one would about double PostgreSQL's insert cost per step.
    """
    if search.step_name:
        conditions.append(
            sql.SQL("EXISTS (SELECT 1 FROM steps s WHERE s.run_id = runs.run_id AND s.name = %s)")
        )
        params.append(search.step_name)
    if search.record_key and not search.record_value:
        # A key alone: runs having a step that recorded it.
        conditions.append(
            sql.SQL(
                "EXISTS (SELECT 1 FROM steps s WHERE s.run_id = runs.run_id AND s.records ? %s)"
            )
        )
        params.append(search.record_key)
    if not search.record_value:
        return
    candidates = _record_candidates(search.record_value)
    if search.record_key:
        # Containment (@>) of {key: value}.
        matches: sql.Composable = sql.SQL(" OR ").join(
            sql.SQL("s.records @> %s::jsonb") for _ in candidates
        )
        params.extend(json.dumps({search.record_key: c}) for c in candidates)
    else:
        # Any top-level key: a JSON path over the values (the string is a JSON string literal,
        # which is also a jsonpath one).
        tests = " || ".join(f"@ == {json.dumps(c)}" for c in candidates)
        matches = sql.SQL("s.records @? %s::jsonpath")
        params.append(f"$.* ? ({tests})")
    conditions.append(
        sql.SQL("EXISTS (SELECT 1 FROM steps s WHERE s.run_id = runs.run_id AND ({}))").format(
            matches
        )
    )


def _like_escaped(text: str) -> str:
    """``text`` matched literally by LIKE (backslash is PostgreSQL's default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def run_with_steps(
    pool: AsyncConnectionPool[Any], run_id: str
) -> tuple[RunRow, list[StepRow]]:
    """A run and all its steps (without captured values); ``RunNotFoundError`` when unknown."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT {} FROM runs WHERE run_id = %s").format(sql.SQL(_RUN_COLUMNS)),
            [run_id],
        )
        row = await cursor.fetchone()
        if row is None:
            raise RunNotFoundError(run_id)
        cursor = await conn.execute(
            sql.SQL("SELECT {} FROM steps WHERE run_id = %s").format(
                sql.SQL(", ").join(map(sql.Identifier, _STEP_FIELDS))
            ),
            [run_id],
        )
        steps = [
            StepRow(**dict(zip(_STEP_FIELDS, s, strict=True))) for s in await cursor.fetchall()
        ]
    return RunRow(**dict(zip(_RUN_FIELDS, row, strict=True))), steps


async def step_detail(pool: AsyncConnectionPool[Any], run_id: str, key: str) -> StepDetail | None:
    """One step with its captured values as JSON text, or ``None`` when unknown."""
    columns = [
        sql.SQL("{}::text").format(sql.Identifier(name))
        if name in ("inputs", "result", "records")
        else sql.Identifier(name)
        for name in _DETAIL_FIELDS
    ]
    query = sql.SQL("SELECT {} FROM steps WHERE run_id = %s AND key = %s").format(
        sql.SQL(", ").join(columns)
    )
    async with pool.connection() as conn:
        cursor = await conn.execute(query, [run_id, key])
        row = await cursor.fetchone()
    return None if row is None else StepDetail(**dict(zip(_DETAIL_FIELDS, row, strict=True)))

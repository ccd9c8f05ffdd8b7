"""The read API's queries and the shapes it answers with.

Captured values are selected as JSON text and passed through as ``msgspec.Raw``: stored ``jsonb``
goes to the client without being decoded into Python objects and encoded again.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens_server._errors import RunNotFoundError
from pipelens_server._pages_read import RunSearch, _like_escaped, search_conditions

StatusFilter = Literal["running", "completed", "failed", "cancelled"]


class ErrorOut(msgspec.Struct, kw_only=True, frozen=True):
    """A step's or run's error."""

    type: str | None
    message: str | None
    traceback: str | None


class RunOut(msgspec.Struct, kw_only=True, frozen=True):
    """A run as the read API shows it. ``pipeline`` is ``None`` until a run event names it."""

    run_id: str
    pipeline: str | None
    status: str
    start_ns: int | None
    end_ns: int | None
    duration_ns: int | None
    error: ErrorOut | None
    step_count: int | None
    dropped_events: int | None
    attributes: msgspec.Raw | None
    updated_at: str
    #: LLM usage by model: ``{model: {calls, input_tokens, output_tokens, ...}}``.
    llm_usage: msgspec.Raw | None


class StepOut(msgspec.Struct, kw_only=True, frozen=True):
    """A step as the read API shows it."""

    key: str
    step_id: str
    parent_id: str | None
    name: str
    kind: str
    status: str
    start_ns: int | None
    end_ns: int | None
    duration_ns: int | None
    inputs: msgspec.Raw | None
    result: msgspec.Raw | None
    records: msgspec.Raw | None
    error: ErrorOut | None
    #: The LLM call of a ``kind="llm"`` step (provider, model, messages, output, usage, ...).
    llm: msgspec.Raw | None


class RunList(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/v1/runs``: newest first."""

    runs: list[RunOut]
    #: The ``after`` of the next page; ``None`` on the last one.
    next: str | None = None


class RunDetail(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/v1/runs/{run_id}``: the run and all its steps, in start order."""

    run: RunOut
    steps: list[StepOut]


_RUN_COLUMNS = sql.SQL(
    "run_id, pipeline, status, start_ns, end_ns, duration_ns, error_type, error_message, "
    "error_traceback, step_count, dropped_events, attributes::text, "
    """to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), llm_usage::text"""
)
_STEP_COLUMNS = sql.SQL(
    "key, step_id, parent_id, name, kind, status, start_ns, end_ns, duration_ns, inputs::text, "
    "result::text, records::text, error_type, error_message, error_traceback, llm::text"
)


def _raw(text: str | None) -> msgspec.Raw | None:
    return None if text is None else msgspec.Raw(text.encode())


def _error(type_: str | None, message: str | None, traceback: str | None) -> ErrorOut | None:
    if type_ is None and message is None and traceback is None:
        return None
    return ErrorOut(type=type_, message=message, traceback=traceback)


def _run(row: tuple[Any, ...]) -> RunOut:
    return RunOut(
        run_id=row[0],
        pipeline=row[1],
        status=row[2],
        start_ns=row[3],
        end_ns=row[4],
        duration_ns=row[5],
        error=_error(row[6], row[7], row[8]),
        step_count=row[9],
        dropped_events=row[10],
        attributes=_raw(row[11]),
        updated_at=row[12],
        llm_usage=_raw(row[13]),
    )


def _step(row: tuple[Any, ...]) -> StepOut:
    return StepOut(
        key=row[0],
        step_id=row[1],
        parent_id=row[2],
        name=row[3],
        kind=row[4],
        status=row[5],
        start_ns=row[6],
        end_ns=row[7],
        duration_ns=row[8],
        inputs=_raw(row[9]),
        result=_raw(row[10]),
        records=_raw(row[11]),
        error=_error(row[12], row[13], row[14]),
        llm=_raw(row[15]),
    )


#: A position in the run list: the last run shown (start_ns, which may be unknown, and run_id).
RunCursor = tuple[int | None, str]


def parse_run_cursor(after: str) -> RunCursor:
    """``start_ns:run_id`` (``:run_id`` when the start is unknown), as ``RunList.next`` gives."""
    start, sep, run_id = after.partition(":")
    if not sep or not (start.isdigit() or start == ""):
        raise ValueError(f"after={after!r} is not a page cursor (start_ns:run_id): use 'next'")
    return (int(start) if start else None), run_id


def _cursor_text(run: RunOut) -> str:
    return f"{'' if run.start_ns is None else run.start_ns}:{run.run_id}"


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
        params.append(_like_escaped(run_id_prefix) + "%")
    if search is not None:
        search_conditions(search, conditions, params)
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
    ).format(_RUN_COLUMNS, where)
    async with pool.connection() as conn:
        cursor = await conn.execute(query, [*params, limit + 1])
        runs = [_run(row) for row in await cursor.fetchall()]
    more = len(runs) > limit
    runs = runs[:limit]
    return RunList(runs=runs, next=_cursor_text(runs[-1]) if more else None)


async def get_run(pool: AsyncConnectionPool[Any], run_id: str) -> RunDetail:
    """One run with every step; raise ``RunNotFoundError`` when unknown."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT {} FROM runs WHERE run_id = %s").format(_RUN_COLUMNS), [run_id]
        )
        row = await cursor.fetchone()
        if row is None:
            raise RunNotFoundError(run_id)
        cursor = await conn.execute(
            sql.SQL(
                "SELECT {} FROM steps WHERE run_id = %s ORDER BY start_ns NULLS LAST, key"
            ).format(_STEP_COLUMNS),
            [run_id],
        )
        steps = [_step(step) for step in await cursor.fetchall()]
    return RunDetail(run=_run(row), steps=steps)

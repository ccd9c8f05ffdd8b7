"""One run: with every step and captured value (the JSON API), with its steps' bars (the run
page), and one step's panel.

The run page reads no captured values (they can be large, and a run may have thousands of
steps); the step panel reads them for one step.
"""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens_server._errors import RunNotFoundError
from pipelens_server._read._llm import run_llm_totals
from pipelens_server._read._shapes import (
    DETAIL_FIELDS,
    RUN_OUT_COLUMNS,
    RUN_ROW_COLUMNS,
    RUN_ROW_FIELDS,
    STEP_OUT_COLUMNS,
    STEP_ROW_FIELDS,
    RunDetail,
    RunRow,
    StepDetail,
    StepRow,
    run_out,
    step_out,
)


async def get_run(pool: AsyncConnectionPool[Any], run_id: str) -> RunDetail:
    """One run with every step; raise ``RunNotFoundError`` when unknown."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT {} FROM runs WHERE run_id = %s").format(RUN_OUT_COLUMNS), [run_id]
        )
        row = await cursor.fetchone()
        if row is None:
            raise RunNotFoundError(run_id)
        cursor = await conn.execute(
            sql.SQL(
                "SELECT {} FROM steps WHERE run_id = %s ORDER BY start_ns NULLS LAST, key"
            ).format(STEP_OUT_COLUMNS),
            [run_id],
        )
        steps = [step_out(step) for step in await cursor.fetchall()]
    llm = (await run_llm_totals(pool, [run_id])).get(run_id)
    return RunDetail(run=msgspec.structs.replace(run_out(row), llm=llm), steps=steps)


async def run_with_steps(
    pool: AsyncConnectionPool[Any], run_id: str
) -> tuple[RunRow, list[StepRow]]:
    """A run and all its steps (without captured values); ``RunNotFoundError`` when unknown."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT {} FROM runs WHERE run_id = %s").format(sql.SQL(RUN_ROW_COLUMNS)),
            [run_id],
        )
        row = await cursor.fetchone()
        if row is None:
            raise RunNotFoundError(run_id)
        cursor = await conn.execute(
            sql.SQL("SELECT {} FROM steps WHERE run_id = %s").format(
                sql.SQL(", ").join(map(sql.Identifier, STEP_ROW_FIELDS))
            ),
            [run_id],
        )
        steps = [
            StepRow(**dict(zip(STEP_ROW_FIELDS, s, strict=True))) for s in await cursor.fetchall()
        ]
    return RunRow(**dict(zip(RUN_ROW_FIELDS, row, strict=True))), steps


async def step_detail(pool: AsyncConnectionPool[Any], run_id: str, key: str) -> StepDetail | None:
    """One step with its captured values as JSON text, or ``None`` when unknown."""
    columns = [
        sql.SQL("{}::text").format(sql.Identifier(name))
        if name in ("inputs", "result", "records")
        else sql.Identifier(name)
        for name in DETAIL_FIELDS
    ]
    query = sql.SQL("SELECT {} FROM steps WHERE run_id = %s AND key = %s").format(
        sql.SQL(", ").join(columns)
    )
    async with pool.connection() as conn:
        cursor = await conn.execute(query, [run_id, key])
        row = await cursor.fetchone()
    return None if row is None else StepDetail(**dict(zip(DETAIL_FIELDS, row, strict=True)))

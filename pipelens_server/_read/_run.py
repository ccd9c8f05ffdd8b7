"""One run: with every step and captured value (the JSON API), with the steps its page shows
(their bars), and one step's panel.

The run page reads no captured values (they can be large, and a run may have thousands of
steps); the step panel reads them for one step. Nor does it read every step: of a parent's
children it shows the first and last ``cap // 2`` in start order and a gap row for the others,
so only those are read (of a million root steps, 200 rows), with the counts that stand for the
rest.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens_server._errors import RunNotFoundError
from pipelens_server._read._llm import priced_runs, priced_steps
from pipelens_server._read._scores import run_scores
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
    StepTree,
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
    (run,) = await priced_runs(pool, [run_out(row)])
    scores = await run_scores(pool, run_id)
    return RunDetail(run=msgspec.structs.replace(run, scores=scores), steps=priced_steps(steps))


#: The run's steps, a step whose parent is not in the run counted as a root (parent ``NULL``),
#: each with its index among its siblings in the page's order (start, then key in code point
#: order, as Python sorts) and the counts the page shows for the steps it does not read.
_TREE = """
WITH RECURSIVE s AS (
    -- Narrow rows (the 1,000,000 of a big run are sorted), in three parts so that the parent
    -- test is a hash (anti-)join, not a subquery per row.
    SELECT key, step_id, parent_id, start_ns, end_ns FROM steps
    WHERE run_id = %(run)s AND parent_id IS NULL
    UNION ALL
    SELECT key, step_id, parent_id, start_ns, end_ns FROM steps st
    WHERE run_id = %(run)s AND EXISTS (
        SELECT FROM steps p WHERE p.run_id = %(run)s AND p.step_id = st.parent_id
    )
    UNION ALL
    SELECT key, step_id, NULL, start_ns, end_ns FROM steps st
    WHERE run_id = %(run)s AND parent_id IS NOT NULL AND NOT EXISTS (
        SELECT FROM steps p WHERE p.run_id = %(run)s AND p.step_id = st.parent_id
    )
),
ranked AS (
    SELECT s.*,
           row_number() OVER (
               PARTITION BY parent_id ORDER BY start_ns NULLS LAST, key COLLATE "C"
           ) - 1 AS position,
           count(*) OVER (PARTITION BY parent_id) AS siblings
    FROM s
),
whole AS (SELECT step_id FROM steps WHERE run_id = %(run)s AND key = ANY(%(all)s)),
chain AS (
    SELECT step_id, parent_id FROM steps WHERE run_id = %(run)s AND key = %(reveal)s
    UNION  -- not ALL: a parent-id cycle in bad data ends the walk
    SELECT p.step_id, p.parent_id FROM chain c
    JOIN steps p ON p.run_id = %(run)s AND p.step_id = c.parent_id
),
-- The critical path: from the root that ends last, each time the child that ends last (one
-- still running ends latest of all), the chain of steps that set the run's duration.
latest AS (
    SELECT DISTINCT ON (parent_id) parent_id, step_id FROM s
    ORDER BY parent_id, end_ns DESC NULLS FIRST, start_ns DESC NULLS LAST, key COLLATE "C" DESC
),
critical AS (
    SELECT step_id, 1 AS n FROM latest WHERE parent_id IS NULL
    UNION ALL
    SELECT l.step_id, c.n + 1 FROM critical c JOIN latest l ON l.parent_id = c.step_id
    WHERE c.n < 100000  -- no root reaches a parent-id cycle; a bound all the same
),
picked AS (
    SELECT * FROM ranked
    WHERE position < %(half)s OR position >= siblings - %(half)s
       OR parent_id IN (SELECT step_id FROM whole)
       OR (parent_id IS NULL AND %(all_roots)s)
       OR step_id IN (SELECT step_id FROM chain)
       OR step_id IN (SELECT step_id FROM critical)
),
kids AS (
    SELECT parent_id, count(*) AS n FROM s
    WHERE parent_id IN (SELECT step_id FROM picked) GROUP BY parent_id
)
SELECT picked.key, picked.step_id, picked.parent_id, st.name, st.kind, st.status,
       st.start_ns, st.end_ns, st.duration_ns,
       position, siblings, coalesce(kids.n, 0),
       picked.step_id IN (SELECT step_id FROM critical)
FROM picked
JOIN steps st ON st.run_id = %(run)s AND st.key = picked.key
LEFT JOIN kids ON kids.parent_id = picked.step_id
"""

#: The step total and the chart's axis: an aggregate, not more windows over a sorted million.
_SPAN = "SELECT count(*), min(start_ns), max(end_ns), max(start_ns) FROM steps WHERE run_id = %s"

#: How many steps are under each of some steps (``UNION`` ends a parent-id cycle's walk).
_UNDER = """
WITH RECURSIVE down(top, step_id) AS (
    SELECT parent_id, step_id FROM steps WHERE run_id = %(run)s AND parent_id = ANY(%(tops)s)
    UNION
    SELECT d.top, s.step_id FROM down d
    JOIN steps s ON s.run_id = %(run)s AND s.parent_id = d.step_id
)
SELECT top, count(*) FROM down GROUP BY top
"""


async def run_tree(
    pool: AsyncConnectionPool[Any],
    run_id: str,
    *,
    cap: int,
    show_all: Collection[str] = (),
    reveal: str | None = None,
) -> tuple[RunRow, StepTree]:
    """A run and the steps its page can show; ``RunNotFoundError`` when unknown.

    Of each parent's children (the roots' too) the first and last ``cap // 2`` in start order
    are read; all of them for a parent whose key is in ``show_all`` (``""``: the roots); the
    step ``reveal`` with its ancestors; and the steps of the critical path. A step read under
    a parent that is not read (it is in a gap) is dropped: the page could not place it.
    """
    async with pool.connection() as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT {} FROM runs WHERE run_id = %s").format(sql.SQL(RUN_ROW_COLUMNS)),
            [run_id],
        )
        row = await cursor.fetchone()
        if row is None:
            raise RunNotFoundError(run_id)
        params = {
            "run": run_id,
            "all": list(show_all),
            "all_roots": "" in show_all,
            "reveal": reveal,
            "half": cap // 2,
        }
        cursor = await conn.execute(_TREE, params)
        rows = await cursor.fetchall()
        fields = len(STEP_ROW_FIELDS)
        read = {r[1]: r for r in rows}
        kept = [r for r in rows if _placed(r[1], read)]
        tops = [r[1] for r in kept if r[fields + 2]]
        cursor = await conn.execute(_UNDER, {"run": run_id, "tops": tops})
        under: dict[str, int] = dict(await cursor.fetchall())
        cursor = await conn.execute(_SPAN, [run_id])
        span = await cursor.fetchone()
    total, first_start, last_end, last_start = span if span is not None else (0, None, None, None)
    children = {r[1]: r[fields + 2] for r in kept}
    roots = next((r[fields + 1] for r in rows if r[2] is None), 0)
    tree = StepTree(
        steps=[StepRow(*r[:fields]) for r in kept],
        total=total,
        children={**children, "": roots},
        position={r[1]: r[fields] for r in kept},
        under=under,
        first_start_ns=first_start,
        last_end_ns=last_end,
        last_start_ns=last_start,
        critical=[r[1] for r in kept if r[fields + 3]],
    )
    return RunRow(**dict(zip(RUN_ROW_FIELDS, row, strict=True))), tree


def _placed(step_id: str, read: dict[str, tuple[Any, ...]]) -> bool:
    """Whether the step's ancestors are all read (a root's are): else one of them is in a gap
    and the page has no place for it. A parent-id cycle among the steps read counts as placed
    (the page makes its first step a root)."""
    seen = {step_id}
    parent = read[step_id][2]
    while parent is not None:
        if parent not in read:
            return False
        if parent in seen:
            return True
        seen.add(parent)
        parent = read[parent][2]
    return True


async def step_detail(pool: AsyncConnectionPool[Any], run_id: str, key: str) -> StepDetail | None:
    """One step, by key or else by name path (migration 0016: what compare matches OTLP steps
    by), with its captured values as JSON text, or ``None`` when unknown."""
    columns = [
        sql.SQL("{}::text").format(sql.Identifier(name))
        if name in ("inputs", "result", "records")
        else sql.Identifier(name)
        for name in DETAIL_FIELDS
    ]
    query = sql.SQL("SELECT {} FROM steps WHERE run_id = %s AND key = %s").format(
        sql.SQL(", ").join(columns)
    )
    by_path = sql.SQL("SELECT {} FROM steps WHERE run_id = %s AND path = %s LIMIT 1").format(
        sql.SQL(", ").join(columns)
    )
    async with pool.connection() as conn:
        cursor = await conn.execute(query, [run_id, key])
        row = await cursor.fetchone()
        if row is None:  # a scan of the run's steps, only for a key it does not have
            row = await (await conn.execute(by_path, [run_id, key])).fetchone()
    return None if row is None else StepDetail(**dict(zip(DETAIL_FIELDS, row, strict=True)))

"""Two runs side by side: their step trees aligned by key, with what changed between them.

Steps are matched by key (the dotted path, the same in two runs of one program; a step whose
key is made of its id, an OTLP span's, by the name path migration 0016 stores). A row is
*changed* when its step is in one run only, its status differs, its captured inputs, result or
records differ, or its duration moved by at least :data:`CHANGE_RATIO` of the shorter one and
:data:`CHANGE_MIN_NS`. The join, the flags and the tree order are computed in PostgreSQL, and
only the rows a page can show come back (at most ``limit``, in tree order): a comparison of two
runs of 10,000 steps reads hundreds of rows, with the counts that stand for the others.

Two views: ``changed`` (the changed rows and their ancestors, so that each has its place) and
``all`` (every row whose ancestors are open: the roots are, the subtrees named in ``expand``
are, and every subtree of a comparison of at most ``open_below`` rows). Either way a key in
``collapse`` hides what is under it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens_server._errors import RunNotFoundError
from pipelens_server._read._llm import _known, run_llm_totals
from pipelens_server._read._shapes import RUN_ROW_COLUMNS, RUN_ROW_FIELDS, LLMTotals, RunRow

#: A duration changed when it moved by this share of the shorter one, and by CHANGE_MIN_NS.
CHANGE_RATIO = 0.2
CHANGE_MIN_NS = 1_000_000
#: Rows answered when the caller does not say.
DEFAULT_LIMIT = 500

View = Literal["changed", "all"]


class CompareRow(msgspec.Struct, kw_only=True, frozen=True):
    """One key of either run: its step in ``a`` and in ``b`` (``None`` where it is missing)."""

    key: str
    #: The parent's key (``None``: a root) and the depth under the roots.
    parent: str | None
    depth: int
    name: str
    kind: str
    a_status: str | None
    b_status: str | None
    a_duration_ns: int | None
    b_duration_ns: int | None
    #: ``b``'s duration minus ``a``'s; ``None`` unless both are known.
    delta_ns: int | None
    #: Input plus output tokens of an LLM step that reported usage.
    a_tokens: int | None
    b_tokens: int | None
    #: The captured inputs, result or records differ (of a step in both runs).
    values_changed: bool
    changed: bool
    #: Steps under this key (in either run), and how many of them changed.
    under: int
    changed_under: int
    #: Whether the view shows its children (a leaf's are never shown).
    open: bool


class RunSide(msgspec.Struct, kw_only=True, frozen=True):
    """One of the two runs: its row and its LLM totals (``None``: no LLM call)."""

    run: RunRow
    llm: LLMTotals | None


class CompareCounts(msgspec.Struct, kw_only=True, frozen=True):
    """Counts over every key of the two runs."""

    a_steps: int
    b_steps: int
    #: Keys in both runs, in ``a`` only, in ``b`` only.
    matched: int
    only_a: int
    only_b: int
    status_changed: int
    values_changed: int
    changed: int


class Comparison(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/v1/compare``: the two runs, the counts, and the rows of the view asked for."""

    a: RunSide
    b: RunSide
    counts: CompareCounts
    view: str
    #: The rows of the view in tree order, at most ``limit`` of them; ``more``: the others.
    rows: list[CompareRow]
    more: int
    #: ``b`` minus ``a``: run time (``None`` unless both ended), LLM tokens and cost (``None``
    #: unless both runs have them).
    duration_delta_ns: int | None
    tokens_delta: int | None
    cost_delta_usd: float | None


def _minus(a: float | None, b: float | None) -> Any:
    return None if a is None or b is None else b - a


def _side(alias: str, param: str) -> sql.Composable:
    """One run's steps, with the parent's key (a parent not in the run: ``NULL``, a root)."""
    tokens = (
        _known("jsonb_typeof(s.llm->'usage') = 'object'", "s.llm->'usage'->'input_tokens'")
        + sql.SQL(" + ")
        + _known("jsonb_typeof(s.llm->'usage') = 'object'", "s.llm->'usage'->'output_tokens'")
    )
    return sql.SQL(
        """{alias} AS (
    SELECT coalesce(s.path, s.key) AS key, coalesce(p.path, p.key) AS parent, s.name, s.kind,
           s.status, s.start_ns, s.duration_ns, s.inputs, s.result, s.records, {tokens} AS tokens
    FROM steps s LEFT JOIN steps p ON p.run_id = s.run_id AND p.step_id = s.parent_id
    WHERE s.run_id = {param}
)"""
    ).format(alias=sql.Identifier(alias), param=sql.Placeholder(param), tokens=tokens)


#: The two runs' steps joined by key, with the flags; offsets from each run's own start put the
#: siblings of both runs in one start order.
_JOINED = sql.SQL(
    """
joined AS (
    SELECT coalesce(x.key, y.key) AS key, coalesce(x.parent, y.parent) AS parent,
           coalesce(y.name, x.name) AS name, coalesce(y.kind, x.kind) AS kind,
           x.status AS a_status, y.status AS b_status,
           x.duration_ns AS a_ns, y.duration_ns AS b_ns, x.tokens AS a_tokens,
           y.tokens AS b_tokens,
           coalesce(y.start_ns - %(b0)s, x.start_ns - %(a0)s) AS offset_ns,
           x.key IS NOT NULL AND y.key IS NOT NULL AND (
               x.inputs IS DISTINCT FROM y.inputs OR x.result IS DISTINCT FROM y.result
               OR x.records IS DISTINCT FROM y.records
           ) AS values_changed,
           x.key IS NULL OR y.key IS NULL OR x.status IS DISTINCT FROM y.status AS moved
    FROM a_steps x FULL JOIN b_steps y ON x.key = y.key
),
flagged AS (
    SELECT j.*, j.moved OR j.values_changed OR coalesce(
        abs(j.b_ns - j.a_ns) >= greatest(%(min_ns)s, %(ratio)s * least(j.a_ns, j.b_ns)), false
    ) AS changed
    FROM joined j
)"""
)

#: Tree order (a path of sibling positions: depth first, siblings in start order), every
#: (step, ancestor) pair (``UNION``: a parent cycle in bad data ends the walk; no root reaches
#: a cycle, so its steps are never shown) and the counts under each step.
_TREE = sql.SQL(
    """,
ranked AS (
    SELECT f.*, row_number() OVER (
        PARTITION BY f.parent ORDER BY f.offset_ns NULLS LAST, f.key COLLATE "C"
    ) AS position
    FROM flagged f
),
tree AS (
    SELECT key, 0 AS depth, ARRAY[position] AS path FROM ranked WHERE parent IS NULL
    UNION ALL
    SELECT r.key, t.depth + 1, t.path || r.position FROM tree t JOIN ranked r ON r.parent = t.key
),
above(key, ancestor) AS (
    SELECT key, parent FROM flagged WHERE parent IS NOT NULL
    UNION
    SELECT a.key, f.parent FROM above a JOIN flagged f ON f.key = a.ancestor
    WHERE f.parent IS NOT NULL
),
under AS (
    SELECT a.ancestor AS key, count(*) AS n, count(*) FILTER (WHERE f.changed) AS changed_n
    FROM above a JOIN flagged f ON f.key = a.key GROUP BY a.ancestor
),
rows AS (
    SELECT r.*, t.depth, t.path, coalesce(u.n, 0) AS under,
           coalesce(u.changed_n, 0) AS changed_under,
           NOT r.key = ANY(%(collapse)s) AND (
               r.key = ANY(%(expand)s) OR t.depth = 0 OR %(open_all)s OR %(view)s = 'changed'
           ) AS is_open
    FROM ranked r JOIN tree t ON t.key = r.key LEFT JOIN under u ON u.key = r.key
),
-- Joins, not NOT IN (subquery): the recursive CTEs' estimates are far too high for a hashed
-- subplan, and a plain one is a scan per row (30 s for two runs of 10,000 steps).
hidden AS (
    SELECT DISTINCT a.key FROM above a JOIN rows p ON p.key = a.ancestor WHERE NOT p.is_open
)
SELECT r.key, r.parent, r.depth, r.name, r.kind, r.a_status, r.b_status, r.a_ns, r.b_ns,
       r.b_ns - r.a_ns, r.a_tokens, r.b_tokens, r.values_changed, r.changed, r.under,
       r.changed_under, r.under > 0 AND r.is_open, count(*) OVER () AS total
FROM rows r LEFT JOIN hidden h ON h.key = r.key
WHERE h.key IS NULL AND (%(view)s = 'all' OR r.changed OR r.changed_under > 0)
ORDER BY r.path LIMIT %(limit)s
"""
)

_COUNTS = sql.SQL(
    """
SELECT count(a_status), count(b_status),
       count(*) FILTER (WHERE a_status IS NOT NULL AND b_status IS NOT NULL),
       count(*) FILTER (WHERE b_status IS NULL), count(*) FILTER (WHERE a_status IS NULL),
       count(*) FILTER (WHERE a_status <> b_status), count(*) FILTER (WHERE values_changed),
       count(*) FILTER (WHERE changed)
FROM flagged
"""
)

_ROW_FIELDS = (
    "key",
    "parent",
    "depth",
    "name",
    "kind",
    "a_status",
    "b_status",
    "a_duration_ns",
    "b_duration_ns",
    "delta_ns",
    "a_tokens",
    "b_tokens",
    "values_changed",
    "changed",
    "under",
    "changed_under",
    "open",
)


def _with() -> sql.Composable:
    return sql.SQL("WITH RECURSIVE {}, {}, {}").format(
        _side("a_steps", "a"), _side("b_steps", "b"), _JOINED
    )


async def _run_row(conn: Any, run_id: str) -> RunRow:
    cursor = await conn.execute(
        sql.SQL("SELECT {} FROM runs WHERE run_id = %s").format(sql.SQL(RUN_ROW_COLUMNS)),
        [run_id],
    )
    row = await cursor.fetchone()
    if row is None:
        raise RunNotFoundError(run_id)
    return RunRow(**dict(zip(RUN_ROW_FIELDS, row, strict=True)))


async def compare_runs(
    pool: AsyncConnectionPool[Any],
    a: str,
    b: str,
    *,
    view: View = "changed",
    expand: Collection[str] = (),
    collapse: Collection[str] = (),
    limit: int = DEFAULT_LIMIT,
    open_below: int = 300,
) -> Comparison:
    """Compare run ``a`` (the baseline) with run ``b``; ``RunNotFoundError`` names an unknown one.

    Args:
        view: ``changed`` (the changed rows and their ancestors) or ``all``.
        expand: Keys whose subtrees the ``all`` view opens.
        collapse: Keys whose subtrees are hidden, in either view.
        limit: The most rows answered (``more`` counts the others).
        open_below: The ``all`` view opens every subtree of two runs of this many keys or fewer.
    """
    async with pool.connection() as conn:
        run_a, run_b = await _run_row(conn, a), await _run_row(conn, b)
        params = {
            "a": a,
            "b": b,
            "a0": run_a.start_ns or 0,
            "b0": run_b.start_ns or 0,
            "min_ns": CHANGE_MIN_NS,
            "ratio": CHANGE_RATIO,
        }
        cursor = await conn.execute(_with() + _COUNTS, params)
        counted = await cursor.fetchone() or (0,) * len(CompareCounts.__struct_fields__)
        counts = CompareCounts(**dict(zip(CompareCounts.__struct_fields__, counted, strict=True)))
        keys = counts.matched + counts.only_a + counts.only_b
        params |= {
            "view": view,
            "expand": list(expand),
            "collapse": list(collapse),
            "open_all": keys <= open_below,
            "limit": limit,
        }
        cursor = await conn.execute(_with() + _TREE, params)
        found = await cursor.fetchall()
    llm = await run_llm_totals(pool, [a, b])
    llm_a, llm_b = llm.get(a), llm.get(b)
    fields = len(_ROW_FIELDS)
    return Comparison(
        a=RunSide(run=run_a, llm=llm_a),
        b=RunSide(run=run_b, llm=llm_b),
        counts=counts,
        view=view,
        rows=[CompareRow(**dict(zip(_ROW_FIELDS, r[:fields], strict=True))) for r in found],
        more=(found[0][fields] - len(found)) if found else 0,
        duration_delta_ns=_minus(run_a.duration_ns, run_b.duration_ns),
        tokens_delta=_minus(llm_a.tokens if llm_a else None, llm_b.tokens if llm_b else None),
        cost_delta_usd=_minus(llm_a.cost_usd if llm_a else None, llm_b.cost_usd if llm_b else None),
    )


async def previous_run(pool: AsyncConnectionPool[Any], run_id: str) -> str | None:
    """The run of the same pipeline that started last before ``run_id`` (the page's default
    baseline); ``None`` when there is none or the run is unknown."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT p.run_id FROM runs r JOIN runs p ON p.pipeline = r.pipeline "
            "AND (p.start_ns, p.run_id) < (r.start_ns, r.run_id) "
            "WHERE r.run_id = %s ORDER BY p.start_ns DESC, p.run_id DESC LIMIT 1",
            [run_id],
        )
        row = await cursor.fetchone()
    return None if row is None else str(row[0])

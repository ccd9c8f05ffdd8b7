"""Scores read back: a run's (the run page, the API), those of a page of runs (the runs list's
column), the runs filter ``score=...``, and a pipeline's figures of each score (distribution and
mean over time), beside its runs' mean duration and LLM cost per run over the same buckets.

The filter's syntax, one for the runs page and ``GET /api/v1/runs``:

* ``score=relevance``: runs with a score of that name;
* ``score=relevance:0.5``, ``score=verdict:good``, ``score=passed:true``: of that value (a
  number, a category, a boolean);
* ``score=relevance>=0.5`` (also ``>``, ``<=``, ``<``): a numeric or boolean (1/0) score in range.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens_server._errors import RunNotFoundError
from pipelens_server._read._llm import pipeline_costs
from pipelens_server._read._shapes import ScoreOut

ScoreOp = Literal[":", ">=", "<=", ">", "<"]

#: The scores a pipeline's panel shows at most (by how often they were given), and the
#: categories of one score.
MAX_SCORE_NAMES = 8
MAX_CATEGORIES = 10
#: Bars of a numeric score's distribution, and points of its mean over time.
HISTOGRAM_BINS = 10
TIME_BUCKETS = 24

_SCORE_FILTER = re.compile(r"(?P<name>.+?)(?P<op>:|>=|<=|>|<)(?P<value>.*)", re.DOTALL)
_BOOLEANS = {"true": 1.0, "false": 0.0}


class ScoreFilter(msgspec.Struct, kw_only=True, frozen=True):
    """Runs with a score ``name`` (of ``value`` compared by ``op``, when given)."""

    name: str
    op: ScoreOp | None = None
    value: str = ""


def parse_score_filter(text: str) -> ScoreFilter:
    """``name``, ``name:value`` or ``name>=number`` (``>``, ``<=``, ``<``); ``ValueError``
    naming the fix when it is none of them."""
    match = _SCORE_FILTER.fullmatch(text.strip())
    if match is None:
        if not text.strip():
            raise ValueError("score= needs a score name, as score=relevance")
        return ScoreFilter(name=text.strip())
    name, op, value = match["name"].strip(), match["op"], match["value"].strip()
    if not name or not value:
        raise ValueError(
            f"score={text!r}: expected name, name:value or name>=number, as score=relevance, "
            "score=verdict:good or score=relevance>=0.5"
        )
    if op != ":" and _number(value) is None:
        raise ValueError(f"score={text!r}: {op} compares with a number, as score=relevance>=0.5")
    return ScoreFilter(name=name, op=op, value=value)  # type: ignore[arg-type]


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return _BOOLEANS.get(text.lower())
    return number if math.isfinite(number) else None


def score_condition(
    score: ScoreFilter, conditions: list[sql.Composable], params: list[Any]
) -> None:
    """Add the ``EXISTS`` on table ``runs`` that ``score`` asks for (migration 0011's
    ``scores (name, run_id)`` answers it, run by run)."""
    tests: list[sql.Composable] = [sql.SQL("sc.run_id = runs.run_id AND sc.name = %s")]
    params.append(score.name)
    number = _number(score.value) if score.op else None
    if score.op == ":":
        tests.append(
            sql.SQL("(sc.value_text = %s OR (sc.kind <> 'categorical' AND sc.value_number = %s))")
        )
        params.extend([score.value, number])
    elif score.op is not None:
        tests.append(
            sql.SQL("sc.kind <> 'categorical' AND sc.value_number {} %s").format(sql.SQL(score.op))
        )
        params.append(number)
    conditions.append(
        sql.SQL("EXISTS (SELECT 1 FROM scores sc WHERE {})").format(sql.SQL(" AND ").join(tests))
    )


_COLUMNS = (
    "run_id, score_id, name, kind, value_number, value_text, comment, step_key, source, at_ns"
)


def _out(row: tuple[Any, ...]) -> ScoreOut:
    kind, number, text = row[3], row[4], row[5]
    value: bool | float | str = (
        number == 1.0 if kind == "boolean" else number if kind == "numeric" else text
    )
    return ScoreOut(
        score_id=row[1],
        name=row[2],
        kind=kind,
        value=value,
        comment=row[6],
        step_key=row[7],
        source=row[8],
        at_ns=row[9],
    )


async def scores_of_runs(
    pool: AsyncConnectionPool[Any], run_ids: list[str]
) -> dict[str, list[ScoreOut]]:
    """The scores of each run in ``run_ids``, in the order they were given."""
    if not run_ids:
        return {}
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT {_COLUMNS} FROM scores WHERE run_id = ANY(%s) "  # noqa: S608
            "ORDER BY run_id, at_ns, score_id",
            (run_ids,),
        )
        rows = await cursor.fetchall()
    scores: dict[str, list[ScoreOut]] = {}
    for row in rows:
        scores.setdefault(row[0], []).append(_out(row))
    return scores


async def run_scores(pool: AsyncConnectionPool[Any], run_id: str) -> list[ScoreOut]:
    """The scores of run ``run_id``, in the order they were given."""
    return (await scores_of_runs(pool, [run_id])).get(run_id, [])


async def ensure_run(pool: AsyncConnectionPool[Any], run_id: str) -> None:
    """Raise ``RunNotFoundError`` unless run ``run_id`` is stored."""
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT 1 FROM runs WHERE run_id = %s", (run_id,))
        if await cursor.fetchone() is None:
            raise RunNotFoundError(run_id)


async def score_by_id(
    pool: AsyncConnectionPool[Any], run_id: str, score_id: str
) -> ScoreOut | None:
    """One stored score, ``None`` when there is none of that id."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            f"SELECT {_COLUMNS} FROM scores WHERE run_id = %s AND score_id = %s",  # noqa: S608
            (run_id, score_id),
        )
        row = await cursor.fetchone()
    return None if row is None else _out(row)


class Bar(msgspec.Struct, kw_only=True, frozen=True):
    """One bar of a distribution: a bin of numbers (``label`` its range) or a category."""

    label: str
    count: int


class MeanPoint(msgspec.Struct, kw_only=True, frozen=True):
    """The mean of a numeric or boolean score over the runs started in one time bucket."""

    start_ns: int
    mean: float
    count: int


class ScoreSummary(msgspec.Struct, kw_only=True, frozen=True):
    """One score of a pipeline over a time range: how often, its mean (numbers; a boolean's is
    the share of ``True``), its distribution and its mean over time."""

    name: str
    kind: str
    count: int
    mean: float | None
    bars: list[Bar]
    means: list[MeanPoint]
    bucket_ns: int


_NAMES = """
    SELECT sc.name, sc.kind, count(*), avg(sc.value_number::numeric)::float8, min(sc.value_number),
           max(sc.value_number)
    FROM scores sc JOIN runs r ON r.run_id = sc.run_id
    WHERE r.pipeline = %(pipeline)s AND r.start_ns >= %(since)s AND r.start_ns < %(until)s
    GROUP BY sc.name, sc.kind ORDER BY count(*) DESC, sc.name LIMIT %(limit)s
"""
_HISTOGRAM = """
    SELECT least(width_bucket(sc.value_number, %(lo)s, %(hi)s, %(bins)s), %(bins)s), count(*)
    FROM scores sc JOIN runs r ON r.run_id = sc.run_id
    WHERE r.pipeline = %(pipeline)s AND r.start_ns >= %(since)s AND r.start_ns < %(until)s
      AND sc.name = %(name)s AND sc.kind = %(kind)s
    GROUP BY 1 ORDER BY 1
"""
_CATEGORIES = """
    SELECT COALESCE(sc.value_text, CASE WHEN sc.value_number = 1 THEN 'true' ELSE 'false' END),
           count(*)
    FROM scores sc JOIN runs r ON r.run_id = sc.run_id
    WHERE r.pipeline = %(pipeline)s AND r.start_ns >= %(since)s AND r.start_ns < %(until)s
      AND sc.name = %(name)s AND sc.kind = %(kind)s
    GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT %(limit)s
"""
_MEANS = """
    SELECT (r.start_ns - %(since)s) / %(width)s, avg(sc.value_number::numeric)::float8, count(*)
    FROM scores sc JOIN runs r ON r.run_id = sc.run_id
    WHERE r.pipeline = %(pipeline)s AND r.start_ns >= %(since)s AND r.start_ns < %(until)s
      AND sc.name = %(name)s AND sc.kind = %(kind)s
    GROUP BY 1 ORDER BY 1
"""


_DURATIONS = """
    SELECT (start_ns - %(since)s) / %(width)s, avg(duration_ns) / 1e6, count(*)
    FROM runs
    WHERE pipeline = %(pipeline)s AND start_ns >= %(since)s AND start_ns < %(until)s
      AND duration_ns IS NOT NULL AND status NOT IN ('running', 'abandoned')
    GROUP BY 1 ORDER BY 1
"""


async def duration_means(
    pool: AsyncConnectionPool[Any], pipeline: str, since_ns: int, until_ns: int
) -> ScoreSummary | None:
    """The mean duration of ``pipeline``'s finished runs over the same time buckets as its
    scores' means, in milliseconds (drawn beside them); ``None`` without finished runs."""
    width = max((until_ns - since_ns) // TIME_BUCKETS, 1)
    params = {"pipeline": pipeline, "since": since_ns, "until": until_ns, "width": width}
    async with pool.connection() as conn:
        cursor = await conn.execute(_DURATIONS, params)
        rows = await cursor.fetchall()
    if not rows:
        return None
    means = [
        MeanPoint(start_ns=since_ns + int(i) * width, mean=float(m), count=n) for i, m, n in rows
    ]
    count = sum(p.count for p in means)
    return ScoreSummary(
        name="run duration (ms)",
        kind="duration",
        count=count,
        mean=sum(p.mean * p.count for p in means) / count,
        bars=[],
        means=means,
        bucket_ns=width,
    )


async def cost_means(
    pool: AsyncConnectionPool[Any], pipeline: str, since_ns: int, until_ns: int
) -> ScoreSummary | None:
    """The mean LLM cost per run of ``pipeline``'s runs that made LLM calls, in USD, over the
    same time buckets as its scores' means (drawn beside them); ``None`` without priced calls."""
    buckets = await pipeline_costs(pool, pipeline, since_ns, until_ns, TIME_BUCKETS)
    if not buckets:
        return None
    runs = sum(b.runs for b in buckets)
    return ScoreSummary(
        name="LLM cost per run (USD)",
        kind="cost",
        count=runs,
        mean=sum(b.cost_usd for b in buckets) / runs,
        bars=[],
        means=[
            MeanPoint(start_ns=b.start_ns, mean=b.cost_usd / b.runs, count=b.runs) for b in buckets
        ],
        bucket_ns=max((until_ns - since_ns) // TIME_BUCKETS, 1),
    )


async def run_figures(
    pool: AsyncConnectionPool[Any], pipeline: str, since_ns: int, until_ns: int
) -> list[ScoreSummary]:
    """What the scores are drawn beside: ``pipeline``'s mean run duration and LLM cost per run
    over the same buckets, those it has."""
    figures = [
        await duration_means(pool, pipeline, since_ns, until_ns),
        await cost_means(pool, pipeline, since_ns, until_ns),
    ]
    return [figure for figure in figures if figure is not None]


def _bin_label(lo: float, hi: float, i: int, bins: int) -> str:
    width = (hi - lo) / bins
    return f"{lo + width * i:.3g} to {lo + width * (i + 1):.3g}"


async def pipeline_scores(
    pool: AsyncConnectionPool[Any], pipeline: str, since_ns: int, until_ns: int
) -> list[ScoreSummary]:
    """Each score given to ``pipeline``'s runs started in [``since_ns``, ``until_ns``), the
    most given first (at most :data:`MAX_SCORE_NAMES`)."""
    width = max((until_ns - since_ns) // TIME_BUCKETS, 1)
    base = {"pipeline": pipeline, "since": since_ns, "until": until_ns}
    summaries = []
    async with pool.connection() as conn:
        cursor = await conn.execute(_NAMES, base | {"limit": MAX_SCORE_NAMES})
        names = await cursor.fetchall()
        for name, kind, count, mean, lo, hi in names:
            at = base | {"name": name, "kind": kind}
            bars: list[Bar] = []
            means: list[MeanPoint] = []
            if kind == "numeric" and lo is not None and hi is not None and hi > lo:
                cursor = await conn.execute(
                    _HISTOGRAM, at | {"lo": lo, "hi": hi, "bins": HISTOGRAM_BINS}
                )
                counts = dict(await cursor.fetchall())
                bars = [
                    Bar(label=_bin_label(lo, hi, i, HISTOGRAM_BINS), count=counts.get(i + 1, 0))
                    for i in range(HISTOGRAM_BINS)
                ]
            elif kind == "numeric":
                bars = [Bar(label=f"{lo:.3g}", count=count)]
            else:
                cursor = await conn.execute(_CATEGORIES, at | {"limit": MAX_CATEGORIES})
                bars = [Bar(label=label, count=n) for label, n in await cursor.fetchall()]
            if kind != "categorical":
                cursor = await conn.execute(_MEANS, at | {"width": width})
                means = [
                    MeanPoint(start_ns=since_ns + int(i) * width, mean=float(m), count=n)
                    for i, m, n in await cursor.fetchall()
                ]
            summaries.append(
                ScoreSummary(
                    name=name,
                    kind=kind,
                    count=count,
                    mean=None if mean is None else float(mean),
                    bars=bars,
                    means=means,
                    bucket_ns=width,
                )
            )
    return summaries

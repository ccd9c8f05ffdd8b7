"""Reading the rollups (migration 0013, written by ``_db._rollup``): which parts of a time range
come from them and which from raw rows, and the figures of their sums.

A range is cut into whole days and whole hours that are rolled up (sealed and not dirty) and
the rest, read raw: the partial hours at its edges, the hours not yet sealed (the current one),
the dirty ones. Both are summed alike (``rollup_source`` is raw rows as rollup rows of one), so
counts, failures, minimum, maximum, mean and first and last start are exact; a percentile is
the bucket holding the nearest-rank value, reported as the bucket's geometric middle clamped to
the minimum and maximum: within half a bucket, a factor 2^(1/16) (4.4 %), of the exact
nearest-rank value (``percentile_disc``). A range whose rows number no more than
:data:`EXACT_BELOW` is cheap to read raw whatever the table's size, and is: its figures exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import sql

HOUR_NS = 3_600_000_000_000
DAY_NS = 24 * HOUR_NS
#: Up to this many rows in a range, reads answer from raw rows (exact percentiles).
EXACT_BELOW = 10_000
#: Buckets per doubling of duration (``pipelens_duration_bucket``).
BUCKETS_PER_DOUBLING = 8
#: What rollup rows sum to, as ``_db._rollup.MERGED`` (the same sums, from the other room).
MERGED = (
    "sum(n)::bigint, sum(failed)::bigint, sum(running)::bigint, sum(abandoned)::bigint, "
    "sum(dur_sum)::float8, min(dur_min), max(dur_max), min(first_ns), max(last_ns)"
)
COLUMNS = "bucket, n, failed, running, abandoned, dur_sum, dur_min, dur_max, first_ns, last_ns"


def _summed(dur_sum: str, starts: str) -> str:
    """The select list of rollup rows summed as one row of a group, with ``dur_sum`` and
    ``starts`` (the first and the last) as given."""
    return (
        "sum(n)::bigint, sum(failed)::bigint, sum(running)::bigint, sum(abandoned)::bigint, "
        f"(sum(n) FILTER (WHERE bucket >= 0))::bigint, {dur_sum}, "
        "min(dur_min) FILTER (WHERE bucket >= 0), max(dur_max) FILTER (WHERE bucket >= 0), "
        f"{starts}, "
        "array_agg(bucket) FILTER (WHERE bucket >= 0), array_agg(n) FILTER (WHERE bucket >= 0)"
    )


#: What rollup rows sum to as one row of a group, its duration buckets' counts as two arrays
#: (bucket numbers, their counts; a number may repeat): rows for :func:`combine`. One row per
#: group instead of one per duration bucket, so that the merging in Python is over a few rows.
SUMMED = _summed(
    "(sum(coalesce(dur_sum, 0)) FILTER (WHERE bucket >= 0))::float8", "min(first_ns), max(last_ns)"
)
#: :data:`SUMMED` without the sums that only the step statistics show (the mean's ``dur_sum``,
#: the first and last start: NULL): what counts and percentiles need, for reads of many groups
#: (the overview's bars), where the numeric sum was a fifth of the aggregation.
SUMMED_COUNTS = _summed("NULL::float8", "NULL::bigint, NULL::bigint")


class Plan(msgspec.Struct, kw_only=True, frozen=True):
    """Where a range's figures come from: rolled-up days and hours, raw ``[lo, hi)`` intervals
    (``hi`` ``None``: no end)."""

    days: list[int]
    hours: list[int]
    raw: list[tuple[int, int | None]]
    #: Which rollups the plan was made on (the server's start, the database's oid and
    #: ``rollup_state.generation``, migration 0018): what was read from them holds until it
    #: changes.
    version: tuple[str, ...] | None = None

    @property
    def rolled(self) -> bool:
        """Whether any part comes from the rollups."""
        return bool(self.days or self.hours)

    def clean_hours(self) -> list[int]:
        """Every rolled-up hour, the days' too."""
        return sorted([*self.hours, *(d + i * HOUR_NS for d in self.days for i in range(24))])


_STATE = """
    SELECT (SELECT sealed_until_ns FROM rollup_state),
           ARRAY(SELECT DISTINCT hour_ns FROM rollup_dirty WHERE hour_ns >= %s AND hour_ns < %s),
           ARRAY[pg_postmaster_start_time()::text,
                 (SELECT oid FROM pg_database WHERE datname = current_database())::text,
                 (SELECT generation FROM rollup_state)::text]
"""


async def plan(conn: psycopg.AsyncConnection[Any], since_ns: int, until_ns: int | None) -> Plan:
    """Cut ``[since_ns, until_ns)`` into rolled-up days and hours and raw intervals."""
    first = -(-since_ns // HOUR_NS) * HOUR_NS
    upper = 2**62 if until_ns is None else until_ns // HOUR_NS * HOUR_NS
    row = await (await conn.execute(_STATE, [first, upper])).fetchone()
    sealed, dirty = (row[0], set(row[1])) if row is not None else (first, set())
    version = tuple(row[2]) if row is not None else None
    last = min(upper, sealed)
    if last <= first:
        return Plan(days=[], hours=[], raw=[(since_ns, until_ns)], version=version)
    days: list[int] = []
    hours: list[int] = []
    raw: list[tuple[int, int | None]] = [(since_ns, first)] if since_ns < first else []
    hour = first
    while hour < last:
        if hour % DAY_NS == 0 and hour + DAY_NS <= last:
            span = range(hour, hour + DAY_NS, HOUR_NS)
            if not dirty.intersection(span):
                days.append(hour)
                hour += DAY_NS
                continue
        if hour in dirty:
            _extend(raw, hour, hour + HOUR_NS)
        else:
            hours.append(hour)
        hour += HOUR_NS
    if until_ns is None or last < until_ns:
        _extend(raw, last, until_ns)
    return Plan(days=days, hours=hours, raw=raw, version=version)


def _extend(raw: list[tuple[int, int | None]], lo: int, hi: int | None) -> None:
    """Add ``[lo, hi)`` to ``raw``, joined to the last interval when it starts where that ends."""
    if raw and raw[-1][1] == lo:
        raw[-1] = (raw[-1][0], hi)
    else:
        raw.append((lo, hi))


def raw_condition(raw: Iterable[tuple[int, int | None]], params: list[Any]) -> sql.Composable:
    """``start_ns`` in any of the ``raw`` intervals (false for none)."""
    parts: list[sql.Composable] = []
    for lo, hi in raw:
        params.append(lo)
        if hi is None:
            parts.append(sql.SQL("start_ns >= %s"))
        else:
            parts.append(sql.SQL("(start_ns >= %s AND start_ns < %s)"))
            params.append(hi)
    return sql.SQL("({})").format(sql.SQL(" OR ").join(parts)) if parts else sql.SQL("false")


def sources(
    kind: str, where: sql.Composable, where_params: list[Any], the_plan: Plan, params: list[Any]
) -> sql.Composable:
    """The rollup rows (buckets -1 and up) and raw rows of ``the_plan`` matching ``where`` (on
    ``pipeline`` and ``key``), as one relation of rollup rows with ``pipeline`` and ``start_ns``
    columns (a rollup row's span's start, a raw row's own start)."""
    rolled = rolled_source(kind, where, where_params, the_plan, params)
    raw = raw_source(kind, where, where_params, the_plan, params)
    return sql.SQL("{} UNION ALL {}").format(rolled, raw)


def rolled_source(
    kind: str, where: sql.Composable, where_params: list[Any], the_plan: Plan, params: list[Any]
) -> sql.Composable:
    """The rollup rows of :func:`sources` alone."""
    params.extend([kind, *where_params, the_plan.days, the_plan.hours])
    return sql.SQL(
        "SELECT pipeline, start_ns, {cols} FROM rollups "  # noqa: S608 - constants only
        "WHERE kind = %s AND {where} AND bucket >= -1 "
        f"AND ((span_ns = {DAY_NS} AND start_ns = ANY(%s)) "
        f"OR (span_ns = {HOUR_NS} AND start_ns = ANY(%s)))"
    ).format(cols=sql.SQL(COLUMNS), where=where)


def raw_source(
    kind: str, where: sql.Composable, where_params: list[Any], the_plan: Plan, params: list[Any]
) -> sql.Composable:
    """The raw rows of :func:`sources` alone."""
    params.extend([kind, *where_params])
    raw = raw_condition(the_plan.raw, params)
    return sql.SQL(
        "SELECT pipeline, start_ns, {cols} FROM rollup_source WHERE kind = %s AND {where} AND {raw}"
    ).format(cols=sql.SQL(COLUMNS), where=where, raw=raw)


def bucket_middle(bucket: int) -> float:
    """The geometric middle of a duration bucket (ns): within half a bucket of its every
    duration."""
    return float(2 ** ((bucket + 0.5) / BUCKETS_PER_DOUBLING))


class Merged(msgspec.Struct, kw_only=True, frozen=True):
    """Rollup rows summed: counts, durations of the finished, their buckets' counts."""

    count: int
    failed: int
    running: int
    abandoned: int
    finished: int
    dur_sum: float | None
    min_ns: int | None
    max_ns: int | None
    first_ns: int | None
    last_ns: int | None
    buckets: dict[int, int]

    def percentile(self, p: float) -> float | None:
        """The ``p`` quantile (nearest rank) within half a bucket; ``None`` with no duration."""
        if not self.finished or self.min_ns is None or self.max_ns is None:
            return None
        rank = max(1, math.ceil(p * self.finished))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return float(min(max(bucket_middle(bucket), self.min_ns), self.max_ns))
        return float(self.max_ns)


def merge(rows: Iterable[tuple[Any, ...]]) -> Merged:
    """Sum rows of (bucket, n, failed, running, abandoned, dur_sum, dur_min, dur_max, first_ns,
    last_ns), one per bucket (a negative one holds the unfinished): each is the row of
    :func:`combine` that sums that bucket alone."""
    return combine(
        (n, fail, run, gone, None, None, None, None, first, last, (), ())
        if bucket < 0
        else (n, fail, run, gone, n, total or 0.0, low, high, first, last, (bucket,), (n,))
        for bucket, n, fail, run, gone, total, low, high, first, last in rows
    )


def combine(rows: Iterable[Sequence[Any]]) -> Merged:
    """Sum rows of :data:`SUMMED` (n, failed, running, abandoned, finished, dur_sum, dur_min,
    dur_max, first_ns, last_ns, bucket numbers, their counts; ``finished`` is ``None`` where
    none finished): what :func:`merge` gives for the rollup rows they sum. Rows of
    :data:`SUMMED_COUNTS` give no ``dur_sum``, ``first_ns`` nor ``last_ns``."""
    count = failed = running = abandoned = finished = 0
    dur_sum: float | None = None
    lows: list[int] = []
    highs: list[int] = []
    firsts: list[int] = []
    lasts: list[int] = []
    buckets: dict[int, int] = {}
    for n, fail, run, gone, done, total, low, high, first, last, numbers, counts in rows:
        count, failed, running, abandoned = (
            count + n,
            failed + fail,
            running + run,
            abandoned + gone,
        )
        if first is not None:
            firsts.append(first)
            lasts.append(last)
        if done is None:  # no finished run in the group
            continue
        finished += done
        if total is not None:
            dur_sum = (dur_sum or 0.0) + total
        lows.append(low)
        highs.append(high)
        for number, k in zip(numbers, counts, strict=True):
            buckets[number] = buckets.get(number, 0) + k
    return Merged(
        count=count,
        failed=failed,
        running=running,
        abandoned=abandoned,
        finished=finished,
        dur_sum=dur_sum,
        min_ns=min(lows) if lows else None,
        max_ns=max(highs) if highs else None,
        first_ns=min(firsts) if firsts else None,
        last_ns=max(lasts) if lasts else None,
        buckets=buckets,
    )

"""The rollup job: sums runs and steps per hour and per day into ``rollups`` (migration 0013).

Each round, in one transaction: the hours written into after they had ended (``rollup_dirty``,
noted by every writer of ``runs`` and ``steps`` with :data:`NOTE_DIRTY`, migration 0014) and the
hours that ended since the last round (once no transaction begun before an hour's end is still
open, nothing can still be written into it unseen) are summed
again from ``rollup_source``, and so are the days holding them, from their hours. Reads
(``_read._rollup``) take rollups only for the hours sealed and not dirty, so a late round costs
read time, never a wrong figure. One process at a time rolls up (an advisory lock): several
servers on one database share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import structlog
from litestar import Litestar
from psycopg_pool import AsyncConnectionPool

log = structlog.get_logger("pipelens_server.rollup")

HOUR_NS = 3_600_000_000_000
DAY_NS = 24 * HOUR_NS
#: Seconds between two rounds.
INTERVAL_S = 10.0
# "rollup" in ASCII, under the migrations' lock key.
_LOCK_KEY = 0x726F6C6C7570

#: What a set of rollup rows sums to (the reads of ``_read._rollup`` merge with the same sums).
MERGED = (
    "sum(n)::bigint, sum(failed)::bigint, sum(running)::bigint, sum(abandoned)::bigint, "
    "sum(dur_sum), min(dur_min), max(dur_max), min(first_ns), max(last_ns)"
)
_COLUMNS = (
    "kind, pipeline, key, span_ns, start_ns, bucket, n, failed, running, abandoned, dur_sum, "
    "dur_min, dur_max, first_ns, last_ns"
)
# The oldest start of a transaction still open in this database, other than ours (idle
# connections have none): hours that ended before it can be sealed.
_OLDEST_OPEN = """
    SELECT (extract(epoch FROM min(xact_start)) * 1000000000)::bigint FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
      AND backend_type = 'client backend'
"""
_HOURS = f"""
    INSERT INTO rollups ({_COLUMNS})
    SELECT kind, pipeline, key, {HOUR_NS}, pipelens_hour(start_ns), bucket, {MERGED}
    FROM rollup_source
    WHERE start_ns >= %(lo)s AND start_ns < %(hi)s AND pipelens_hour(start_ns) = ANY(%(hours)s)
    GROUP BY kind, pipeline, key, pipelens_hour(start_ns), bucket
    ORDER BY kind, pipeline, key, pipelens_hour(start_ns), bucket
"""  # noqa: S608 - constants only
# Bucket -2: an hour's finished rows together (the time series reads one row per hour).
_HOUR_TOTALS = f"""
    INSERT INTO rollups ({_COLUMNS})
    SELECT kind, pipeline, key, span_ns, start_ns, -2, {MERGED} FROM rollups
    WHERE span_ns = {HOUR_NS} AND start_ns = ANY(%(hours)s) AND bucket >= 0
    GROUP BY kind, pipeline, key, span_ns, start_ns
    ORDER BY kind, pipeline, key, span_ns, start_ns
"""  # noqa: S608 - constants only
_DAYS = f"""
    INSERT INTO rollups ({_COLUMNS})
    SELECT kind, pipeline, key, {DAY_NS},
           start_ns - ((start_ns %% {DAY_NS}) + {DAY_NS}) %% {DAY_NS}, bucket, {MERGED}
    FROM rollups
    WHERE span_ns = {HOUR_NS} AND start_ns >= %(lo)s AND start_ns < %(hi)s AND bucket >= -1
      AND start_ns - ((start_ns %% {DAY_NS}) + {DAY_NS}) %% {DAY_NS} = ANY(%(days)s)
    GROUP BY kind, pipeline, key, 5, bucket
    ORDER BY kind, pipeline, key, 5, bucket
"""  # noqa: S608 - constants only


# The inserts above are ordered as the primary key: a read of one kind and pipeline over a range
# (the overview: the runs' rows of 24 hours, among the steps' twenty times as many) then finds
# its rows side by side in a few heap pages, not one row per page.

#: Notes in ``rollup_dirty`` the hours of the ``start_ns`` of ``{rows}`` (the rows a statement
#: changed, returned by it) that had ended when the transaction began. Appended, never upserted:
#: two ingest transactions writing into one old hour never wait on each other here.
NOTE_DIRTY = (
    "INSERT INTO rollup_dirty (hour_ns) SELECT DISTINCT pipelens_hour(start_ns) FROM {rows} "
    "WHERE start_ns < (SELECT pipelens_open_hour())"
)

_DATABASE_NOW = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint"
_DELETE = "DELETE FROM rollups WHERE span_ns = %(span)s AND start_ns = ANY(%(starts)s)"


async def count_of(cursor: psycopg.AsyncCursor[Any]) -> int:
    """The ``count(*)`` a statement answered with (a writer that notes hours returns its count
    rather than a row count)."""
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])


def _floor(at_ns: int, width: int) -> int:
    return at_ns - at_ns % width


async def roll_up(pool: AsyncConnectionPool[Any], *, now_ns: int | None = None) -> int:
    """One round: roll up the dirty hours and those that ended since; return how many hours
    (0 as well when another process holds the lock)."""
    async with pool.connection() as conn, conn.transaction():
        if now_ns is None:
            # The database's clock, which the writers' "has this hour ended" (``now()``) reads: a
            # server clock ahead of it would seal an hour still written into, unnoted.
            row = await (await conn.execute(_DATABASE_NOW)).fetchone()
            now_ns = time.time_ns() if row is None else int(row[0])
        return await _round(conn, now_ns)


async def _round(conn: psycopg.AsyncConnection[Any], now_ns: int) -> int:
    locked = await (
        await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", [_LOCK_KEY])
    ).fetchone()
    if not locked or not locked[0]:
        return 0
    state = await (
        await conn.execute("SELECT sealed_until_ns FROM rollup_state FOR UPDATE")
    ).fetchone()
    assert state is not None  # migration 0013 inserted the one row
    sealed: int = state[0]
    oldest = await (await conn.execute(_OLDEST_OPEN)).fetchone()
    limit = now_ns if oldest is None or oldest[0] is None else min(now_ns, oldest[0])
    new_sealed = max(sealed, _floor(limit, HOUR_NS))
    # Only rows committed before this statement are deleted: a transaction still open keeps its
    # note for the next round, and what the deleted notes stand for is visible to the sums below.
    cursor = await conn.execute("DELETE FROM rollup_dirty RETURNING hour_ns")
    hours = {row[0] for row in await cursor.fetchall() if row[0] < new_sealed}
    hours.update(range(sealed, new_sealed, HOUR_NS))
    if not hours:
        return 0
    listed = sorted(hours)
    days = sorted({_floor(h, DAY_NS) for h in listed})
    span = {"hours": listed, "lo": listed[0], "hi": listed[-1] + HOUR_NS}
    await conn.execute(_DELETE, {"span": HOUR_NS, "starts": listed})
    await conn.execute(_HOURS, span)
    await conn.execute(_HOUR_TOTALS, span)
    await conn.execute(_DELETE, {"span": DAY_NS, "starts": days})
    await conn.execute(_DAYS, {"days": days, "lo": days[0], "hi": days[-1] + DAY_NS})
    await conn.execute("UPDATE rollup_state SET sealed_until_ns = %s", [new_sealed])
    return len(listed)


async def _roll_up_forever(pool: AsyncConnectionPool[Any]) -> None:
    while True:
        try:
            hours = await roll_up(pool)
            if hours:
                log.debug("rolled up", hours=hours)
        except Exception:  # the database away: the next round tries again
            log.exception("rolling up runs and steps failed; it runs again later")
        await asyncio.sleep(INTERVAL_S)


@contextlib.asynccontextmanager
async def rollup_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Roll up every :data:`INTERVAL_S` seconds while the app runs (after ``database_lifespan``,
    whose pool it uses). ``app.state.rollup_job`` set to ``False`` turns it off (for tests that
    roll up by hand)."""
    if not app.state.get("rollup_job", True):
        yield
        return
    task = asyncio.create_task(_roll_up_forever(app.state.pool))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

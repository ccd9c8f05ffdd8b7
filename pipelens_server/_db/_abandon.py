"""Abandoned runs: a running run whose client stopped reporting is closed as ``abandoned``.

A client that was killed (SIGKILL, the OOM killer, a seed client that died) never sends its
run's end. Every event of a run, and every heartbeat our client sends for its open runs, moves
the run's ``last_seen_ns`` forward (``_ingest._store``); the seed's protocol has no heartbeat, so
its runs are as alive as their last event. A periodic check marks the runs still ``running``
whose ``last_seen_ns`` is older than ``--abandon-after`` seconds ``abandoned``, with their steps
still running: the status says what we know (the client went silent) where ``cancelled`` would
claim something stopped them. Their end is the last time the server heard of the run, never
before their start.

``abandoned`` ranks above ``running`` and below the final statuses in the merge rule
(``_ingest._rows``): a finish that arrives later still wins, a late start never reopens. A step
started late in a run already abandoned is closed by the next check too. The check reads only the
partial indexes of running runs and running steps (migration 0009), so it stays cheap however
many finished runs there are, and closes :data:`CHUNK_RUNS` runs per short transaction, skipping
the rows an ingest holds. One process at a time checks (an advisory lock, ``_jobs``), so two
servers on one database never close the same late steps side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from litestar import Litestar
from psycopg_pool import AsyncConnectionPool

from pipelens_server._db._jobs import ABANDON_LOCK, exclusive
from pipelens_server._db._rollup import NOTE_DIRTY, count_of
from pipelens_server._settings import Settings

log = structlog.get_logger("pipelens_server.abandon")

#: Runs closed per transaction.
CHUNK_RUNS = 500
#: The longest and shortest wait between two checks (a fifth of the timeout in between).
MAX_INTERVAL_S = 30.0
MIN_INTERVAL_S = 0.5

_NOTE_CLOSED = NOTE_DIRTY.format(
    rows="(SELECT start_ns FROM closed_steps UNION ALL SELECT start_ns FROM closed_runs) AS c"
)
# The hours of the runs and steps closed are noted for the rollup job (their status changed);
# the statement answers how many runs it closed.
_ABANDON = f"""
    WITH doomed AS (
        SELECT run_id, GREATEST(last_seen_ns, COALESCE(start_ns, 0)) AS end_ns FROM runs
        WHERE status = 'running' AND last_seen_ns < %(cutoff)s
        ORDER BY last_seen_ns LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ), closed_steps AS (
        UPDATE steps AS s SET status = 'abandoned',
            end_ns = GREATEST(d.end_ns, s.start_ns),
            duration_ns = GREATEST(d.end_ns, s.start_ns) - s.start_ns
        FROM doomed d WHERE s.run_id = d.run_id AND s.status = 'running' RETURNING s.start_ns
    ), closed_runs AS (
        UPDATE runs AS r SET status = 'abandoned', end_ns = d.end_ns,
            duration_ns = d.end_ns - r.start_ns, updated_at = now()
        FROM doomed d WHERE r.run_id = d.run_id RETURNING r.start_ns
    ), noted AS ({_NOTE_CLOSED})
    SELECT count(*) FROM closed_runs
"""  # noqa: S608 - constants only
# Steps that started after their run was abandoned (a late event): closed like the others.
_CLOSE_LATE_STEPS = f"""
    WITH closed AS (
        UPDATE steps AS s SET status = 'abandoned',
            end_ns = GREATEST(r.end_ns, s.start_ns),
            duration_ns = GREATEST(r.end_ns, s.start_ns) - s.start_ns
        FROM runs r
        WHERE s.status = 'running' AND r.run_id = s.run_id AND r.status = 'abandoned'
        RETURNING s.start_ns
    ) {NOTE_DIRTY.format(rows="closed")}
"""  # noqa: S608 - constants only


def check_interval(abandon_after_s: float) -> float:
    """Seconds between two checks: a fifth of the timeout, within the bounds above."""
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, abandon_after_s / 5))


async def abandon(
    pool: AsyncConnectionPool[Any],
    abandon_after_s: float,
    *,
    now_ns: int | None = None,
    chunk: int = CHUNK_RUNS,
) -> int:
    """Mark ``abandoned`` the running runs not heard of in ``abandon_after_s`` seconds, with
    their open steps; return how many runs (0 as well when another process is checking:
    ``_jobs.exclusive``)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    cutoff = now_ns - int(abandon_after_s * 1e9)
    closed = 0
    async with exclusive(pool, ABANDON_LOCK) as conn:
        if conn is None:
            return 0
        while True:
            async with conn.transaction():
                cur = await conn.execute(_ABANDON, {"cutoff": cutoff, "limit": chunk})
                count = await count_of(cur)
            closed += count
            if count < chunk:
                break
            await asyncio.sleep(0)  # let waiting requests have the event loop between chunks
        async with conn.transaction():
            await conn.execute(_CLOSE_LATE_STEPS)
    if closed:
        log.info("runs abandoned by their clients", runs=closed, after_s=abandon_after_s)
    return closed


async def _abandon_forever(pool: AsyncConnectionPool[Any], abandon_after_s: float) -> None:
    interval_s = check_interval(abandon_after_s)
    while True:
        await asyncio.sleep(interval_s)
        try:
            await abandon(pool, abandon_after_s)
        except Exception:  # the database away: the next round tries again
            log.exception("the check for abandoned runs failed; it runs again later")


@contextlib.asynccontextmanager
async def abandon_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Check for abandoned runs every :func:`check_interval` seconds while the app runs (after
    ``database_lifespan``, whose pool it uses). ``app.state.abandon_check`` set to ``False``
    turns it off (for tests that check by hand)."""
    if not app.state.get("abandon_check", True):
        yield
        return
    settings: Settings = app.state.settings
    task = asyncio.create_task(_abandon_forever(app.state.pool, settings.abandon_after_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

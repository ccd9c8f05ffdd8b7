"""Retention: how long each pipeline's runs are kept, and the periodic purge that applies it.

Every pipeline keeps its runs for the server-wide default (14 days, as the seed did) unless it has
its own number of days (migration 0005). The purge runs at start-up (before the first request)
and then every :data:`PURGE_INTERVAL_S` in the app's lifespan. It deletes the runs whose
``start_ns`` is older than their pipeline's retention, with their steps, :data:`CHUNK_RUNS` runs
per transaction: each transaction is short, and runs an ingest holds (``FOR UPDATE SKIP LOCKED``)
are left for the next round, so ingest never waits long. One process at a time purges (an
advisory lock, ``_jobs``): several servers on one database never purge side by side. A run
known only from its steps (no run event yet) is as old as its earliest step; a run of a pipeline
whose ``start_ns`` is unknown is kept. A score whose run never came (or was deleted before the
score arrived) follows the default too, once both the time it was given and the time it arrived
are older than that: a score sent just before its run, even one backdated, is never taken for an
orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from litestar import Litestar
from psycopg_pool import AsyncConnectionPool

from pipelens_server._db._jobs import PURGE_LOCK, exclusive
from pipelens_server._db._rollup import NOTE_DIRTY, count_of
from pipelens_server._errors import ServerError

log = structlog.get_logger("pipelens_server.retention")

MIN_DAYS = 1
MAX_DAYS = 3650
DEFAULT_DAYS = 14
#: Seconds between two purges.
PURGE_INTERVAL_S = 600.0
#: Longest the start-up purge may hold back the first request.
START_BUDGET_S = 10.0
#: Runs deleted per transaction.
CHUNK_RUNS = 100
_NS_PER_DAY = 86_400 * 1_000_000_000

_PIPELINE_DAYS = """
    SELECT p.name, COALESCE(r.days, d.days), r.days IS NOT NULL
    FROM pipelines p CROSS JOIN retention_default d LEFT JOIN retention r ON r.pipeline = p.name
    ORDER BY p.name
"""
# The steps and scores go in the same statement as their runs: none outlives its run. Their
# hours are noted for the rollup job (which sums them again without them); the statement
# answers how many runs went.
_NOTE_GONE = NOTE_DIRTY.format(
    rows="(SELECT start_ns FROM gone_steps UNION ALL SELECT start_ns FROM gone_runs) AS gone"
)
_PURGE = f"""
    WITH doomed AS (
        SELECT run_id FROM runs r
        WHERE {{old}}
        ORDER BY start_ns LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ), gone_steps AS (
        DELETE FROM steps s USING doomed d WHERE s.run_id = d.run_id RETURNING s.start_ns
    ), gone_scores AS (
        DELETE FROM scores s USING doomed d WHERE s.run_id = d.run_id
    ), gone_runs AS (
        DELETE FROM runs r USING doomed d WHERE r.run_id = d.run_id RETURNING r.start_ns
    ), noted AS ({_NOTE_GONE})
    SELECT count(*) FROM gone_runs
"""  # noqa: S608 - constants only
_PURGE_PIPELINE = _PURGE.format(old="pipeline = %(pipeline)s AND start_ns < %(cutoff)s")
# Runs whose run event has not come (only their steps have) follow the default; their start is
# their earliest step's.
_PURGE_UNNAMED = _PURGE.format(
    old="pipeline IS NULL AND COALESCE(start_ns, "
    "(SELECT min(s.start_ns) FROM steps s WHERE s.run_id = r.run_id)) < %(cutoff)s"
)

# Scores of no stored run, in chunks like the runs (migration 0011 has no foreign key: a score
# may come first). The later of its two times, so that neither clock alone makes it old.
_PURGE_ORPHAN_SCORES = """
    WITH doomed AS (
        SELECT s.run_id, s.score_id FROM scores s
        WHERE greatest(s.at_ns, (extract(epoch FROM s.created_at) * 1e9)::bigint) < %(cutoff)s
          AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = s.run_id)
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM scores s USING doomed d WHERE s.run_id = d.run_id AND s.score_id = d.score_id
        RETURNING 1
    )
    SELECT count(*) FROM gone
"""


class InvalidRetentionError(ServerError):
    """A retention setting that is not a whole number of days in range, or of no pipeline."""

    status_code = 400


@dataclass(frozen=True, slots=True)
class PipelineRetention:
    """A pipeline's retention: its days, and whether they are its own or the default."""

    pipeline: str
    days: int
    overridden: bool


def parse_days(text: str, what: str) -> int:
    """``text`` as a number of days; ``InvalidRetentionError`` names ``what`` and the range."""
    value = text.strip()
    # Digits past MAX_DAYS's are out of range anyway (and int() refuses thousands of them).
    whole = value.isascii() and value.isdigit() and len(value) <= len(str(MAX_DAYS))
    if not whole or not MIN_DAYS <= int(value) <= MAX_DAYS:
        raise InvalidRetentionError(
            f"the retention of {what} must be a whole number of days from {MIN_DAYS} to "
            f"{MAX_DAYS}, got {text!r}"
        )
    return int(value)


async def default_days(pool: AsyncConnectionPool[Any]) -> int:
    """The server-wide retention in days."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT days FROM retention_default")
        row = await cur.fetchone()
    return DEFAULT_DAYS if row is None else int(row[0])


async def pipeline_retentions(pool: AsyncConnectionPool[Any]) -> list[PipelineRetention]:
    """Every pipeline's retention, by name."""
    async with pool.connection() as conn:
        cur = await conn.execute(_PIPELINE_DAYS)
        rows = await cur.fetchall()
    return [PipelineRetention(name, int(days), bool(own)) for name, days, own in rows]


async def set_default_days(pool: AsyncConnectionPool[Any], days: int) -> None:
    """Change the server-wide retention (pipelines with their own days keep them)."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO retention_default (only_row, days) VALUES (true, %(days)s) "
            "ON CONFLICT (only_row) DO UPDATE SET days = excluded.days, updated_at = now()",
            {"days": days},
        )


async def set_pipeline_days(
    pool: AsyncConnectionPool[Any], pipeline: str, days: int | None
) -> None:
    """Give ``pipeline`` its own retention, or (``days=None``) the default again.

    Raises:
        InvalidRetentionError: no pipeline has that name.
    """
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute("SELECT 1 FROM pipelines WHERE name = %s", (pipeline,))
        if await cur.fetchone() is None:
            raise InvalidRetentionError(f"there is no pipeline named {pipeline!r}")
        if days is None:
            await conn.execute("DELETE FROM retention WHERE pipeline = %s", (pipeline,))
        else:
            await conn.execute(
                "INSERT INTO retention (pipeline, days) VALUES (%(pipeline)s, %(days)s) "
                "ON CONFLICT (pipeline) DO UPDATE SET days = excluded.days, updated_at = now()",
                {"pipeline": pipeline, "days": days},
            )


async def count_expired(
    pool: AsyncConnectionPool[Any], run_ids: list[str], *, now_ns: int | None = None
) -> int:
    """How many of ``run_ids`` are already older than their pipeline's retention (the next
    purge deletes them)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM runs r CROSS JOIN retention_default d "
            "LEFT JOIN retention t ON t.pipeline = r.pipeline "
            "WHERE r.run_id = ANY(%(run_ids)s) "
            "AND r.start_ns < %(now_ns)s - COALESCE(t.days, d.days) * %(day)s::bigint",
            {"run_ids": run_ids, "now_ns": now_ns, "day": _NS_PER_DAY},
        )
        row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def purge(
    pool: AsyncConnectionPool[Any], *, now_ns: int | None = None, chunk: int = CHUNK_RUNS
) -> int:
    """Delete the runs (and their steps and scores) older than their pipeline's retention, and
    the scores of no stored run older than the default; return how many runs were deleted (0 as
    well when another process is purging: ``_jobs.exclusive``)."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    # Read before the lock's connection is taken: a pool of one connection could not give these
    # reads another one while the lock holds it.
    default = await default_days(pool)
    targets: list[tuple[str, dict[str, Any]]] = [
        (_PURGE_PIPELINE, {"pipeline": r.pipeline, "cutoff": now_ns - r.days * _NS_PER_DAY})
        for r in await pipeline_retentions(pool)
    ]
    default_cutoff = {"cutoff": now_ns - default * _NS_PER_DAY}
    targets.append((_PURGE_UNNAMED, default_cutoff))
    async with exclusive(pool, PURGE_LOCK) as conn:
        if conn is None:
            return 0
        deleted = 0
        for query, params in targets:
            deleted += await _in_chunks(conn, query, params, chunk)
        orphans = await _in_chunks(conn, _PURGE_ORPHAN_SCORES, default_cutoff, chunk)
    if deleted or orphans:
        log.info("purged old runs", runs=deleted, orphan_scores=orphans)
    return deleted


async def _in_chunks(
    conn: psycopg.AsyncConnection[Any], query: str, params: dict[str, Any], chunk: int
) -> int:
    """Run the ``DELETE`` ``query`` (``chunk`` rows a transaction, answering its ``count(*)``)
    until it deletes fewer than ``chunk``; how many rows it deleted."""
    deleted = 0
    while True:
        async with conn.transaction():
            count = await count_of(await conn.execute(query, {**params, "limit": chunk}))
        deleted += count
        if count < chunk:
            return deleted
        await asyncio.sleep(0)  # let waiting requests have the event loop between chunks


async def _purge_within(pool: AsyncConnectionPool[Any], budget_s: float) -> bool:
    """One purge, given up after ``budget_s`` (its open chunk rolls back); whether it ended."""
    try:
        await asyncio.wait_for(purge(pool), budget_s)
    except TimeoutError:
        log.info("the start-up purge goes on in the background", budget_s=budget_s)
        return False
    except Exception:  # a failed purge (the database away) waits for the next round
        log.exception("the purge of old runs failed; it runs again later")
    return True


async def _purge_forever(pool: AsyncConnectionPool[Any], interval_s: float, wait_s: float) -> None:
    while True:
        await asyncio.sleep(wait_s)
        wait_s = interval_s
        try:
            await purge(pool)
        except Exception:  # a failed purge (the database away) waits for the next round
            log.exception("the purge of old runs failed; it runs again later")


@contextlib.asynccontextmanager
async def purge_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Purge at start-up and every :data:`PURGE_INTERVAL_S` while the app runs (after
    ``database_lifespan``, whose pool it uses).

    The start-up purge ends before the first request is served, so no request sees a run vanish
    under it, unless it takes longer than :data:`START_BUDGET_S` (a long backlog): then it goes
    on in the background. ``app.state.purge_interval_s`` overrides the interval; ``None`` there
    turns the purge off (for tests that purge by hand).
    """
    interval_s = app.state.get("purge_interval_s", PURGE_INTERVAL_S)
    if interval_s is None:
        yield
        return
    pool = app.state.pool
    ended = await _purge_within(pool, START_BUDGET_S)
    task = asyncio.create_task(
        _purge_forever(pool, float(interval_s), float(interval_s) if ended else 0.0)
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

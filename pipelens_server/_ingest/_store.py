"""Storing a batch's rows: ``COPY`` into session staging tables, then one upsert per table.

The whole batch is one transaction; the caller answers 202 only after it committed. Step rows
the database does not hold yet (the common case: a run's steps arrive once, each start folded
into its finish by the client) skip the staging table and the upsert: they are ``COPY``'d
straight into ``steps``, about a third of the upsert's cost. Which ones are new is asked once the
runs' upsert holds the batch's run rows locked (see :func:`_write_steps`); the others, and all of
them should the ``COPY`` meet a stored key after all, take the staging path. Rows are
inserted in key order so that two batches touching the same rows lock them in the same order;
a deadlock or serialization failure that happens anyway is retried after a short random wait.
Updates that would change nothing are skipped (the ``WHERE ... IS DISTINCT FROM``), so a resent
batch writes nothing but the time its running runs were last heard of (``runs.last_seen_ns``,
which the abandoned-run check in ``_db._abandon`` reads; moved at most once a second per run).
All SQL here is built from the module's constants, never from input.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeVar

import psycopg
import structlog
from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from psycopg_pool import AsyncConnectionPool

from pipelens_server._db._rollup import HOUR_NS, NOTE_DIRTY
from pipelens_server._errors import InvalidBatchError, OverloadedError, RunIdReusedError
from pipelens_server._ingest._rows import RUNS, STEPS, Row, Rows, Table
from pipelens_server._ingest._scores import SCORE_COLUMNS
from pipelens_server._settings import Settings

log = structlog.get_logger("pipelens_server.ingest")

_ATTEMPTS = 3
#: Seconds over which a retried transaction's start is spread (times the attempt).
_RETRY_SPREAD_S = 0.05
Result = TypeVar("Result")


def _upsert_sql(table: Table, select: str, extra: dict[str, str], stamp: str = "") -> str:
    merged = {**extra, **table.merge_assignments()}
    names = list(merged)
    key = ", ".join(table.key)
    return (
        f"INSERT INTO {table.name} AS t ({', '.join([*table.key, *names])}) {select} "
        f"ON CONFLICT ({key}) DO UPDATE SET "
        + ", ".join(f"{name} = {expr}" for name, expr in merged.items())
        + stamp
        + f" WHERE ROW({', '.join(merged.values())}) "
        f"IS DISTINCT FROM ROW({', '.join(f't.{n}' for n in names)})"
    )


_RUN_VALUES = [
    "COALESCE(status, 'running')" if name == "status" else name
    for name in RUNS.column_names
    if name not in RUNS.key
]

# Every upsert returns the start of the rows it changed, whose hours it notes (``NOTE_DIRTY``)
# when the rollup job may have summed them already.
UPSERT_RUNS = (
    "WITH changed AS ("  # noqa: S608 - constants only
    + _upsert_sql(
        RUNS,
        f"SELECT run_id, {', '.join(_RUN_VALUES)} FROM {RUNS.stage} ORDER BY run_id",  # noqa: S608
        {},
        stamp=", updated_at = now()",
    )
    + " RETURNING start_ns) "
    + NOTE_DIRTY.format(rows="changed")
)
UPSERT_STEPS = (
    # Runs are upserted first, so a step learns its run's pipeline when the run event came first.
    # Only the batch's runs are looked up, one index probe each (a scalar subquery is never
    # turned into a join): a join of the staging table, which is never analysed, with ``runs``
    # was planned as a hash join over all of ``runs``, a cost that grew with the data.
    f"WITH touched AS MATERIALIZED (SELECT sr.run_id, "  # noqa: S608
    f"(SELECT r.pipeline FROM runs r WHERE r.run_id = sr.run_id) AS pipeline "
    f"FROM {RUNS.stage} sr), changed AS ("
    + _upsert_sql(
        STEPS,
        "SELECT s.run_id, s.key, r.pipeline, "  # noqa: S608
        + ", ".join(f"s.{n}" for n in STEPS.column_names if n not in STEPS.key)
        + f" FROM {STEPS.stage} s LEFT JOIN touched r ON r.run_id = s.run_id "
        "ORDER BY s.run_id, s.key",
        {"pipeline": "COALESCE(t.pipeline, excluded.pipeline)"},
    )
    + " RETURNING start_ns) "
    + NOTE_DIRTY.format(rows="changed")
)
# A step's start moves to an earlier piece's (``LEAST``): the hour it leaves is noted too, which
# the upsert cannot return. Only steps of the batch that start in an ended hour can, and each is
# looked up by its key (a scalar subquery, as in ``UPSERT_STEPS``): live ingest looks up none.
_MOVED = (
    "(SELECT (SELECT t.start_ns FROM steps t WHERE t.run_id = s.run_id AND t.key = s.key) "  # noqa: S608 - constants only
    f"AS start_ns, s.start_ns AS new_ns FROM {STEPS.stage} s "
    "WHERE s.start_ns < (SELECT pipelens_open_hour())) AS moved"
)
NOTE_MOVED_STEP_STARTS = NOTE_DIRTY.format(rows=_MOVED) + " AND start_ns > new_ns"
INSERT_PIPELINES = (
    f"INSERT INTO pipelines (name) SELECT DISTINCT pipeline FROM {RUNS.stage} "  # noqa: S608
    "WHERE pipeline IS NOT NULL ORDER BY 1 ON CONFLICT (name) DO NOTHING"
)
# Steps stored before their run event named the pipeline learn it now. They are locked first,
# in key order as the upserts lock theirs: an UPDATE takes rows in its plan's order (here the
# staging table's), so two batches naming the same runs in different orders deadlocked.
FILL_STEP_PIPELINES = (
    "WITH target AS (SELECT s.run_id, s.key, r.pipeline FROM steps s "  # noqa: S608 - constants only
    f"JOIN {RUNS.stage} st ON st.run_id = s.run_id JOIN runs r ON r.run_id = st.run_id "
    "WHERE st.pipeline IS NOT NULL AND s.pipeline IS NULL "
    "ORDER BY s.run_id, s.key FOR UPDATE OF s), changed AS ("
    "UPDATE steps AS s SET pipeline = target.pipeline FROM target "
    "WHERE s.run_id = target.run_id AND s.key = target.key RETURNING s.start_ns) "
    + NOTE_DIRTY.format(rows="changed")
)

# Name paths of the steps whose keys are made of their ids (migration 0016), over whole runs:
# the runs given (traces that did not come whole), and those whose paths ``_otlp_paths`` gave
# the rows but that hold steps the batch has not (their stored count is larger than the
# batch's): their stored siblings and ancestors count too. After the upsert, so that a batch
# that waited on another's rows of the run (a lock) counts them. The function answers the start
# times of the steps whose path it changed: their hours are noted.
FILL_STEP_PATHS = (
    "WITH changed AS (SELECT start_ns FROM pipelens_fill_step_paths("  # noqa: S608
    "%(runs)s::text[] || ARRAY(SELECT u.run_id "
    "FROM unnest(%(pathed)s::text[], %(counts)s::bigint[]) AS u(run_id, n) "
    "WHERE (SELECT count(*) FROM steps s WHERE s.run_id = u.run_id) > u.n)"
    ") AS f(start_ns)) " + NOTE_DIRTY.format(rows="changed")
)

# The pipeline of each run of the batch as stored (after ``UPSERT_RUNS``: what an inserted step
# takes, as ``UPSERT_STEPS`` gives it) and whether any step of it is stored: one index probe of
# ``runs`` and one of ``steps`` per run. The upsert locked every one of these rows (ON CONFLICT
# DO UPDATE locks the rows it does not change too), and every ingest upserts a step's run before
# the step: no other ingest can store a step of these runs until this transaction ends, so what
# this answers holds until then.
RUN_PROBE = (
    "SELECT r.run_id, r.pipeline, EXISTS (SELECT 1 FROM steps s WHERE s.run_id = r.run_id) "
    "FROM runs r WHERE r.run_id = ANY(%s::text[])"
)
# Of the batch's steps of runs that hold steps already, those stored: one probe each.
STORED_KEYS = (
    "SELECT u.run_id, u.key FROM unnest(%s::text[], %s::text[]) AS u(run_id, key) "
    "WHERE EXISTS (SELECT 1 FROM steps s WHERE s.run_id = u.run_id AND s.key = u.key)"
)
COPY_STEPS = f"COPY steps ({', '.join([*STEPS.column_names, 'pipeline'])}) FROM STDIN"
# The hours of the steps ``COPY``'d in, given as one start per hour: the upsert's ``NOTE_DIRTY``
# over the rows it inserted.
NOTE_COPIED_HOURS = NOTE_DIRTY.format(rows="unnest(%s::bigint[]) AS u(start_ns)")

# The runs of the batch whose start is not the stored run's of that id: second runs (``Rows``
# checks within the batch). A resend starts when the stored run did.
REUSED_RUN_IDS = (
    f"SELECT s.run_id, r.start_ns, s.start_ns FROM {RUNS.stage} s JOIN runs r "  # noqa: S608
    "ON r.run_id = s.run_id WHERE s.start_ns <> r.start_ns ORDER BY s.run_id"
)
DROP_STAGED_RUNS = f"DELETE FROM {RUNS.stage} WHERE run_id = ANY(%s)"  # noqa: S608

# A score is given once: the same (run, score id) again changes nothing.
INSERT_SCORES = (
    f"INSERT INTO scores ({', '.join(SCORE_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(SCORE_COLUMNS))}) "
    "ON CONFLICT (run_id, score_id) DO NOTHING"
)

#: The database's clock in nanoseconds since the epoch (as ``runs.last_seen_ns``'s default).
NOW_NS = "(extract(epoch FROM clock_timestamp()) * 1000000000)::bigint"
# Locked in key order, as the upserts lock theirs: heartbeat-only runs are in no staging table.
# A run is seen at the time it was heard of (``Rows.heard_of``), never later than the server's
# clock (a client's clock ahead cannot keep a run alive) and never earlier than already seen.
TOUCH_RUNS = (
    "UPDATE runs AS r SET last_seen_ns = heard.seen_ns FROM ("  # noqa: S608
    f"SELECT t.run_id, LEAST(h.at_ns, {NOW_NS}) AS seen_ns FROM runs t "
    "JOIN unnest(%(run_ids)s::text[], %(at_ns)s::bigint[]) AS h(run_id, at_ns) "
    "ON h.run_id = t.run_id WHERE t.status = 'running' "
    f"AND t.last_seen_ns < LEAST(h.at_ns, {NOW_NS}) - 1000000000 ORDER BY t.run_id FOR UPDATE OF t"
    ") AS heard WHERE r.run_id = heard.run_id"
)


async def create_staging_tables(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create this session's staging tables (the pool's ``configure`` callback)."""
    await conn.execute(RUNS.create_stage_sql())
    await conn.execute(STEPS.create_stage_sql())
    await conn.commit()


class IngestLimiter:
    """Bounds the ingest requests in flight; the next ones wait their turn in a bounded queue.

    Back-pressure must not become loss: the seed's clients in real-time mode fire one small POST
    per event, all at once, and never retry, so a request that finds every slot taken waits
    (first come, first served) rather than being refused. Only when ``max_queued`` requests
    already wait, or a request waited ``max_wait_s`` without getting a slot, is it answered 429
    with ``Retry-After`` (which our ``HttpTransport`` honours). A waiting request has not read its
    body yet, so the queue holds no request bodies in memory.
    """

    def __init__(
        self, max_inflight: int, retry_after_s: int, *, max_queued: int = 0, max_wait_s: float = 0
    ) -> None:
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.max_wait_s = max_wait_s
        self.retry_after_s = retry_after_s
        self.inflight = 0
        self.waiting = 0
        self._free = asyncio.Semaphore(max_inflight)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the slots for the block, waiting in the queue for one if need be.

        Raises:
            OverloadedError: the queue is full, or no slot freed up in ``max_wait_s``.
        """
        # One event loop: nothing runs between the checks and the counts.
        if self._free.locked() and self.waiting >= self.max_queued:
            raise OverloadedError(
                f"the {self.max_inflight} ingest slots are busy and the queue of "
                f"{self.max_queued} waiting requests is full: retry later, or raise "
                "--ingest-queue (PIPELENS_INGEST_QUEUE) or --max-inflight-ingests "
                "(PIPELENS_MAX_INFLIGHT_INGESTS)",
                self.retry_after_s,
            )
        self.waiting += 1
        try:
            async with asyncio.timeout(self.max_wait_s):
                await self._free.acquire()
        except TimeoutError:
            raise OverloadedError(
                f"none of the {self.max_inflight} ingest slots freed up in {self.max_wait_s:g} s: "
                "retry later, or raise --ingest-wait (PIPELENS_INGEST_WAIT) or "
                "--max-inflight-ingests (PIPELENS_MAX_INFLIGHT_INGESTS)",
                self.retry_after_s,
            ) from None
        finally:
            self.waiting -= 1
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1
            self._free.release()


def provide_limiter(state: State) -> IngestLimiter:
    """The app's bound on ingest requests in flight."""
    limiter: IngestLimiter = state.limiter
    return limiter


#: Handler parameter type of the limiter dependency (the app's own object: not validated).
LimiterDep: TypeAlias = NamedDependency[SkipValidation[IngestLimiter]]


async def ingest(
    request: Request[Any, Any, Any],
    pool: AsyncConnectionPool[Any],
    limiter: IngestLimiter,
    settings: Settings,
    to_rows: Callable[[bytes], tuple[Rows, Result]],
) -> Result:
    """The path every ingest endpoint shares: take a slot, read the body, turn it into rows
    (raising a 400 before anything is written) and store them in one transaction."""
    async with limiter.slot():
        body = await request.body()
        try:
            rows, result = to_rows(body)
        except RecursionError:  # every decoder recurses on nesting, skipped fields too
            raise InvalidBatchError(
                "invalid body: it nests deeper than about 1,000 levels - at `$`", path="$"
            ) from None
        await store(pool, rows, timeout=settings.pool_timeout_s)
    return result


async def store(
    pool: AsyncConnectionPool[Any], rows: Rows, *, timeout: float, copy_new_steps: bool = True
) -> None:
    """Write ``rows`` in one transaction (retried on deadlock); return once committed.

    ``copy_new_steps=False`` sends every step through the staging upsert, the path the direct
    ``COPY`` must match (the tests compare the two).
    """
    if not rows.runs and not rows.heartbeats and not rows.scores:
        return
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with pool.connection(timeout=timeout) as conn, conn.transaction():
                await _write(conn, rows, copy_new_steps=copy_new_steps)
            return
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
            if attempt == _ATTEMPTS:
                raise
            log.info("ingest transaction retried", attempt=attempt, reason=type(exc).__name__)
            # Apart, at random: the other transaction, often the same batch sent to another
            # process, commits first instead of meeting this one again at once.
            await asyncio.sleep(random.uniform(0, _RETRY_SPREAD_S * attempt))


async def _write(
    conn: psycopg.AsyncConnection[Any], rows: Rows, *, copy_new_steps: bool = True
) -> None:
    async with conn.cursor() as cur:
        if rows.runs:
            await _copy(cur, RUNS, rows.runs.values())
            await cur.execute(REUSED_RUN_IDS)
            for run_id, stored_ns, new_ns in await cur.fetchall():
                if not rows.partial:
                    raise RunIdReusedError(run_id, stored_ns, new_ns)
                rows.refused.setdefault(run_id, RunIdReusedError(run_id, stored_ns, new_ns))
            steps = rows.steps
            if rows.refused:  # a partial batch: the other runs are stored, these not at all
                await cur.execute(DROP_STAGED_RUNS, (list(rows.refused),))
                steps = {key: row for key, row in steps.items() if key[0] not in rows.refused}
            await cur.execute(INSERT_PIPELINES)
            await cur.execute(UPSERT_RUNS)
            rows.copied = 0
            if steps:
                rows.copied = await _write_steps(cur, steps, copy_new=copy_new_steps)
            await cur.execute(FILL_STEP_PIPELINES)
            if rows.path_runs or rows.pathed_runs:
                await cur.execute(FILL_STEP_PATHS, _path_runs(rows))
        scores = [row for key, row in sorted(rows.scores.items()) if key[0] not in rows.refused]
        if scores:
            await cur.executemany(INSERT_SCORES, scores)
        run_ids, at_ns = rows.heard_of()
        await cur.execute(TOUCH_RUNS, {"run_ids": run_ids, "at_ns": at_ns})


async def _write_steps(
    cur: psycopg.AsyncCursor[Any], steps: dict[tuple[str, str], Row], *, copy_new: bool
) -> int:
    """Store the batch's step rows (after ``UPSERT_RUNS``); return how many were ``COPY``'d
    straight into ``steps``.

    The new ones go in by ``COPY`` with their run's stored pipeline, inside a savepoint: should
    one be there after all (a writer that did not lock its run first), the savepoint is undone
    and every row takes the staging path, which gives what it always gave.
    """
    merged: Iterable[Row] = steps.values()
    copied = 0
    if copy_new:
        await cur.execute(RUN_PROBE, (list({run_id for run_id, _ in steps}),))
        pipelines: dict[str, str | None] = {}
        held: set[str] = set()
        for run_id, pipeline, has_steps in await cur.fetchall():
            pipelines[run_id] = pipeline
            if has_steps:
                held.add(run_id)
        stored: set[tuple[str, str]] = set()
        if held:
            keys = [key for key in steps if key[0] in held]
            await cur.execute(STORED_KEYS, ([k[0] for k in keys], [k[1] for k in keys]))
            stored = {(run_id, key) for run_id, key in await cur.fetchall()}
        # Key order, as the upsert inserts: two batches meet each other's keys in one order.
        new = sorted(key for key in steps if key not in stored)
        if new:
            try:
                async with cur.connection.transaction():
                    hours = await _copy_new(cur, steps, new, pipelines)
                await cur.execute(NOTE_COPIED_HOURS, (hours,))
                copied = len(new)
                merged = [steps[key] for key in stored]
            except psycopg.errors.UniqueViolation:
                log.info("steps stored meanwhile: the batch's steps take the upsert")
    if copied < len(steps):
        await _copy(cur, STEPS, merged)
        await cur.execute(NOTE_MOVED_STEP_STARTS)
        await cur.execute(UPSERT_STEPS)
    return copied


async def _copy_new(
    cur: psycopg.AsyncCursor[Any],
    steps: dict[tuple[str, str], Row],
    new: list[tuple[str, str]],
    pipelines: dict[str, str | None],
) -> list[int]:
    """``COPY`` the rows of ``new`` into ``steps``; return one start of each of their hours."""
    hours = set()
    start = STEPS.column_names.index("start_ns")
    async with cur.copy(COPY_STEPS) as copy:
        for key in new:
            row = steps[key]
            await copy.write_row((*row, pipelines.get(key[0])))
            if row[start] is not None:
                hours.add(row[start] // HOUR_NS)
    return [hour * HOUR_NS for hour in sorted(hours)]


def _path_runs(rows: Rows) -> dict[str, list[Any]]:
    """``FILL_STEP_PATHS``'s parameters, the refused runs left out."""
    pathed = sorted(run for run in rows.pathed_runs if run not in rows.refused)
    return {
        "runs": sorted(rows.path_runs - rows.refused.keys()),
        "pathed": pathed,
        "counts": [rows.pathed_runs[run] for run in pathed],
    }


async def _copy(cur: psycopg.AsyncCursor[Any], table: Table, rows: Iterable[Row]) -> None:
    async with cur.copy(table.copy_sql()) as copy:
        for row in rows:
            await copy.write_row(row)

"""New step rows ``COPY``'d straight into ``steps``: the same stored rows, dirty hours and
pipelines as the staging upsert, whatever the mix of new and stored steps, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from _pg_testkit import read_rows
from psycopg_pool import AsyncConnectionPool

from pipelens.events import Batch, Event, RunFinished, RunStarted, StepFinished, StepStarted
from pipelens_server._ingest._decode import batch_rows
from pipelens_server._ingest._store import create_staging_tables, store

SECOND = 1_000_000_000
HOUR = 3600 * SECOND
CHILDREN = 12


def _run(run_id: str, t0: int) -> list[Event]:
    """A finished run in emit order: a root step, ``CHILDREN`` children with records, the
    middle child spanning an hour's end, the run's end."""
    root = f"{run_id}-root"
    events: list[Event] = [
        RunStarted(run_id=run_id, pipeline="copy", start_ns=t0),
        StepStarted(run_id=run_id, step_id=root, key="main", name="main", start_ns=t0),
    ]
    for i in range(CHILDREN):
        start = t0 + (i + 1) * SECOND + (HOUR if i >= CHILDREN // 2 else 0)
        common: dict[str, Any] = {
            "run_id": run_id,
            "step_id": f"{run_id}-{i}",
            "parent_id": root,
            "key": f"main.work___{i}",
            "name": "work",
            "start_ns": start,
        }
        events.append(StepStarted(**common, inputs=f'{{"i":{i}}}'))
        events.append(
            StepFinished(
                **common,
                end_ns=start + 500,
                duration_ns=500,
                status="failed" if i == 3 else "completed",
                result=str(i),
                records=f'{{"n":{i}}}' if i % 2 else "{}",
            )
        )
    end = t0 + HOUR + (CHILDREN + 2) * SECOND
    events.append(
        StepFinished(
            run_id=run_id,
            step_id=root,
            key="main",
            name="main",
            start_ns=t0,
            end_ns=end,
            duration_ns=end - t0,
            status="completed",
        )
    )
    events.append(
        RunFinished(
            run_id=run_id,
            pipeline="copy",
            start_ns=t0,
            end_ns=end,
            duration_ns=end - t0,
            status="completed",
            step_count=CHILDREN + 1,
        )
    )
    return events


def _starts_then_rest(events: list[Event]) -> list[list[Event]]:
    starts = [e for e in events if isinstance(e, (RunStarted, StepStarted))]
    return [starts, [e for e in events if e not in starts]]


def _steps_before_their_run(events: list[Event]) -> list[list[Event]]:
    steps = [e for e in events if isinstance(e, (StepStarted, StepFinished))]
    return [steps, [e for e in events if e not in steps]]


#: Each scenario: a run's events as the batches they arrive in, one after the other.
SCENARIOS: dict[str, Callable[[list[Event]], list[list[Event]]]] = {
    "whole run in one batch": lambda e: [e],
    "a batch half overlapping a stored one": lambda e: [e[: len(e) // 2], e[len(e) // 4 :]],
    "finishes arriving for stored starts": _starts_then_rest,
    "steps stored before their run event": _steps_before_their_run,
    "a batch resent": lambda e: [e, e],
    "the run's end first, then the rest": lambda e: [e[-2:], e[:-2]],
}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(
        database_url, min_size=1, max_size=2, open=False, configure=create_staging_tables
    ) as opened:
        yield opened


def _rows_of(database_url: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """A run's stored rows, its id taken out of them (two runs of one shape compare equal)."""
    rows = read_rows(database_url, run_id)
    for table in ("runs", "steps"):
        for row in rows[table]:
            for column in ("run_id", "step_id", "parent_id"):
                if isinstance(row.get(column), str):
                    row[column] = row[column].removeprefix(run_id)
    del rows["pipelines"]
    return rows


def _dirty_hours(database_url: str) -> list[int]:
    """The hours noted dirty since the last call (which empties the notes)."""
    with psycopg.connect(database_url) as conn:
        hours = [r[0] for r in conn.execute("SELECT DISTINCT hour_ns FROM rollup_dirty ORDER BY 1")]
        conn.execute("DELETE FROM rollup_dirty")
    return hours


async def _deliver(
    pool: AsyncConnectionPool[Any], batches: list[list[Event]], *, copy_new_steps: bool
) -> list[int]:
    copied = []
    for batch in batches:
        rows = batch_rows(Batch(events=batch))
        await store(pool, rows, timeout=30, copy_new_steps=copy_new_steps)
        copied.append(rows.copied)
    return copied


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_the_direct_copy_stores_what_the_upsert_stores(
    pool: AsyncConnectionPool[Any], database_url: str, scenario: str
) -> None:
    """The same batches through the upsert alone and through the direct COPY leave the same
    runs and steps and note the same dirty hours (the run started two hours ago); every step not
    stored yet is COPY'd, the others merged."""
    t0 = time.time_ns() - 3 * HOUR
    split = SCENARIOS[scenario]
    await _deliver(pool, split(_run("ref", t0)), copy_new_steps=False)
    reference_hours = _dirty_hours(database_url)
    copied = await _deliver(pool, split(_run("new", t0)), copy_new_steps=True)
    stored: set[tuple[str, str]] = set()
    expected_copied = []
    for batch in split(_run("new", t0)):
        keys = {(e.run_id, e.key) for e in batch if isinstance(e, (StepStarted, StepFinished))}
        expected_copied.append(len(keys - stored))
        stored |= keys
    assert (reference_hours, _rows_of(database_url, "ref")) == (
        _dirty_hours(database_url),
        _rows_of(database_url, "new"),
    )
    assert len(reference_hours) == 2
    assert expected_copied == copied


async def test_a_partial_batch_copies_none_of_a_refused_runs_steps(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    """A batch of two runs, one of them naming a stored run's id with another start: the other
    run's steps are COPY'd, the refused run's not stored at all."""
    t0 = time.time_ns() - 60 * SECOND
    await _deliver(pool, [_run("taken", t0)[:1]], copy_new_steps=True)
    rows = batch_rows(Batch(events=[*_run("taken", t0 + 5), *_run("fine", t0)]), partial=True)
    await store(pool, rows, timeout=30)
    assert (list(rows.refused), rows.copied) == (["taken"], CHILDREN + 1)
    stored = read_rows(database_url)
    assert [(s["run_id"], s["key"]) for s in stored["steps"] if s["run_id"] == "taken"] == []


async def _a_backend_waits_for_a_lock(database_url: str) -> bool:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        ).fetchone()
    return row is not None and row[0] > 0


_RAW_STEP = (
    "INSERT INTO steps (run_id, key, step_id, name, status, start_ns, records) "
    "VALUES (%s, 'main.work___2', %s, 'work', 'running', %s, '{\"raw\": 1}')"
)


@pytest.mark.timeout(60)
async def test_a_step_stored_after_the_probe_sends_the_batch_through_the_upsert(
    pool: AsyncConnectionPool[Any], database_url: str
) -> None:
    """A writer that does not lock the run first inserts one of the batch's steps, uncommitted:
    the probe cannot see it, the COPY waits for it and, once it commits, meets it. The savepoint
    is undone and the whole batch merges with it: the rows the upsert gives after that insert."""
    t0 = time.time_ns() - 60 * SECOND
    with psycopg.connect(database_url) as conn:
        conn.execute(_RAW_STEP, ("ref", "ref-2", t0 - SECOND))
    await _deliver(pool, [_run("ref", t0)], copy_new_steps=False)
    other = await psycopg.AsyncConnection.connect(database_url)
    try:
        await other.execute(_RAW_STEP, ("new", "new-2", t0 - SECOND))
        rows = batch_rows(Batch(events=_run("new", t0)))
        ingest = asyncio.create_task(store(pool, rows, timeout=30))
        while not await _a_backend_waits_for_a_lock(database_url):
            await asyncio.sleep(0.02)
        await other.commit()
    finally:
        await other.close()
    await ingest
    assert rows.copied == 0
    assert _rows_of(database_url, "ref") == _rows_of(database_url, "new")

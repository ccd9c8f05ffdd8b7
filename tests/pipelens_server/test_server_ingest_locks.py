"""The order in which ingest's statements lock stored steps, on a real PostgreSQL: two batches
that lock the same steps in different orders deadlock (PostgreSQL aborts one of them)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from pipelens_server._ingest._rows import RUNS
from pipelens_server._ingest._store import FILL_STEP_PIPELINES

# Three runs whose steps were stored before their run events (no pipeline yet): x of the first,
# m and n of the second, y of the third.
_STEPS = [("fill-1", "x"), ("fill-2", "m"), ("fill-2", "n"), ("fill-3", "y")]


def _store_steps_without_pipeline(conninfo: str) -> None:
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO runs (run_id, pipeline, status, start_ns) "
            "SELECT r, 'fill', 'running', 1 FROM unnest(%s::text[]) r",
            (sorted({run for run, _ in _STEPS}),),
        )
        cur.executemany(
            "INSERT INTO steps (run_id, key, step_id, name, status, start_ns) "
            "VALUES (%s, %s, %s, %s, 'completed', 1)",
            [(run, key, key, key) for run, key in _STEPS],
        )


def _fill(conninfo: str, runs: list[str], started: threading.Event, out: list[Any]) -> None:
    """Stage ``runs`` (in this order, with their pipeline) and run ``FILL_STEP_PIPELINES``."""
    try:
        with psycopg.connect(conninfo) as conn:
            conn.execute(RUNS.create_stage_sql())
            conn.execute("SET deadlock_timeout = '100ms'")
            for run in runs:
                conn.execute(
                    f"INSERT INTO {RUNS.stage} (run_id, pipeline) VALUES (%s, 'fill')",
                    (run,),
                )
            started.set()
            conn.execute(FILL_STEP_PIPELINES)
            conn.commit()
        out.append("committed")
    except psycopg.errors.DeadlockDetected as exc:
        out.append(exc)


@pytest.mark.timeout(60)
def test_two_fills_of_the_same_steps_in_opposite_orders_do_not_deadlock(
    database_url: str,
) -> None:
    """Two batches naming the same three runs in opposite orders both fill their steps'
    pipeline: each takes the steps in (run_id, key) order. A third session holds ``m`` meanwhile,
    so that each batch has taken its first steps before either goes on (in stage order the first
    would take x and wait for m, the second take y and wait for m, then each wait for the other)."""
    _store_steps_without_pipeline(database_url)
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM steps WHERE run_id = 'fill-2' AND key = 'm' FOR UPDATE")
        outcomes: list[Any] = []
        threads = []
        for order in (["fill-1", "fill-2", "fill-3"], ["fill-3", "fill-2", "fill-1"]):
            started = threading.Event()
            thread = threading.Thread(target=_fill, args=(database_url, order, started, outcomes))
            thread.start()
            started.wait(30)
            threads.append(thread)
        # Both are waiting for m (a lock wait shows in pg_locks), then m is let go.
        with psycopg.connect(database_url, autocommit=True) as watcher:
            for _ in range(3000):
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ).fetchone()
                if waiting and waiting[0] >= 2:
                    break
                threading.Event().wait(0.01)
        holder.rollback()
        for thread in threads:
            thread.join(30)
    assert outcomes == ["committed", "committed"]
    with psycopg.connect(database_url) as conn:
        pipelines = conn.execute("SELECT DISTINCT pipeline FROM steps").fetchall()
    assert pipelines == [("fill",)]

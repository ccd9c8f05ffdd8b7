"""The pictures' reads on a real PostgreSQL: the runs timeline past its point cap."""

from __future__ import annotations

import asyncio
import time

import msgspec
from _dashboard_kit import MS, SECOND, at, ingest
from _pg_testkit import T0, run_events
from litestar import Litestar
from litestar.testing import TestClient
from psycopg_pool import AsyncConnectionPool

from pipelens.events import StepFinished
from pipelens_server._read._pictures import run_points
from pipelens_server._read._search import RunSearch


def test_past_the_cap_each_bucket_keeps_its_slowest_and_its_slowest_failed(
    client: TestClient[Litestar], database_url: str
) -> None:
    """Past the cap, of the three runs of one time bucket the slowest completed and the failed
    one are drawn; the total still counts every run."""
    # 1,000 s over 400 buckets: r0, r1 and r2 share the first bucket, r3 and r4 have their own.
    for i, (start_s, scale) in enumerate(((0, 1), (1, 5), (2, 3), (3, 2), (1000, 1))):
        ingest(client, at(run_events(f"r{i}", fail=i == 2), T0 + start_s * SECOND, scale * MS))

    async def read() -> list[str]:
        async with AsyncConnectionPool(database_url, open=False) as pool:
            found = await run_points(
                pool,
                pipeline="rag",
                since_ns=T0 - 1,
                until_ns=None,
                now_ns=T0 + 3600 * SECOND,
                status=None,
                search=RunSearch(),
                max_points=2,
            )
        assert found.total == 5
        return [p.run_id for p in found.points]

    assert asyncio.run(read()) == ["r1", "r2", "r3", "r4"]


def test_the_step_histogram_takes_durations_past_bigint_products(
    client: TestClient[Litestar],
) -> None:
    """A stored duration near the wire's largest (2**62 ns) once overflowed the bin arithmetic
    (bigint duration x bins): the step stats page must still answer, the long step in the last
    bin."""
    huge = 2**62
    start = time.time_ns() - 60 * SECOND
    for i, duration in enumerate((1, 2, 3, huge)):
        events = [
            msgspec.structs.replace(e, duration_ns=duration, end_ns=e.start_ns + duration)
            if isinstance(e, StepFinished) and e.key == "answer.retrieve"
            else e
            for e in at(run_events(f"h{i}"), start + i * SECOND, MS)
        ]
        ingest(client, events)
    page = client.get("/pipelines/rag/steps/answer.retrieve", params={"range": "24h"})
    assert page.status_code == 200, page.text
    assert "histogram" in page.text

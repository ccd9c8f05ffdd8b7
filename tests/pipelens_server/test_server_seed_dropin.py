"""The seed's clients lose nothing here: records its Python client sends oddly, bursts of
real-time POSTs that are never retried, and the pipeline finish that repairs what events missed.
Every case is sent to a real ``pipelens serve`` (on the test's own database) over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _pg_testkit import read_rows, serve

Client = httpx.Client
MS = 1_700_000_000_000  # epoch milliseconds


def _step(key: str, *, end: int | None, records: dict[str, Any]) -> dict[str, Any]:
    """A step as the seed's Python client sends it (every field present, ``null`` when unset)."""
    time = {"startTs": MS, "endTs": end, "timeUsageMs": None if end is None else end - MS}
    name = key.rsplit(".", 1)[-1]
    return {"name": name, "key": key, "time": time, "records": records, "result": None,
            "error": None}  # fmt: skip


def _pipeline(run_id: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {**steps[0], "logVersion": 1, "runId": run_id, "steps": steps}


@pytest.fixture
def client(database_url: str) -> Iterator[httpx.Client]:
    """An HTTP client of a real ``pipelens serve`` on the test's database."""
    with serve("--database-url", database_url) as (_, url), httpx.Client(base_url=url) as http:
        yield http


def _records(database_url: str, run_id: str) -> dict[str, Any]:
    return {s["key"]: s["records"] for s in read_rows(database_url, run_id)["steps"]}


# The seed's Python client shares one TimeMeta between a step's events: by the time its start is
# sent, it already carries the end, while its records are still empty.
ROOT = _step("p", end=None, records={})
START = _step("p.s", end=MS + 10, records={})
FINISH = _step("p.s", end=MS + 10, records={"k": "v"})


def _op(operation: str, step: dict[str, Any]) -> dict[str, Any]:
    return {"type": "step", "operation": operation, "runId": "r1", "step": step}


PIPELINE_START = {"type": "pipeline", "operation": "start", "meta": _pipeline("r1", [ROOT])}


@pytest.mark.parametrize("batches", [1, 2], ids=["one-batch", "two-batches"])
def test_a_start_that_carries_its_end_keeps_the_finish_records(
    client: Client, database_url: str, batches: int
) -> None:
    """[pipeline start, step start {endTs, records {}}, step finish {records}] stores the
    finish's records, in one batch or split after the start."""
    items = [PIPELINE_START, _op("start", START), _op("finish", FINISH)]
    for part in [items] if batches == 1 else [items[:2], items[2:]]:
        assert client.post("/api/ingestion/batch", json=part).status_code == 200
    assert _records(database_url, "r1")["p.s"] == {"k": "v"}


def test_a_realtime_start_after_its_finish_keeps_the_records(
    client: Client, database_url: str
) -> None:
    """Real-time POSTs may land finish first: the late start's empty records change nothing."""
    client.post("/api/ingestion/pipeline/start", json=_pipeline("r1", [ROOT]))
    client.post("/api/ingestion/step/finish", json={"runId": "r1", "step": FINISH})
    client.post("/api/ingestion/step/start", json={"runId": "r1", "step": START})
    assert _records(database_url, "r1")["p.s"] == {"k": "v"}


def test_the_pipeline_finish_repairs_records_the_step_events_missed(
    client: Client, database_url: str
) -> None:
    """A finish that carried no records is repaired by the pipeline finish's copy of the step."""
    client.post("/api/ingestion/pipeline/start", json=_pipeline("r1", [ROOT]))
    client.post("/api/ingestion/step/finish", json={"runId": "r1", "step": START})
    root_done = _step("p", end=MS + 20, records={})
    body = {"pipelineMeta": _pipeline("r1", [root_done, FINISH]), "status": "completed"}
    assert client.post("/api/ingestion/pipeline/finish", json=body).status_code == 200
    assert _records(database_url, "r1") == {"p": {}, "p.s": {"k": "v"}}


STEPS_IN_BURST = 100


async def _burst(url: str, run_id: str) -> list[int]:
    """A seed real-time run of zero-work steps: every POST fired at once, none retried."""
    steps = [_step(f"burst.s{i}", end=MS + 1, records={"i": i}) for i in range(STEPS_IN_BURST)]
    root = _step("burst", end=MS + 2, records={})
    posts = [
        ("/api/ingestion/pipeline/start", _pipeline(run_id, [_step("burst", end=None, records={})]))
    ]
    for step in steps:
        posts += [
            ("/api/ingestion/step/start", {"runId": run_id, "step": step}),
            ("/api/ingestion/step/finish", {"runId": run_id, "step": step}),
        ]
    posts.append(("/api/ingestion/pipeline/finish",
                  {"pipelineMeta": _pipeline(run_id, [root]), "status": "completed"}))  # fmt: skip
    limits = httpx.Limits(max_connections=len(posts))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        answers = await asyncio.gather(*(http.post(path, json=body) for path, body in posts))
    return [a.status_code for a in answers]


def test_a_realtime_burst_that_is_never_retried_is_stored_whole(database_url: str) -> None:
    """200 concurrent step POSTs of a real ``pipelens serve``: every one accepted, every step
    and record stored, the run completed."""
    with serve("--database-url", database_url) as (_, url):
        codes = asyncio.run(_burst(url, "burst-1"))
        run = httpx.get(f"{url}/api/v1/runs/burst-1").json()
    assert sorted(set(codes)) == [200, 201]
    steps = {s["key"]: s for s in run["steps"]}
    assert (run["run"]["status"], len(steps)) == ("completed", STEPS_IN_BURST + 1)
    assert {s["status"] for s in steps.values()} == {"completed"}
    assert [steps[f"burst.s{i}"]["records"] for i in range(STEPS_IN_BURST)] == [
        {"i": i} for i in range(STEPS_IN_BURST)
    ]

"""Re-using a run id (issue 9): a second run under the id of a stored run is refused, named, and
costs its own events alone (``/api/v1/events`` stores the rest of the batch and lists the refused
runs; a seed request, one run, is a 409); a resend of the same run's events changes nothing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from _pg_testkit import JSON, live_server, read_rows, run_events
from litestar import Litestar
from litestar.testing import TestClient

import pipelens
from pipelens import HttpTransport, Pipeline, Step
from pipelens.events import Batch, Event, encode_json
from pipelens_server import Settings, create_app

Client = TestClient[Litestar]
LATER = 10**12  # a second run, a quarter of an hour after the first


def _later(events: list[Event]) -> list[Event]:
    """The same run id and steps, started ``LATER``: a second run of the same program."""
    return [msgspec.structs.replace(e, start_ns=e.start_ns + LATER, **(
        {"end_ns": e.end_ns + LATER} if getattr(e, "end_ns", None) is not None else {}
    )) for e in events]  # fmt: skip


def _post(client: Client, events: list[Event]) -> Any:
    body = encode_json(Batch(events=events))
    return client.post("/api/v1/events", content=body, headers=JSON)


def _run_ids(database_url: str) -> set[str]:
    return {row["run_id"] for row in read_rows(database_url)["runs"]}


def test_a_second_run_under_a_stored_run_id_is_refused_alone_and_named(
    client: Client, database_url: str
) -> None:
    """The second run of ``run-1`` (a later start) is refused, named, and costs its own events
    alone: the other run of the same batch is stored. The first run is as it was, and a resend
    of the first run's batch is accepted and changes nothing."""
    first = run_events("run-1")
    assert _post(client, first).status_code == 202
    stored = read_rows(database_url)
    second = _post(client, _later(first) + run_events("other-run"))
    assert second.status_code == 202, second.text
    answer = second.json()
    [refused] = answer["refused"]
    assert (refused["run_id"], refused["events"]) == ("run-1", len(first))
    assert "own run_id" in refused["detail"]
    assert (answer["accepted"], answer["runs"]) == (len(run_events("other-run")), 1)
    assert _run_ids(database_url) == {"run-1", "other-run"}
    run_1 = [r for r in read_rows(database_url)["runs"] if r["run_id"] == "run-1"]
    assert run_1 == [r for r in stored["runs"] if r["run_id"] == "run-1"]  # untouched
    after = read_rows(database_url)
    assert "refused" not in _post(client, first).json()
    assert read_rows(database_url) == after


def test_two_runs_under_one_id_in_one_batch_are_refused_the_rest_stored(
    client: Client, database_url: str
) -> None:
    """Two starts of ``run-1`` in the same batch: neither can be told from the other, so
    ``run-1`` is refused whole; the batch's other run is stored."""
    events = run_events("run-1")
    response = _post(client, events + _later(events) + run_events("other-run"))
    assert response.status_code == 202, response.text
    [refused] = response.json()["refused"]
    assert (refused["run_id"], refused["events"]) == ("run-1", 2 * len(events))
    assert _run_ids(database_url) == {"other-run"}


def test_a_seed_pipeline_started_again_under_its_run_id_is_a_409(
    client: Client, database_url: str
) -> None:
    """The seed README's ``{"run_id": "run-1"}`` twice: the second ``/pipeline/start`` (a later
    ``startTs``) is a 409 naming ``run-1``; resending the first start is still a 201."""
    ms = 1_700_000_000_000
    root = {"name": "demo", "key": "demo", "time": {"startTs": ms}, "records": {}}
    start = {**root, "logVersion": 1, "runId": "run-1", "steps": [root]}
    done = {**root, "time": {"startTs": ms, "endTs": ms + 5, "timeUsageMs": 5}}
    finish = {"pipelineMeta": {**start, **done, "steps": [done]}, "status": "completed"}
    assert client.post("/api/ingestion/pipeline/start", json=start).status_code == 201
    assert client.post("/api/ingestion/pipeline/finish", json=finish).status_code == 200
    stored = read_rows(database_url)
    again = {**start, "time": {"startTs": ms + 60_000}}
    response = client.post("/api/ingestion/pipeline/start", json=again)
    assert response.status_code == 409, response.text
    assert "run-1" in response.json()["detail"]
    assert client.post("/api/ingestion/pipeline/start", json=start).status_code == 201
    assert read_rows(database_url) == stored


class _Warnings(logging.Handler):
    """The messages logged to ``pipelens`` (uvicorn's logging set-up drops pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_our_client_counts_and_warns_the_refused_second_run(database_url: str) -> None:
    """The seed README's ``Pipeline(..., {"run_id": "run-1"})`` run twice through our client
    and a real server: the first run is stored whole, the second is refused (the server's 202
    lists it), counted in ``transport_stats().rejected`` and warned once with the reason."""

    async def logic(st: Step) -> str:
        await st.step("load", lambda _: asyncio.sleep(0, "text"))
        return "done"

    warnings = _Warnings()
    logging.getLogger("pipelens").addHandler(warnings)
    app = create_app(Settings(database_url=database_url))
    with live_server(app) as url:
        transport = HttpTransport(url, spool=False)
        pipelens.configure(transport=transport)
        try:
            for _ in range(2):
                pipeline = Pipeline("readme", {"run_id": "run-1"})
                assert asyncio.run(pipeline.track(logic)) == "done"
                transport.flush(30)
            stats = pipelens.transport_stats()
        finally:
            pipelens.configure(transport=None)
            transport.close()
            logging.getLogger("pipelens").removeHandler(warnings)
    assert stats.rejected > 0
    (refusal,) = [m for m in warnings.messages if "refused" in m]
    assert "run-1" in refusal
    rows = read_rows(database_url)
    assert [run["run_id"] for run in rows["runs"]] == ["run-1"]
    assert sorted(step["key"] for step in rows["steps"]) == ["readme", "readme.load"]

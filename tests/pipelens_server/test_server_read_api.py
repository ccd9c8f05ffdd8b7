"""GET /api/v1/runs and /api/v1/runs/{run_id}, and the health probes."""

from __future__ import annotations

import msgspec
import psycopg
from _pg_testkit import MSGPACK, T0, msgpack_body, run_events
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import Event, RunFinished, RunStarted

Client = TestClient[Litestar]


def _shifted(events: list[Event], offset: int) -> list[Event]:
    """The same run started ``offset`` ns later (only the run events matter for ordering; a
    run never ends before it starts)."""
    return [
        msgspec.structs.replace(e, start_ns=e.start_ns + offset, end_ns=e.end_ns + offset)
        if isinstance(e, RunFinished)
        else msgspec.structs.replace(e, start_ns=e.start_ns + offset)
        if isinstance(e, RunStarted)
        else e
        for e in events
    ]


def _ingest(client: Client, events: list[Event]) -> None:
    response = client.post("/api/v1/events", content=msgpack_body(events), headers=MSGPACK)
    assert response.status_code == 202


def test_runs_are_listed_newest_first(client: Client) -> None:
    """The run list is ordered by start time, newest first."""
    _ingest(client, _shifted(run_events("old"), 0))
    _ingest(client, _shifted(run_events("new"), 1000))
    _ingest(client, _shifted(run_events("mid"), 500))
    response = client.get("/api/v1/runs")
    assert response.status_code == 200
    assert [r["run_id"] for r in response.json()["runs"]] == ["new", "mid", "old"]


def test_run_list_filters_by_pipeline_status_and_limit(client: Client) -> None:
    """``pipeline``, ``status`` and ``limit`` narrow the list."""
    _ingest(client, run_events("a1", "alpha"))
    _ingest(client, _shifted(run_events("a2", "alpha", fail=True), 10))
    _ingest(client, run_events("b1", "beta"))
    by_pipeline = client.get("/api/v1/runs", params={"pipeline": "alpha"}).json()["runs"]
    assert sorted(r["run_id"] for r in by_pipeline) == ["a1", "a2"]
    failed = client.get("/api/v1/runs", params={"status": "failed"}).json()["runs"]
    assert [r["run_id"] for r in failed] == ["a2"]
    both = client.get("/api/v1/runs", params={"pipeline": "alpha", "status": "completed"})
    assert [r["run_id"] for r in both.json()["runs"]] == ["a1"]
    assert len(client.get("/api/v1/runs", params={"limit": 2}).json()["runs"]) == 2


def test_run_list_refuses_bad_filters(client: Client) -> None:
    """An unknown status or an out-of-range limit is a 400."""
    assert client.get("/api/v1/runs", params={"status": "sleeping"}).status_code == 400
    assert client.get("/api/v1/runs", params={"limit": 0}).status_code == 400
    assert client.get("/api/v1/runs", params={"limit": 5000}).status_code == 400


def test_run_detail_has_the_run_and_every_step_with_keys(client: Client) -> None:
    """The detail shows the run and all its steps in start order, captured values as JSON."""
    _ingest(client, run_events("r1", fail=True))
    response = client.get("/api/v1/runs/r1")
    assert response.status_code == 200
    body = response.json()
    run = body["run"]
    del run["updated_at"]
    assert run == {
        "run_id": "r1",
        "pipeline": "rag",
        "status": "failed",
        "start_ns": T0,
        "end_ns": T0 + 300,
        "duration_ns": 300,
        "error": {"type": "ValueError", "message": "bad doc", "traceback": "Traceback ..."},
        "step_count": 3,
        "dropped_events": 0,
        "attributes": {"env": "test"},
        "llm_usage": None,
        "tags": [],
        "user_id": None,
        "session_id": None,
        "llm": None,
        "scores": [],
    }
    assert [s["key"] for s in body["steps"]] == ["answer", "answer.retrieve", "answer.rerank"]
    retrieve = body["steps"][1]
    assert retrieve == {
        "key": "answer.retrieve",
        "step_id": "r1-a",
        "parent_id": "r1-root",
        "name": "retrieve",
        "kind": "step",
        "status": "completed",
        "start_ns": T0 + 10,
        "end_ns": T0 + 110,
        "duration_ns": 100,
        "inputs": {"k": 3},
        "result": ["d1", "d2"],
        "records": {"n_docs": 2},
        "error": None,
        "llm": None,
    }


def test_unknown_run_is_a_404_naming_it(client: Client) -> None:
    """A run id nobody sent is a JSON 404 that names the id."""
    response = client.get("/api/v1/runs/nope")
    assert response.status_code == 404
    assert response.json() == {"status_code": 404, "detail": "no run with run_id 'nope'"}


def test_health_probes_answer(client: Client) -> None:
    """``/healthz`` says the process is up and ``/readyz`` that the database answers."""
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_unexpected_errors_are_a_json_500(client: Client, database_url: str) -> None:
    """A failure nobody planned for (here: the schema dropped under the server) is a JSON 500."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE steps CASCADE")  # with the rollups view (0013)
    ingest = client.post("/api/v1/events", content=msgpack_body(run_events("r1")), headers=MSGPACK)
    assert ingest.json() == {"status_code": 500, "detail": "Internal Server Error"}

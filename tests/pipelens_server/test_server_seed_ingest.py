"""The seed's /api/ingestion/* endpoints: its shapes, status codes and arrival orders."""

from __future__ import annotations

import random
from typing import Any

import pytest
from _pg_testkit import read_rows
from litestar import Litestar
from litestar.testing import TestClient

Client = TestClient[Litestar]
MS = 1_700_000_000_000  # epoch milliseconds
NS = 1_000_000


def _step(key: str, start: int, end: int | None, *, python: bool, **extra: Any) -> dict[str, Any]:
    """A seed StepMeta: Python sends every field (``null`` when unset), TypeScript omits them."""
    meta: dict[str, Any] = {
        "name": key.rsplit(".", 1)[-1],
        "key": key,
        "time": {"startTs": start},
        "records": extra.pop("records", {}),
    }
    if end is not None:
        meta["time"].update(endTs=end, timeUsageMs=end - start)
    meta.update(extra)
    if python:
        meta["time"] = {"startTs": None, "endTs": None, "timeUsageMs": None, **meta["time"]}
        meta = {"result": None, "error": None, **meta}
    return meta


def _pipeline(run_id: str, steps: list[dict[str, Any]], *, python: bool) -> dict[str, Any]:
    root = steps[0]
    return {**root, "logVersion": 1, "runId": run_id, "steps": steps}


def _realtime_posts(run_id: str, *, python: bool) -> list[tuple[str, dict[str, Any]]]:
    """The six POSTs of a seed run with one child step, as its real-time mode sends them."""
    root_done = _step("demo", MS, MS + 30, python=python, result="done")
    child_done = _step(
        "demo.child", MS + 5, MS + 20, python=python, result=[1, 2], records={"n": 2}
    )
    root_open = _step("demo", MS, None, python=python)
    return [
        ("/api/ingestion/pipeline/start", _pipeline(run_id, [root_open], python=python)),
        ("/api/ingestion/step/start", {"runId": run_id, "step": root_open}),
        # Bodies are built when sent: this start already carries the child's end and result.
        ("/api/ingestion/step/start", {"runId": run_id, "step": child_done}),
        ("/api/ingestion/step/finish", {"runId": run_id, "step": child_done}),
        ("/api/ingestion/step/finish", {"runId": run_id, "step": root_done}),
        ("/api/ingestion/pipeline/finish", {
            "pipelineMeta": _pipeline(run_id, [root_done, child_done], python=python),
            "status": "completed",
        }),
    ]  # fmt: skip


# The order observed from the TypeScript client (PROTOCOL.md): indexes into _realtime_posts.
OBSERVED_ORDER = [3, 2, 4, 0, 1, 5]

EXPECTED_RUN = {
    "pipeline": "demo",
    "status": "completed",
    "start_ns": MS * NS,
    "end_ns": (MS + 30) * NS,
    "duration_ns": 30 * NS,
    "error_type": None,
    "error_message": None,
    "error_traceback": None,
    "step_count": 2,
    "dropped_events": None,
    "attributes": None,
    "llm_usage": None,
    "tags": None,
    "user_id": None,
    "session_id": None,
}
EXPECTED_STEPS = [
    {
        "key": "demo",
        "pipeline": "demo",
        "step_id": "demo",
        "parent_id": None,
        "name": "demo",
        "kind": "step",
        "status": "completed",
        "start_ns": MS * NS,
        "end_ns": (MS + 30) * NS,
        "duration_ns": 30 * NS,
        "inputs": None,
        "result": "done",
        "records": {},
        "error_type": None,
        "error_message": None,
        "error_traceback": None,
        "llm": None,
        "path": None,  # a name path is stored for OTLP spans only
    },
    {
        "key": "demo.child",
        "pipeline": "demo",
        "step_id": "demo.child",
        "parent_id": "demo",
        "name": "child",
        "kind": "step",
        "status": "completed",
        "start_ns": (MS + 5) * NS,
        "end_ns": (MS + 20) * NS,
        "duration_ns": 15 * NS,
        "inputs": None,
        "result": [1, 2],
        "records": {"n": 2},
        "error_type": None,
        "error_message": None,
        "error_traceback": None,
        "llm": None,
        "path": None,  # a name path is stored for OTLP spans only
    },
]


def _stored(database_url: str, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows = read_rows(database_url, run_id)
    (run,) = rows["runs"]
    assert run.pop("run_id") == run_id
    steps = rows["steps"]
    for step in steps:
        assert step.pop("run_id") == run_id
    return run, steps


@pytest.mark.parametrize("python", [True, False], ids=["python-nulls", "typescript-missing"])
def test_realtime_posts_in_the_observed_order_store_the_run(
    client: Client, database_url: str, python: bool
) -> None:
    """The six real-time POSTs, in the order the TypeScript client was seen to send them, give
    the finished run and both steps; each POST gets the seed's status code."""
    posts = _realtime_posts("run-1", python=python)
    codes = [client.post(*posts[i][:1], json=posts[i][1]).status_code for i in OBSERVED_ORDER]
    assert codes == [200, 201, 200, 201, 201, 200]
    assert _stored(database_url, "run-1") == (EXPECTED_RUN, EXPECTED_STEPS)


def test_any_order_of_the_realtime_posts_converges(client: Client, database_url: str) -> None:
    """Shuffled and repeated, the real-time POSTs still give the same rows."""
    rng = random.Random(3)
    for n in range(8):
        run_id = f"run-{n}"
        posts = _realtime_posts(run_id, python=bool(n % 2))
        order = [*range(6), *rng.sample(range(6), 2)]
        rng.shuffle(order)
        for i in order:
            assert client.post(posts[i][0], json=posts[i][1]).status_code in {200, 201}
        assert _stored(database_url, run_id) == (EXPECTED_RUN, EXPECTED_STEPS)


@pytest.mark.parametrize("python", [True, False], ids=["python-nulls", "typescript-missing"])
def test_batched_mode_stores_the_run(client: Client, database_url: str, python: bool) -> None:
    """The batched mode's single array (pipeline start, steps, pipeline finish) is a 200."""
    root_open, child_open = (
        _step("demo", MS, None, python=python),
        _step("demo.child", MS + 5, None, python=python),
    )
    root_done = _step("demo", MS, MS + 30, python=python, result="done")
    child_done = _step(
        "demo.child", MS + 5, MS + 20, python=python, result=[1, 2], records={"n": 2}
    )
    body = [
        {"type": "pipeline", "operation": "start",
         "meta": _pipeline("b1", [root_open], python=python)},
        {"type": "step", "operation": "start", "runId": "b1", "step": child_open},
        {"type": "step", "operation": "start", "runId": "b1", "step": root_open},
        {"type": "step", "operation": "finish", "runId": "b1", "step": child_done},
        {"type": "step", "operation": "finish", "runId": "b1", "step": root_done},
        {"type": "pipeline", "operation": "finish", "status": "completed",
         "meta": _pipeline("b1", [root_done, child_done], python=python)},
    ]  # fmt: skip
    response = client.post("/api/ingestion/batch", json=body)
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert _stored(database_url, "b1") == (EXPECTED_RUN, EXPECTED_STEPS)


def test_pipeline_start_answers_201_with_the_run_id(client: Client) -> None:
    """``/pipeline/start`` answers ``201 {success: true, runId}``."""
    body = _pipeline("r9", [_step("demo", MS, None, python=False)], python=False)
    response = client.post("/api/ingestion/pipeline/start", json=body)
    assert (response.status_code, response.json()) == (201, {"success": True, "runId": "r9"})


@pytest.mark.parametrize("missing", ["runId", "name"])
def test_pipeline_start_without_run_id_or_name_is_a_400(
    client: Client, database_url: str, missing: str
) -> None:
    """A pipeline start lacking ``runId`` or ``name`` is a 400 naming it; nothing is stored."""
    body = _pipeline("r9", [_step("demo", MS, None, python=True)], python=True)
    body[missing] = None
    response = client.post("/api/ingestion/pipeline/start", json=body)
    assert (response.status_code, response.json()["path"]) == (400, f"$.{missing}")
    assert read_rows(database_url)["runs"] == []


def test_batch_that_is_not_an_array_is_a_400(client: Client) -> None:
    """``/batch`` with an object body is a 400."""
    response = client.post("/api/ingestion/batch", json={"type": "step"})
    assert response.status_code == 400
    assert "Expected `array`, got `object`" in response.json()["detail"]


def test_a_step_error_makes_it_failed(client: Client, database_url: str) -> None:
    """A seed step with an ``error`` string is failed, the string its error message."""
    step = _step("demo", MS, MS + 1, python=False, error="boom")
    assert (
        client.post("/api/ingestion/step/finish", json={"runId": "e", "step": step}).status_code
        == 200
    )
    (stored,) = read_rows(database_url, "e")["steps"]
    assert (stored["status"], stored["error_message"]) == ("failed", "boom")


@pytest.mark.parametrize("finish_first", [True, False])
def test_finish_records_win_over_a_start_s_partial_records(
    client: Client, database_url: str, finish_first: bool
) -> None:
    """A start built mid-step carries some records; the finish's full records are kept."""
    start = _step("demo", MS, None, python=False, records={"a": 1})
    finish = _step("demo", MS, MS + 9, python=False, records={"a": 1, "b": 2})
    posts = [("/api/ingestion/step/start", start), ("/api/ingestion/step/finish", finish)]
    for path, step in reversed(posts) if finish_first else posts:
        client.post(path, json={"runId": "p", "step": step})
    (stored,) = read_rows(database_url, "p")["steps"]
    assert (stored["status"], stored["records"]) == ("completed", {"a": 1, "b": 2})


def _bad_seed_posts(value: str) -> list[tuple[str, Any, str]]:
    """Each seed endpoint with ``value`` as a run id, pipeline or step key; the path named."""
    step = _step("demo", MS, None, python=False)
    bad_key = {**step, "key": value}
    return [
        ("/api/ingestion/pipeline/start", {**_pipeline("r9", [step], python=False),
         "runId": value}, "$.runId"),
        ("/api/ingestion/pipeline/start", {**_pipeline("r9", [step], python=False),
         "name": value}, "$.name"),
        ("/api/ingestion/pipeline/finish", {"pipelineMeta": {**_pipeline("r9", [step],
         python=False), "runId": value}}, "$.pipelineMeta.runId"),
        ("/api/ingestion/step/start", {"runId": value, "step": step}, "$.runId"),
        ("/api/ingestion/step/finish", {"runId": "r9", "step": bad_key}, "$.step.key"),
        ("/api/ingestion/batch", [
            {"type": "pipeline", "operation": "start", "meta": _pipeline("r9", [step],
             python=False)},
            {"type": "step", "operation": "start", "runId": value, "step": step},
        ], "$[1].runId"),
    ]  # fmt: skip


@pytest.mark.parametrize("value", ["", "x" * 3_000], ids=["empty", "3000-chars"])
@pytest.mark.parametrize("case", range(6))
def test_seed_empty_or_oversized_ids_are_a_400_naming_the_field(
    client: Client, database_url: str, value: str, case: int
) -> None:
    """An empty or over-long ``runId``, ``name`` or step ``key`` on any seed endpoint is a 400
    naming its path (not stored, not a 503 retried forever); a rejected body writes nothing."""
    url, body, path = _bad_seed_posts(value)[case]
    response = client.post(url, json=body)
    assert (response.status_code, response.json().get("path")) == (400, path), response.text
    assert read_rows(database_url) == {"runs": [], "steps": [], "pipelines": []}

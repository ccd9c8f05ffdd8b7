"""POST /api/v1/events: what is stored, what is refused, and that refused batches write nothing."""

from __future__ import annotations

import msgspec
import pytest
from _pg_testkit import (
    JSON,
    LOCAL,
    MSGPACK,
    T0,
    json_body,
    json_with,
    msgpack_body,
    read_rows,
    run_events,
)
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import Batch, RunStarted, StepFinished, StepStarted, encode_msgpack
from pipelens_server import Settings, create_app

Client = TestClient[Litestar]
EMPTY: dict[str, list[object]] = {"runs": [], "steps": [], "pipelines": []}


def test_msgpack_batch_is_stored_and_counted(client: Client, database_url: str) -> None:
    """A msgpack batch gets 202 with its counts, and its run and steps are stored."""
    response = client.post(
        "/api/v1/events", content=msgpack_body(run_events("r1")), headers=MSGPACK
    )
    assert (response.status_code, response.json()) == (202, {"accepted": 8, "runs": 1, "steps": 3})
    rows = read_rows(database_url)
    (run,) = rows["runs"]
    assert run == {
        "run_id": "r1",
        "pipeline": "rag",
        "status": "completed",
        "start_ns": T0,
        "end_ns": T0 + 300,
        "duration_ns": 300,
        "error_type": None,
        "error_message": None,
        "error_traceback": None,
        "step_count": 3,
        "dropped_events": 0,
        "attributes": {"env": "test"},
        "llm_usage": None,
        "tags": None,
        "user_id": None,
        "session_id": None,
    }
    assert [s["key"] for s in rows["steps"]] == ["answer", "answer.rerank", "answer.retrieve"]
    retrieve = rows["steps"][2]
    assert retrieve == {
        "run_id": "r1",
        "key": "answer.retrieve",
        "pipeline": "rag",
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
        "error_type": None,
        "error_message": None,
        "error_traceback": None,
        "llm": None,
        "path": None,  # a name path is stored for OTLP spans only
    }
    assert rows["pipelines"] == [{"name": "rag"}]


def test_json_batch_stores_the_same_rows_as_msgpack(client: Client, database_url: str) -> None:
    """The same events sent as JSON and as msgpack (to two runs) give the same rows."""
    as_json = client.post("/api/v1/events", content=json_body(run_events("j")), headers=JSON)
    as_msgpack = client.post(
        "/api/v1/events", content=msgpack_body(run_events("m")), headers=MSGPACK
    )
    assert (as_json.status_code, as_msgpack.status_code) == (202, 202)
    rows = read_rows(database_url)

    def without_ids(row: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in row.items() if k not in {"run_id", "step_id", "parent_id"}}

    assert [without_ids(r) for r in rows["steps"] if r["run_id"] == "j"] == [
        without_ids(r) for r in rows["steps"] if r["run_id"] == "m"
    ]
    assert without_ids(rows["runs"][0]) == without_ids(rows["runs"][1])


def test_failed_step_keeps_its_error(client: Client, database_url: str) -> None:
    """A failed step and run store the error's type, message and traceback."""
    client.post("/api/v1/events", content=msgpack_body(run_events("f", fail=True)), headers=MSGPACK)
    rows = read_rows(database_url)
    rerank = next(s for s in rows["steps"] if s["key"] == "answer.rerank")
    assert (
        rerank["status"],
        rerank["error_type"],
        rerank["error_message"],
        rerank["error_traceback"],
    ) == ("failed", "ValueError", "bad doc", "Traceback ...")
    assert (rows["runs"][0]["status"], rows["runs"][0]["error_type"]) == ("failed", "ValueError")


def test_resending_a_batch_changes_nothing(client: Client, database_url: str) -> None:
    """Idempotency: the second copy of a batch is accepted and leaves every row as it was."""
    body = msgpack_body(run_events("r1"))
    client.post("/api/v1/events", content=body, headers=MSGPACK)
    before = read_rows(database_url)
    again = client.post("/api/v1/events", content=body, headers=MSGPACK)
    assert again.status_code == 202
    assert before == read_rows(database_url)


def test_a_batch_with_duplicated_events_stores_each_row_once(
    client: Client, database_url: str
) -> None:
    """Events repeated inside one batch are merged before the upsert (no double-update error)."""
    events = run_events("r1")
    response = client.post(
        "/api/v1/events", content=msgpack_body([*events, *reversed(events)]), headers=MSGPACK
    )
    assert response.status_code == 202
    assert tuple(len(v) for k, v in read_rows(database_url).items() if k != "pipelines") == (1, 3)


def test_steps_before_their_run_get_the_pipeline_later(client: Client, database_url: str) -> None:
    """A run known only from step events has no pipeline until a run event names it."""
    events = run_events("r1")
    steps = [e for e in events if isinstance(e, StepStarted | StepFinished)]
    client.post("/api/v1/events", content=msgpack_body(steps), headers=MSGPACK)
    early = read_rows(database_url)
    assert (
        early["runs"][0]["pipeline"],
        early["runs"][0]["status"],
        early["runs"][0]["start_ns"],
    ) == (None, "running", None)
    assert {None} == {s["pipeline"] for s in early["steps"]}
    client.post("/api/v1/events", content=msgpack_body([events[-1]]), headers=MSGPACK)
    late = read_rows(database_url)
    assert (
        late["runs"][0]["pipeline"],
        late["runs"][0]["status"],
        late["runs"][0]["start_ns"],
    ) == ("rag", "completed", T0)
    assert {"rag"} == {s["pipeline"] for s in late["steps"]}


def test_a_late_start_never_reopens_a_finished_step(client: Client, database_url: str) -> None:
    """A step's finish stored first stays finished when its start arrives afterwards."""
    events = run_events("r1")
    client.post("/api/v1/events", content=msgpack_body([events[3]]), headers=MSGPACK)
    client.post("/api/v1/events", content=msgpack_body([events[2]]), headers=MSGPACK)
    (step,) = read_rows(database_url)["steps"]
    assert (step["status"], step["end_ns"], step["result"]) == ("completed", T0 + 110, ["d1", "d2"])


def test_one_bad_event_refuses_the_batch_and_names_it(client: Client, database_url: str) -> None:
    """A wrong type in event 3 is a 400 whose body names ``$.events[3].start_ns``; nothing is
    written."""
    body = json_with(run_events("r1"), 3, start_ns="soon")
    response = client.post("/api/v1/events", content=body, headers=JSON)
    assert response.status_code == 400
    assert response.json()["path"] == "$.events[3].start_ns"
    assert "Expected `int`, got `str`" in response.json()["detail"]
    assert read_rows(database_url) == EMPTY


def test_captured_value_that_is_not_json_is_refused(client: Client, database_url: str) -> None:
    """A ``result`` that is not JSON text is a 400 naming the event and field; nothing written."""
    body = json_with(run_events("r1"), 3, result="{not json")
    response = client.post("/api/v1/events", content=body, headers=JSON)
    assert (response.status_code, response.json()["path"]) == (400, "$.events[3].result")
    assert "must be JSON text" in response.json()["detail"]
    assert read_rows(database_url) == EMPTY


def test_integer_beyond_bigint_is_refused(client: Client, database_url: str) -> None:
    """A time that does not fit PostgreSQL's bigint is a 400, not a database error."""
    body = json_with(run_events("r1"), 0, start_ns=2**64 - 1)
    response = client.post("/api/v1/events", content=body, headers=JSON)
    assert (response.status_code, response.json()["path"]) == (400, "$.events[0].start_ns")
    assert read_rows(database_url) == EMPTY


def test_malformed_msgpack_is_a_400(client: Client, database_url: str) -> None:
    """Bytes that are not msgpack are a 400 explaining the decode error."""
    response = client.post("/api/v1/events", content=b"\xc1\xc1", headers=MSGPACK)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("invalid batch: ")


def test_unknown_batch_version_is_a_400(client: Client, database_url: str) -> None:
    """``v`` other than 1 is a 400 that says which versions the server reads."""
    body = msgspec.msgpack.encode({"v": 2, "events": [{"type": "run.begun"}]})
    response = client.post("/api/v1/events", content=body, headers=MSGPACK)
    assert (response.status_code, response.json()["path"]) == (400, "$.v")
    assert "unsupported batch version 2" in response.json()["detail"]


def test_wrong_content_type_is_a_415(client: Client) -> None:
    """A body that is neither msgpack nor JSON is refused with 415 naming what to send."""
    response = client.post("/api/v1/events", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/msgpack" in response.json()["detail"]


def test_body_over_the_limit_is_a_413(database_url: str) -> None:
    """A body larger than ``max_body_bytes`` is refused with 413 naming the limit."""
    app = create_app(Settings(database_url=database_url, max_body_bytes=1000))
    with TestClient(app, base_url=LOCAL) as small_client:
        response = small_client.post(
            "/api/v1/events", content=msgpack_body(run_events("r1") * 20), headers=MSGPACK
        )
    assert response.status_code == 413
    assert "1000 bytes" in response.json()["detail"]
    assert read_rows(database_url) == EMPTY


def test_nul_characters_are_stored_as_replacement_characters(
    client: Client, database_url: str
) -> None:
    """NUL, which PostgreSQL text and jsonb cannot hold, becomes U+FFFD instead of a 500."""
    event = RunStarted(run_id="r\x00", pipeline="p\x00", start_ns=T0, attributes={"k": "v\x00"})
    step = StepStarted(
        run_id="r\x00", step_id="s", key="k", name="n", start_ns=T0, inputs='{"a":"\\u0000"}'
    )
    response = client.post(
        "/api/v1/events", content=encode_msgpack(Batch(events=[event, step])), headers=MSGPACK
    )
    assert response.status_code == 202
    rows = read_rows(database_url)
    assert (
        rows["runs"][0]["run_id"],
        rows["runs"][0]["pipeline"],
        rows["runs"][0]["attributes"],
    ) == ("r\ufffd", "p\ufffd", {"k": "v\ufffd"})
    assert rows["steps"][0]["inputs"] == {"a": "\ufffd"}


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/x-msgpack"]
)
def test_content_type_variants_are_accepted(client: Client, content_type: str) -> None:
    """A charset parameter and the x-msgpack alias are accepted."""
    events = run_events("r1")
    body = json_body(events) if "json" in content_type else msgpack_body(events)
    response = client.post("/api/v1/events", content=body, headers={"content-type": content_type})
    assert response.status_code == 202

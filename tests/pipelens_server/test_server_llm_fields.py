"""The LLM wire fields: ``StepFinished.llm`` and ``RunFinished.llm_usage`` are validated, stored
as ``jsonb`` (migration 0002), merged by the convergence rule and shown by the read API."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
import pytest
from _pg_testkit import (
    JSON,
    LOCAL,
    MSGPACK,
    json_body,
    json_with,
    msgpack_body,
    read_rows,
    run_events,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import Event, RunFinished, StepFinished
from pipelens_server import Settings, create_app

Client = TestClient[Litestar]
EMPTY: dict[str, list[object]] = {"runs": [], "steps": [], "pipelines": []}

LLM_CALL = {
    "provider": "openai",
    "operation": "chat",
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "rank these"}],
    "output": "d1",
    "usage": {"input_tokens": 12, "output_tokens": 3},
}
LLM_USAGE = {
    "gpt-4o-mini": {
        "calls": 1,
        "input_tokens": 12,
        "output_tokens": 3,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
    }
}
RERANK_FINISH = 5  # index of the llm step's StepFinished in run_events()
RUN_FINISH = 7  # index of the RunFinished in run_events()

_ids = itertools.count()


def llm_run_events(run_id: str, *, fail: bool = False) -> list[Event]:
    """``run_events`` whose ``kind="llm"`` step carries its call and whose run carries usage."""
    events = run_events(run_id, fail=fail)
    rerank = events[RERANK_FINISH]
    run = events[RUN_FINISH]
    assert isinstance(rerank, StepFinished)
    assert isinstance(run, RunFinished)
    events[RERANK_FINISH] = msgspec.structs.replace(
        rerank, llm=msgspec.json.encode(LLM_CALL).decode()
    )
    events[RUN_FINISH] = msgspec.structs.replace(
        run, llm_usage=msgspec.json.encode(LLM_USAGE).decode()
    )
    return events


def _post(client: Client, events: list[Event], *, as_json: bool = False) -> None:
    body, headers = (json_body(events), JSON) if as_json else (msgpack_body(events), MSGPACK)
    response = client.post("/api/v1/events", content=body, headers=headers)
    assert response.status_code == 202, response.text


def _llm_columns(rows: dict[str, list[dict[str, Any]]]) -> tuple[Any, dict[str, Any]]:
    (run,) = rows["runs"]
    return run["llm_usage"], {s["key"]: s["llm"] for s in rows["steps"]}


@pytest.mark.parametrize("as_json", [False, True], ids=["msgpack", "json"])
def test_llm_call_and_usage_are_stored_as_jsonb(
    client: Client, database_url: str, as_json: bool
) -> None:
    """The step's ``llm`` and the run's ``llm_usage`` land in their jsonb columns; others NULL."""
    _post(client, llm_run_events("r1"), as_json=as_json)
    usage, llm = _llm_columns(read_rows(database_url))
    assert (
        usage,
        llm,
    ) == (LLM_USAGE, {"answer": None, "answer.rerank": LLM_CALL, "answer.retrieve": None})


def test_read_api_shows_llm_call_and_usage(client: Client) -> None:
    """``GET /api/v1/runs/{id}`` has ``run.llm_usage`` and each step's ``llm`` as JSON, with
    the cost the server prices (``run.llm``'s) beside the tokens."""
    _post(client, llm_run_events("r1"))
    body = client.get("/api/v1/runs/r1").json()
    cost = body["run"]["llm"]["cost_usd"]
    assert cost == pytest.approx(12 * 0.15e-6 + 3 * 0.6e-6)  # gpt-4o-mini's price
    priced_usage = {"gpt-4o-mini": LLM_USAGE["gpt-4o-mini"] | {"cost_usd": cost}}
    assert body["run"]["llm_usage"] == priced_usage
    assert {s["key"]: s["llm"] for s in body["steps"]} == {
        "answer": None,
        "answer.retrieve": None,
        "answer.rerank": LLM_CALL | {"cost_usd": cost},
    }
    (listed,) = client.get("/api/v1/runs").json()["runs"]
    assert listed["llm_usage"] == priced_usage


def test_run_without_llm_fields_reads_back_null(client: Client) -> None:
    """Events without the optional fields give ``null`` in the read API, not a missing key."""
    _post(client, run_events("r1"))
    body = client.get("/api/v1/runs/r1").json()
    assert (
        body["run"]["llm_usage"],
        [s["llm"] for s in body["steps"]],
    ) == (None, [None, None, None])


@pytest.mark.parametrize(("index", "field"), [(RERANK_FINISH, "llm"), (RUN_FINISH, "llm_usage")])
def test_llm_field_that_is_not_json_is_refused(
    client: Client, database_url: str, index: int, field: str
) -> None:
    """``llm``/``llm_usage`` that is not JSON text is a 400 naming its path; nothing written."""
    body = json_with(run_events("r1"), index, **{field: "{not json"})
    response = client.post("/api/v1/events", content=body, headers=JSON)
    assert (400, f"$.events[{index}].{field}") == (response.status_code, response.json()["path"])
    assert "must be JSON text" in response.json()["detail"]
    assert read_rows(database_url) == EMPTY


@pytest.mark.parametrize(("index", "field"), [(RERANK_FINISH, "llm"), (RUN_FINISH, "llm_usage")])
def test_llm_field_of_the_wrong_type_is_refused(
    client: Client, database_url: str, index: int, field: str
) -> None:
    """An ``llm``/``llm_usage`` sent as an object instead of JSON text is a 400 naming it."""
    body = json_with(run_events("r1"), index, **{field: {"model": "m"}})
    response = client.post("/api/v1/events", content=body, headers=JSON)
    assert (400, f"$.events[{index}].{field}") == (response.status_code, response.json()["path"])
    assert read_rows(database_url) == EMPTY


def test_nul_in_llm_text_is_stored_as_replacement_character(
    client: Client, database_url: str
) -> None:
    """A ``\\u0000`` inside the LLM call's JSON (which jsonb refuses) is stored as U+FFFD."""
    events = llm_run_events("r1")
    rerank = events[RERANK_FINISH]
    assert isinstance(rerank, StepFinished)
    events[RERANK_FINISH] = msgspec.structs.replace(rerank, llm='{"output": "a\\u0000b"}')
    _post(client, events)
    _, llm = _llm_columns(read_rows(database_url))
    assert llm["answer.rerank"] == {"output": "a\ufffdb"}


def test_late_start_keeps_the_llm_call_of_the_finish(client: Client, database_url: str) -> None:
    """A step's finish with its LLM call stored first keeps it when the start arrives later."""
    events = llm_run_events("r1")
    _post(client, [events[RERANK_FINISH]])
    _post(client, [events[4]])  # the rerank step's StepStarted
    (step,) = read_rows(database_url)["steps"]
    assert (step["status"], step["llm"]) == ("completed", LLM_CALL)


def test_failed_finish_fills_in_the_llm_call_of_a_completed_one(
    client: Client, database_url: str
) -> None:
    """A failed finish without ``llm`` wins over a completed one with it, and keeps its call."""
    events = llm_run_events("r1")
    completed = events[RERANK_FINISH]
    assert isinstance(completed, StepFinished)
    failed = msgspec.structs.replace(completed, status="failed", llm=None)
    _post(client, [completed])
    _post(client, [failed])
    (step,) = read_rows(database_url)["steps"]
    assert (step["status"], step["llm"]) == ("failed", LLM_CALL)


def test_migration_0002_adds_jsonb_columns(database_url: str) -> None:
    """The schema has ``steps.llm`` and ``runs.llm_usage`` as jsonb, from migration 0002."""
    with psycopg.connect(database_url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE column_name IN ('llm', 'llm_usage') ORDER BY table_name"
        ).fetchall()
        version = conn.execute("SELECT name FROM schema_migrations WHERE version = 2").fetchone()
    assert (
        columns,
        version,
    ) == ([("runs", "llm_usage", "jsonb"), ("steps", "llm", "jsonb")], ("llm",))


@pytest.fixture(scope="module")
def module_client(module_database_url: str) -> Iterator[Client]:
    """One app for the whole module: hypothesis runs many examples against it."""
    with TestClient(
        create_app(Settings(database_url=module_database_url)), base_url=LOCAL
    ) as client:
        yield client


def _rows_without_run_id(conninfo: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    rows = read_rows(conninfo, run_id)
    for table in ("runs", "steps"):
        for row in rows[table]:
            del row["run_id"]
    del rows["pipelines"]
    return rows


@settings(
    max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    fail=st.booleans(),
    order=st.permutations(range(8)),
    repeats=st.lists(st.integers(0, 7), max_size=4),
    cut=st.integers(1, 7),
)
def test_any_delivery_of_a_run_with_llm_fields_converges(
    module_client: Client,
    module_database_url: str,
    fail: bool,
    order: list[int],
    repeats: list[int],
    cut: int,
) -> None:
    """Shuffled, repeated and split events with LLM fields store the rows of one in-order batch."""
    n = next(_ids)
    reference, shuffled = f"llm-ref-{n}", f"llm-shuf-{n}"
    events = llm_run_events(reference, fail=fail)
    _post(module_client, events)
    renamed = [msgspec.structs.replace(e, run_id=shuffled) for e in events]
    arrivals = [renamed[i] for i in [*order, *repeats]]
    _post(module_client, arrivals[:cut])
    _post(module_client, arrivals[cut:])
    expected = _rows_without_run_id(module_database_url, reference)
    assert expected == _rows_without_run_id(module_database_url, shuffled)
    assert expected["runs"][0]["llm_usage"] == LLM_USAGE

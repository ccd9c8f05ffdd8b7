"""The convergence rule, as a property: any permutation, duplication and batching of a run's
events stores the same rows as the events sent once, in order, in one batch."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from _pg_testkit import JSON, LOCAL, MSGPACK, json_body, msgpack_body, read_rows, run_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import Event
from pipelens_server import Settings, create_app

_ids = itertools.count()


@pytest.fixture(scope="module")
def module_client(module_database_url: str) -> Iterator[TestClient[Litestar]]:
    """One app for the whole module: hypothesis runs many examples against it."""
    with TestClient(
        create_app(Settings(database_url=module_database_url)), base_url=LOCAL
    ) as client:
        yield client


def _send(client: TestClient[Litestar], events: list[Event], as_json: bool) -> None:
    body, headers = (json_body(events), JSON) if as_json else (msgpack_body(events), MSGPACK)
    response = client.post("/api/v1/events", content=body, headers=headers)
    assert response.status_code == 202, response.text


def _rows_without_run_id(conninfo: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    rows = read_rows(conninfo, run_id)
    for table in ("runs", "steps"):
        for row in rows[table]:
            del row["run_id"]
    del rows["pipelines"]
    return rows


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bool, list[list[int]], bool]:
    """How a run's 8 events arrive: failed or not, in which batches, JSON or msgpack."""
    fail = draw(st.booleans())
    order = draw(st.permutations(range(8)))
    repeats = draw(st.lists(st.integers(0, 7), max_size=6))
    arrivals = list(order)
    for event in repeats:  # each repeat lands at a drawn position
        arrivals.insert(draw(st.integers(0, len(arrivals))), event)
    cuts = sorted(draw(st.sets(st.integers(1, len(arrivals) - 1), max_size=4)))
    batches = [arrivals[a:b] for a, b in itertools.pairwise([0, *cuts, len(arrivals)])]
    return fail, batches, draw(st.booleans())


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(delivery=deliveries())
def test_any_delivery_of_a_run_converges(
    module_client: TestClient[Litestar], module_database_url: str, delivery: Any
) -> None:
    """Shuffled, repeated and split events store exactly the rows of one in-order batch."""
    fail, batches, as_json = delivery
    n = next(_ids)
    reference, shuffled = f"ref-{n}", f"shuf-{n}"
    events = run_events(reference, fail=fail)
    _send(module_client, events, as_json=False)
    renamed = [msgspec.structs.replace(e, run_id=shuffled) for e in events]
    for batch in batches:
        _send(module_client, [renamed[i] for i in batch], as_json)
    expected = _rows_without_run_id(module_database_url, reference)
    assert _rows_without_run_id(module_database_url, shuffled) == expected


_MS = 1_700_000_000_000


def _seed_step(key: str, end: int | None, records: dict[str, Any]) -> dict[str, Any]:
    time = {"startTs": _MS, "endTs": end, "timeUsageMs": None if end is None else end - _MS}
    return {"name": key.rsplit(".", 1)[-1], "key": key, "time": time, "records": records,
            "result": None, "error": None}  # fmt: skip


def _seed_items(run_id: str) -> list[dict[str, Any]]:
    """A seed Python client's run, batched: its child's start already carries the end (one
    ``TimeMeta`` shared between events) and empty records; the finishes carry the records."""
    root_open = _seed_step("p", None, {})
    root_done = _seed_step("p", _MS + 20, {"n": 1})
    child_start = _seed_step("p.c", _MS + 10, {})
    child_done = _seed_step("p.c", _MS + 10, {"k": "v"})

    def pipeline(operation: str, root: dict[str, Any], steps: list[dict[str, Any]]) -> Any:
        meta = {**root, "logVersion": 1, "runId": run_id, "steps": steps}
        return {"type": "pipeline", "operation": operation, "meta": meta, "status": "completed"}

    def step(operation: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"type": "step", "operation": operation, "runId": run_id, "step": body}

    return [
        pipeline("start", root_open, [root_open]),
        step("start", root_open),
        step("start", child_start),
        step("finish", child_done),
        step("finish", root_done),
        pipeline("finish", root_done, [root_done, child_done]),
    ]


@st.composite
def seed_deliveries(draw: st.DrawFn) -> list[list[int]]:
    """How a seed run's 6 batch items arrive: in which order and batches, some twice."""
    arrivals = list(draw(st.permutations(range(6))))
    for item in draw(st.lists(st.integers(0, 5), max_size=4)):
        arrivals.insert(draw(st.integers(0, len(arrivals))), item)
    cuts = sorted(draw(st.sets(st.integers(1, len(arrivals) - 1), max_size=4)))
    return [arrivals[a:b] for a, b in itertools.pairwise([0, *cuts, len(arrivals)])]


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(batches=seed_deliveries())
def test_any_delivery_of_a_seed_run_keeps_its_records(
    module_client: TestClient[Litestar], module_database_url: str, batches: list[list[int]]
) -> None:
    """Seed items shuffled, repeated and split (merged in Python within a batch, in SQL across
    batches) store the rows of the in-order batch, whose steps keep the finishes' records."""
    n = next(_ids)
    reference, shuffled = f"seed-ref-{n}", f"seed-shuf-{n}"
    response = module_client.post("/api/ingestion/batch", json=_seed_items(reference))
    assert response.status_code == 200, response.text
    items = _seed_items(shuffled)
    for batch in batches:
        response = module_client.post("/api/ingestion/batch", json=[items[i] for i in batch])
        assert response.status_code == 200, response.text
    expected = _rows_without_run_id(module_database_url, reference)
    assert {s["key"]: s["records"] for s in expected["steps"]} == {"p": {"n": 1}, "p.c": {"k": "v"}}
    assert _rows_without_run_id(module_database_url, shuffled) == expected

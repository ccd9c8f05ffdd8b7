"""The fast path from step events to rows: built positionally, it must give exactly the rows the
keyword builders describe, and still refuse or clean every field the slow path did."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from _pg_testkit import JSON, T0, json_with, read_rows, run_events
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from pipelens._transports.coalesce import coalesce_steps
from pipelens.events import (
    Batch,
    ErrorInfo,
    Event,
    RunFinished,
    StepFinished,
    StepStarted,
    encode_msgpack,
)
from pipelens_server._errors import InvalidBatchError
from pipelens_server._ingest._decode import batch_rows
from pipelens_server._ingest._rows import RUNS, STEPS, merge, step_row

Client = TestClient[Litestar]
EMPTY: dict[str, list[object]] = {"runs": [], "steps": [], "pipelines": []}

FINISHED = StepFinished(
    run_id="r1",
    step_id="s1",
    parent_id="p1",
    key="root.child",
    name="child",
    kind="llm",
    start_ns=T0,
    end_ns=T0 + 5,
    duration_ns=5,
    status="failed",
    error=ErrorInfo(type="E", message="m", traceback="tb"),
    result='"r"',
    records='{"n":1}',
    inputs='{"x":1}',
    llm='{"model":"m"}',
)
STARTED = StepStarted(
    run_id="r1",
    step_id="s1",
    parent_id="p1",
    key="root.child",
    name="child",
    kind="llm",
    start_ns=T0 - 1,
    inputs='{"x":2}',
)


def test_finished_step_row_has_every_field_in_column_order() -> None:
    """A ``StepFinished`` with every field set gives the row ``step_row`` builds from them."""
    rows = batch_rows(Batch(events=[FINISHED]))
    expected = step_row(
        run_id="r1",
        key="root.child",
        step_id="s1",
        parent_id="p1",
        name="child",
        kind="llm",
        status="failed",
        start_ns=T0,
        end_ns=T0 + 5,
        duration_ns=5,
        inputs='{"x":1}',
        result='"r"',
        records='{"n":1}',
        error_type="E",
        error_message="m",
        error_traceback="tb",
        llm='{"model":"m"}',
    )
    assert rows.steps == {("r1", "root.child"): expected}
    assert len(expected) == len(STEPS.columns)


def test_started_step_row_has_every_field_in_column_order() -> None:
    """A ``StepStarted`` gives the running row ``step_row`` builds from its fields."""
    rows = batch_rows(Batch(events=[STARTED]))
    expected = step_row(
        run_id="r1",
        key="root.child",
        step_id="s1",
        parent_id="p1",
        name="child",
        kind="llm",
        status="running",
        start_ns=T0 - 1,
        inputs='{"x":2}',
    )
    assert rows.steps == {("r1", "root.child"): expected}


def test_a_value_repeated_in_a_batch_is_redacted_and_cleaned_every_time() -> None:
    """The same captured text in many events and fields (each distinct text is checked once per
    batch) is stored redacted, or cleaned, in every one of them."""
    secret = '{"api_key":"k1","note":"sk-abcdefghijklmnopqrstuvwx","nul":"a\\u0000"}'
    clean = '{"api_key":"[REDACTED]","note":"[REDACTED]","nul":"a\ufffd"}'
    events: list[Event] = []
    for step in ("a", "b"):
        events.append(msgspec.structs.replace(STARTED, key=step, inputs=secret))
        events.append(
            msgspec.structs.replace(
                FINISHED, key=step, inputs=secret, result=secret, records=secret, llm=secret
            )
        )
    events.append(msgspec.structs.replace(STARTED, key="c", inputs=secret))
    steps = batch_rows(Batch(events=events)).steps
    assert len(steps) == 3
    for row in steps.values():
        named = dict(zip(STEPS.column_names, row, strict=True))
        texts = [named["inputs"]]
        if named["status"] != "running":
            texts += [named["result"], named["records"], named["llm"]]
        assert [msgspec.json.decode(text) for text in texts] == [msgspec.json.decode(clean)] * len(
            texts
        )


def test_a_text_valid_in_one_field_is_checked_in_the_next_event_too() -> None:
    """A text seen before in the batch is not trusted blindly: an invalid text after many valid
    ones is still a 400 naming its own event and field."""
    events: list[Event] = [msgspec.structs.replace(FINISHED, key=f"k{i}") for i in range(3)]
    events.append(msgspec.structs.replace(FINISHED, key="bad", records='{"n":'))
    with pytest.raises(InvalidBatchError, match=r"\$\.events\[3\]\.records"):
        batch_rows(Batch(events=events))


@pytest.mark.parametrize("order", ["start first", "finish first"])
def test_start_and_finish_in_one_batch_merge_by_the_rule(order: str) -> None:
    """Start and finish of a step in one batch give ``merge`` of their rows, in either order:
    the finish's values, the earliest start time."""
    events = [STARTED, FINISHED] if order == "start first" else [FINISHED, STARTED]
    (row,) = batch_rows(Batch(events=events)).steps.values()
    started = batch_rows(Batch(events=[STARTED])).steps[("r1", "root.child")]
    finished = batch_rows(Batch(events=[FINISHED])).steps[("r1", "root.child")]
    assert row == merge(STEPS, started, finished)
    assert (row[6], row[7], row[10]) == ("failed", T0 - 1, '{"x":1}')


@pytest.mark.parametrize(
    ("index", "field"),
    [(1, "start_ns"), (3, "start_ns"), (3, "end_ns"), (3, "duration_ns")],
)
def test_step_time_beyond_bigint_is_refused(
    client: Client, database_url: str, index: int, field: str
) -> None:
    """A step start/finish time beyond PostgreSQL's bigint is a 400 naming the field."""
    body = json_with(run_events("r1"), index, **{field: 2**63})
    response = client.post("/api/v1/events", content=body, headers=JSON)
    assert (response.status_code, response.json()["path"]) == (400, f"$.events[{index}].{field}")
    assert read_rows(database_url) == EMPTY


@pytest.mark.parametrize("field", ["run_id", "key", "step_id", "parent_id", "name", "kind"])
@pytest.mark.parametrize("event", [STARTED, FINISHED], ids=["started", "finished"])
def test_nul_in_any_step_text_becomes_a_replacement_character(
    event: StepStarted | StepFinished, field: str
) -> None:
    """NUL in any text field of a step event is replaced by U+FFFD, the others left alone."""
    dirty = msgspec.structs.replace(event, **{field: f"a\x00{getattr(event, field)}"})
    (row,) = batch_rows(Batch(events=[dirty])).steps.values()
    (clean,) = batch_rows(Batch(events=[event])).steps.values()
    position = STEPS.column_names.index(field)
    assert row[position] == f"a\ufffd{clean[position]}"
    assert row[:position] + row[position + 1 :] == clean[:position] + clean[position + 1 :]


def test_nul_step_texts_are_stored(client: Client, database_url: str) -> None:
    """A step whose key and name hold NUL is stored with U+FFFD instead of failing the batch."""
    step = msgspec.structs.replace(FINISHED, key="k\x00", name="n\x00")
    response = client.post(
        "/api/v1/events",
        content=encode_msgpack(Batch(events=[step])),
        headers={"content-type": "application/msgpack"},
    )
    assert response.status_code == 202, response.text
    (stored,) = read_rows(database_url)["steps"]
    assert (stored["key"], stored["name"]) == ("k\ufffd", "n\ufffd")


@pytest.mark.parametrize("order", ["first-end-first", "resent-end-first"])
def test_a_resent_run_end_raises_the_step_count(
    client: Client, database_url: str, order: str
) -> None:
    """A client resends a run's end when a step outlives the run (a late thread): the stored
    ``step_count`` and ``dropped_events`` are the largest either end says, in either order."""
    first = RunFinished(run_id="r1", pipeline="p", start_ns=T0, end_ns=T0 + 9, duration_ns=9,
                        status="completed", step_count=1, dropped_events=0)  # fmt: skip
    resent = msgspec.structs.replace(first, step_count=2, dropped_events=3)
    for end in [first, resent] if order == "first-end-first" else [resent, first]:
        response = client.post(
            "/api/v1/events",
            content=encode_msgpack(Batch(events=[end])),
            headers={"content-type": "application/msgpack"},
        )
        assert response.status_code == 202, response.text
    (run,) = read_rows(database_url)["runs"]
    assert (run["step_count"], run["dropped_events"]) == (2, 3)


def test_the_batch_merge_keeps_the_largest_step_count() -> None:
    """Both ends in one batch: the Python merge agrees with the SQL one."""
    first = RunFinished(run_id="r1", pipeline="p", start_ns=T0, end_ns=T0 + 9, duration_ns=9,
                        status="completed", step_count=1)  # fmt: skip
    resent = msgspec.structs.replace(first, step_count=2)
    (row,) = batch_rows(Batch(events=[first, resent])).runs.values()
    assert row[RUNS.column_names.index("step_count")] == 2


def _slow_rows(events: list[StepStarted | StepFinished]) -> dict[tuple[str, str], list[object]]:
    """Each event's row alone, merged one after the other by ``merge`` (no fast path)."""
    merged: dict[tuple[str, str], list[object]] = {}
    for event in events:
        ((key, row),) = batch_rows(Batch(events=[event])).steps.items()
        merged[key] = row if key not in merged else merge(STEPS, merged[key], row)
    return merged


_texts = st.sampled_from([None, '{"a":1}', '{"a":2}', "{}", '"x"'])
_step_events = st.lists(
    st.one_of(
        st.builds(
            StepStarted,
            run_id=st.just("r1"),
            step_id=st.sampled_from(["s1", "s2"]),
            parent_id=st.sampled_from([None, "p1"]),
            key=st.sampled_from(["a", "b"]),
            name=st.just("n"),
            start_ns=st.integers(T0, T0 + 3),
            inputs=_texts,
        ),
        st.builds(
            StepFinished,
            run_id=st.just("r1"),
            step_id=st.sampled_from(["s1", "s2"]),
            parent_id=st.sampled_from([None, "p1", "p2"]),
            key=st.sampled_from(["a", "b"]),
            name=st.just("n"),
            start_ns=st.integers(T0, T0 + 3),
            end_ns=st.just(T0 + 10),
            duration_ns=st.just(10),
            status=st.sampled_from(["completed", "failed", "cancelled"]),
            inputs=_texts,
            result=_texts,
            records=_texts,
        ),
    ),
    max_size=6,
)


@given(events=_step_events)
@settings(max_examples=300, deadline=None)
def test_the_finish_fast_path_gives_the_rows_of_the_merge_rule(
    events: list[StepStarted | StepFinished],
) -> None:
    """Step events in any order and number (a finish on a held start takes the fast path) give
    the rows ``merge`` gives, one event at a time."""
    assert _slow_rows(events) == batch_rows(Batch(events=list(events))).steps


def _program_events() -> list[Event]:
    """What ``@pipelens.step`` emits for two runs of nested steps with inputs and records."""
    import pipelens
    from pipelens import MemoryTransport

    @pipelens.step
    def leaf(i: int) -> int:
        pipelens.record("i", i)
        return i

    @pipelens.step
    def middle(n: int) -> int:
        return sum(leaf(i) for i in range(n))

    @pipelens.step
    def root() -> int:
        return middle(2) + middle(3)

    memory = MemoryTransport()
    pipelens.configure(transport=memory)
    try:
        root()
        root()
    finally:
        pipelens.configure(transport=None)
    return list(memory.events)


def _stored(batches: list[list[Event]]) -> tuple[dict[object, object], dict[object, object]]:
    """The rows the batches leave once merged, as the database merges them (by ``merge``)."""
    runs: dict[object, object] = {}
    steps: dict[object, object] = {}
    for events in batches:
        rows = batch_rows(Batch(events=events))
        for into, table, merged in ((runs, RUNS, rows.runs), (steps, STEPS, rows.steps)):
            for key, row in merged.items():
                into[key] = row if key not in into else merge(table, into[key], row)  # type: ignore[arg-type]
    return runs, steps


@given(cuts=st.lists(st.integers(0, 40), max_size=4))
@settings(max_examples=100, deadline=None)
def test_coalesced_batches_store_the_rows_of_the_events_sent_one_by_one(cuts: list[int]) -> None:
    """Cut into batches anywhere, each batch coalesced as ``HttpTransport`` sends it (a start
    left in an earlier batch than its finish goes alone): the same rows as every event alone."""
    events = _program_events()
    bounds = [0, *sorted(cuts), len(events)]
    batches = [events[a:b] for a, b in itertools.pairwise(bounds) if a < b]
    coalesced = [coalesce_steps(batch)[0] for batch in batches]
    assert sum(map(len, coalesced)) < len(events)
    assert _stored([[e] for e in events]) == _stored(coalesced)

"""The wire contract: every event round-trips through JSON and msgpack; bad input names its path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelens.events import (
    Batch,
    ErrorInfo,
    Event,
    RunFinished,
    RunStarted,
    ScoreAdded,
    StepFinished,
    StepStarted,
    decode_json,
    decode_msgpack,
    encode_json,
    encode_msgpack,
)

ENCODINGS: list[tuple[Callable[[Batch], bytes], Callable[[bytes], Batch]]] = [
    (encode_json, decode_json),
    (encode_msgpack, decode_msgpack),
]
ENCODING_IDS = ["json", "msgpack"]

# Property tests must not depend on how busy the machine is: no per-example deadline.
quick = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

ERROR = ErrorInfo(type="ValueError", message="bad", traceback="Traceback ...")
EVERY_TYPE: list[Event] = [
    RunStarted(run_id="r1", pipeline="p", start_ns=10, attributes={"env": "test"}),
    StepStarted(
        run_id="r1", step_id="s1", parent_id="s0", key="p.a", name="a", start_ns=11, inputs="{}"
    ),
    StepFinished(
        run_id="r1",
        step_id="s1",
        parent_id="s0",
        key="p.a",
        name="a",
        kind="llm",
        start_ns=11,
        end_ns=15,
        duration_ns=4,
        status="failed",
        error=ERROR,
        result='"x"',
        records='{"n":1}',
        inputs='{"q":"y"}',
    ),
    RunFinished(
        run_id="r1",
        pipeline="p",
        start_ns=10,
        end_ns=20,
        duration_ns=10,
        status="completed",
        error=ERROR,
        step_count=2,
        dropped_events=3,
    ),
    ScoreAdded(
        run_id="r1",
        score_id="s1",
        name="relevance",
        value=0.5,
        comment="why",
        step_key="root.child",
        source="api",
        at_ns=30,
    ),
]


@pytest.mark.parametrize(("encode", "decode"), ENCODINGS, ids=ENCODING_IDS)
def test_batch_with_every_event_type_round_trips(
    encode: Callable[[Batch], bytes], decode: Callable[[bytes], Batch]
) -> None:
    """A batch holding each event type, every field set, decodes to an equal batch."""
    batch = Batch(events=EVERY_TYPE)
    assert batch == decode(encode(batch))
    assert [type(e) for e in EVERY_TYPE] == [type(e) for e in decode(encode(batch)).events]


def test_json_carries_the_type_tag_and_omits_defaults() -> None:
    """Each event is tagged by ``type``; fields left at their default are not sent."""
    batch = Batch(events=[StepStarted(run_id="r", step_id="s", key="k", name="k", start_ns=1)])
    expected = (
        b'{"v":1,"events":[{"type":"step.started","run_id":"r","step_id":"s",'
        b'"key":"k","name":"k","start_ns":1}]}'
    )
    assert expected == encode_json(batch)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    """A newer client's extra optional field does not break an older decoder."""
    data = b'{"events":[{"type":"run.started","run_id":"r","pipeline":"p","start_ns":1,"new":2}]}'
    assert Batch(events=[RunStarted(run_id="r", pipeline="p", start_ns=1)]) == decode_json(data)


def _bad_start(value: Any) -> dict[str, Any]:
    event = {"type": "run.started", "run_id": "r", "pipeline": "p", "start_ns": value}
    return {
        "v": 1,
        "events": [{"type": "run.started", "run_id": "r0", "pipeline": "p", "start_ns": 0}, event],
    }


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_bad_start("soon"), "Expected `int`, got `str` - at `$.events[1].start_ns`"),
        (_bad_start(-5), "Expected `int` >= 0 - at `$.events[1].start_ns`"),
        ({"events": [{"type": "run.paused", "run_id": "r"}]}, "at `$.events[0].type`"),
        ({"events": [{"run_id": "r"}]}, "missing required field `type` - at `$.events[0]`"),
        (
            {"events": [{"type": "run.started", "run_id": "r", "pipeline": "p"}]},
            "missing required field `start_ns` - at `$.events[0]`",
        ),
        ({"v": 1}, "missing required field `events`"),
    ],
    ids=["wrong-type", "negative", "unknown-event-type", "no-type", "missing-field", "no-events"],
)
@pytest.mark.parametrize(("encode", "decode"), ENCODINGS, ids=ENCODING_IDS)
def test_decoding_errors_name_the_path(
    payload: dict[str, Any],
    message: str,
    encode: Callable[[Batch], bytes],
    decode: Callable[[bytes], Batch],
) -> None:
    """A malformed batch raises ValidationError whose message names the field's path."""
    data = (
        msgspec.json.encode(payload) if encode is encode_json else msgspec.msgpack.encode(payload)
    )
    with pytest.raises(msgspec.ValidationError) as info:
        decode(data)
    assert message in str(info.value)


# Random valid events: every field drawn from its full valid range.
texts = st.text(max_size=20)
optional_texts = st.none() | texts
nanos = st.integers(min_value=0, max_value=2**63 - 1)
final_status = st.sampled_from(["completed", "failed", "cancelled"])
errors = st.none() | st.builds(ErrorInfo, type=texts, message=texts, traceback=optional_texts)
events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        RunStarted,
        run_id=texts,
        pipeline=texts,
        start_ns=nanos,
        attributes=st.dictionaries(texts, texts, max_size=3),
    ),
    st.builds(
        RunFinished,
        run_id=texts,
        pipeline=texts,
        start_ns=nanos,
        end_ns=nanos,
        duration_ns=nanos,
        status=final_status,
        error=errors,
        step_count=nanos,
        dropped_events=nanos,
    ),
    st.builds(
        StepStarted,
        run_id=texts,
        step_id=texts,
        parent_id=optional_texts,
        key=texts,
        name=texts,
        kind=texts,
        start_ns=nanos,
        inputs=optional_texts,
    ),
    st.builds(
        StepFinished,
        run_id=texts,
        step_id=texts,
        parent_id=optional_texts,
        key=texts,
        name=texts,
        kind=texts,
        start_ns=nanos,
        end_ns=nanos,
        duration_ns=nanos,
        status=final_status,
        error=errors,
        result=optional_texts,
        records=optional_texts,
        inputs=optional_texts,
    ),
)


@quick
@given(st.lists(events, max_size=6))
def test_random_valid_events_round_trip_unchanged(batch_events: list[Event]) -> None:
    """Any valid batch decodes, from JSON and from msgpack, to an equal batch."""
    batch = Batch(events=batch_events)
    assert (batch, batch) == (
        decode_json(encode_json(batch)),
        decode_msgpack(encode_msgpack(batch)),
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)
# Junk that is close to a batch reaches the validator, not just the parser.
near_batches = st.fixed_dictionaries(
    {"v": json_values, "events": st.lists(st.dictionaries(texts, json_values) | json_values)}
)


def _outcome(decode: Callable[[bytes], Batch], data: bytes) -> str:
    """``decoded`` or ``rejected``; any other exception propagates and fails the test."""
    try:
        decode(data)
    except msgspec.DecodeError:  # msgspec.ValidationError is a DecodeError
        return "rejected"
    return "decoded"


@quick
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_decode_errors(data: bytes) -> None:
    """Arbitrary bytes either decode or raise msgspec.DecodeError, never anything else."""
    outcomes = {_outcome(decode_json, data), _outcome(decode_msgpack, data)}
    assert outcomes <= {"decoded", "rejected"}


@quick
@given(near_batches | json_values)
def test_random_structures_only_raise_decode_errors(value: Any) -> None:
    """Well-formed JSON/msgpack of the wrong shape raises only msgspec.DecodeError."""
    outcomes = {
        _outcome(decode_json, msgspec.json.encode(value)),
        _outcome(decode_msgpack, msgspec.msgpack.encode(value)),
    }
    assert outcomes <= {"decoded", "rejected"}

"""A red-team fuzz of ``POST /api/v1/events`` (issue 9): hypothesis makes bad events — hostile
texts, numbers, nesting, JSON text that is not JSON, shapes that are not events — and each batch
of them goes to the server beside a good run. Every answer must be a 2xx or a 4xx (never a
5xx), and a refused batch must write nothing: the row counts stay as they were."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
import pytest
from _pg_testkit import JSON, LOCAL, MSGPACK, run_events
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from pipelens_server import Settings, create_app

#: Batches tried, and bad events per batch: 500 x 24 = 12,000 generated bad inputs.
BATCHES = 500
PER_BATCH = 24

_texts = st.one_of(
    st.text(max_size=20),
    st.just(""),
    st.sampled_from(["\x00", "a\x00b", "\ud800x", "²", "é" * 700, "x" * 3_000, "../../etc"]),
    st.text(min_size=1_100, max_size=1_200),
)
_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, 10**30, True, None]),
)
_json_texts = st.one_of(
    st.sampled_from(
        [
            "",
            "{",
            "NaN",
            "[Infinity]",
            "1e-20000",
            "1e400",
            "-0",
            "[" * 3_000 + "]" * 3_000,
            '{"a":"\\u0000"}',
            '"\\ud800"',
            "0." + "0" * 17_000 + "1",
            "9" * 5_000,
            '{"usage":{"input_tokens":1e30}}',
            '{"output":{"tool_calls":7}}',
            '{"usage":{"input_tokens":-1,"output_tokens":"x"}}',
            "[1,2",
            "null",
        ]
    ),
    st.text(max_size=30),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=8,
    ).map(lambda v: msgspec.json.encode(v).decode()),
)
_any = st.one_of(_texts, _numbers, _json_texts, st.lists(st.integers(), max_size=2))
_FIELDS = {
    "run_id": _texts, "pipeline": _texts, "step_id": _texts, "parent_id": _texts,
    "key": _texts, "name": _texts, "kind": _texts, "status": _texts,
    "start_ns": _numbers, "end_ns": _numbers, "duration_ns": _numbers, "step_count": _numbers,
    "dropped_events": _numbers, "inputs": _json_texts, "result": _json_texts,
    "records": _json_texts, "llm": _json_texts, "llm_usage": _json_texts,
    "attributes": st.dictionaries(_texts, _any, max_size=2), "error": _any, "type": _texts,
}  # fmt: skip
_LONE_SURROGATE = (
    b'{"v":1,"events":[{"type":"run.started","run_id":"\\ud800","pipeline":"p","start_ns":1}]}'
)
_TYPES = ["run.started", "run.finished", "step.started", "step.finished"]


@st.composite
def _bad_event(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with one to three fields made bad (or an unknown field, or a non-event)."""
    base = msgspec.to_builtins(draw(st.sampled_from(run_events("fz"))))
    assert isinstance(base, dict)
    base["type"] = draw(st.sampled_from(_TYPES)) if draw(st.booleans()) else base["type"]
    for name in draw(st.lists(st.sampled_from(sorted(_FIELDS)), min_size=1, max_size=3)):
        base[name] = draw(_FIELDS[name])
    return base


def _counts(conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """The row counts as committed now (``conn`` is in autocommit: each query sees the latest)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM steps), "
        "(SELECT count(*) FROM pipelines)"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def _body(events: list[Any], as_msgpack: bool) -> bytes:
    batch = {"v": 1, "events": events}
    if as_msgpack:
        return msgspec.msgpack.encode(batch)
    # JSON text of what msgpack carries; an unencodable value (a lone surrogate) is sent raw.
    return msgspec.json.encode(batch)


@pytest.mark.timeout(600)  # two to three minutes on two shared cores; the default is 120 s
def test_bad_events_never_get_a_5xx_nor_write_half(database_url: str) -> None:
    """12,000 generated bad events in 500 batches: 0 x 5xx, and every refused batch writes
    nothing (not even its good run)."""
    seen = {"inputs": 0, "batches": 0, "5xx": 0, "4xx": 0, "2xx": 0, "partial": 0}
    # One connection for the 1,000 counts, not a new one for each.
    with (
        TestClient(create_app(Settings(database_url=database_url)), base_url=LOCAL) as client,
        psycopg.connect(database_url, autocommit=True) as conn,
    ):

        @given(
            bad=st.lists(_bad_event(), min_size=PER_BATCH, max_size=PER_BATCH),
            good_first=st.booleans(),
            as_msgpack=st.booleans(),
        )
        @settings(
            max_examples=BATCHES,
            deadline=None,
            derandomize=True,
            database=None,
            # No shrinking: the database changes under each case, so a replay is not the same
            # input; the first failure is reported as it was.
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(bad: list[dict[str, Any]], good_first: bool, as_msgpack: bool) -> None:
            good = [msgspec.to_builtins(e) for e in run_events(f"ok-{seen['batches']}")]
            events = good + bad if good_first else bad + good
            try:
                body = _body(events, as_msgpack)
            except (msgspec.EncodeError, UnicodeEncodeError, OverflowError):
                # What no encoder makes: a lone surrogate escaped in JSON, a reserved msgpack byte.
                body = b"\xc1" if as_msgpack else _LONE_SURROGATE
            before = _counts(conn)
            headers = MSGPACK if as_msgpack else JSON
            status = client.post("/api/v1/events", content=body, headers=headers).status_code
            after = _counts(conn)
            seen["inputs"] += len(bad)
            seen["batches"] += 1
            seen[f"{status // 100}xx"] = seen.get(f"{status // 100}xx", 0) + 1
            if status >= 400 and after != before:
                seen["partial"] += 1
            assert status < 500, f"{status} for {body[:300]!r}"
            assert status < 400 or after == before, f"a refused batch wrote {before} → {after}"

        check()
    print(f"ingest fuzz: {seen}")
    assert seen["inputs"] >= 10_000
    assert (seen["5xx"], seen["partial"]) == (0, 0)
    assert seen["4xx"] > 0


def test_the_fuzz_reaches_the_server_with_good_batches_too(database_url: str) -> None:
    """The fuzz's good run alone is stored (so a 4xx above is the bad events' doing)."""
    with TestClient(create_app(Settings(database_url=database_url)), base_url=LOCAL) as client:
        body = _body([msgspec.to_builtins(e) for e in run_events("ok")], as_msgpack=True)
        assert client.post("/api/v1/events", content=body, headers=MSGPACK).status_code == 202
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert _counts(conn)[:2] == (1, 3)

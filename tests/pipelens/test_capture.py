"""Captured inputs, results and records: never raising, size-capped, redacted on the way out."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

import pipelens
from pipelens._core.settings import Settings, settings
from pipelens.events import StepFinished, StepStarted
from pipelens.testing import CapturedEvents

SECRET_KEY = "sk-" + "A1b2C3d4E5f6G7h8J9k0"  # the shape of an OpenAI key
BEARER = "Bearer " + "eyJhbGciOiJIUzI1NiJ9.payload"


@pipelens.step
def echo(value: Any) -> Any:
    return value


@pipelens.step
def call_llm(prompt: str, api_key: str, max_tokens: int = 16, **options: Any) -> dict[str, Any]:
    """A step shaped like an LLM client call, decorated before any configure() in the tests."""
    pipelens.record("token", "tok-123456")
    pipelens.record("total_tokens", 42)
    return {"text": f"answer to {prompt}", "usage": {"total_tokens": 42, "prompt_tokens": 30}}


def _wire(events: CapturedEvents, key: str) -> tuple[Any, Any, Any]:
    """The decoded inputs, result and records of step ``key`` as they left the process."""
    started: StepStarted = next(s for s in events.steps_started() if s.key == key)
    finished: StepFinished = events.step(key)

    def load(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return load(started.inputs), load(finished.result), load(finished.records)


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")


class _Hostile:
    """Raises on every attribute lookup it does not define."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no attribute {name} for you")


def test_unencodable_values_become_short_reprs(events: CapturedEvents) -> None:
    """Sockets, locks, broken reprs and odd keys are captured as text, cycles cut; no raise."""
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    lock = threading.Lock()
    with socket.socket() as sock:
        values: list[Any] = [sock, lock, cyclic, _BadRepr(), {(1, 2): "tuple key"}, _Hostile()]
        for value in values:
            assert echo(value) is value

    captured = [json.loads(s.result or "null") for s in events.steps()]
    assert str(captured[0]).startswith("<socket.socket")
    assert "lock" in str(captured[1])
    assert captured[2] == [1, "<cycle>"]  # structurally, the cycle cut where it closes
    assert "_BadRepr" in str(captured[3])
    assert captured[4] == {"(1, 2)": "tuple key"}
    assert "_Hostile" in str(captured[5])
    assert [s.status for s in events.steps()] == ["completed"] * 6
    for text in [s.inputs for s in events.steps_started()]:
        assert text is not None
        assert len(text) < 400  # a short repr, not a dump


def test_unencodable_record_is_captured_as_text(events: CapturedEvents) -> None:
    """A record whose value cannot be encoded is kept as a short repr."""

    @pipelens.step
    def records_a_lock() -> str:
        pipelens.record("lock", threading.Lock())
        return "ok"

    assert records_a_lock() == "ok"
    _, _, records = _wire(events, "records_a_lock")
    assert "lock" in records["lock"]


def test_values_over_the_size_cap_are_truncated(events: CapturedEvents) -> None:
    """A value whose JSON exceeds ``max_value_bytes`` becomes a ``$truncated`` preview."""
    pipelens.configure(max_value_bytes=300)
    big = "x" * 5000

    @pipelens.step
    def large(text: str) -> str:
        pipelens.record("copy", text)
        return text

    assert big == large(big)
    inputs, result, records = _wire(events, "large")
    full_inputs = json.dumps({"text": big}, separators=(",", ":"))
    for value, full in ((inputs, full_inputs), (result, f'"{big}"'), (records["copy"], f'"{big}"')):
        assert True is value["$truncated"]
        assert len(full) == value["bytes"]
        assert len(value["preview"]) > 100
        assert full.startswith(value["preview"])
    started = events.steps_started()[0]
    finished = events.step("large")
    assert started.inputs is not None
    assert finished.result is not None
    assert len(started.inputs) <= 300
    assert len(finished.result) <= 300


def test_secret_keys_are_redacted_but_token_counts_are_not(events: CapturedEvents) -> None:
    """``api_key``, ``password``, ``token``, ``Authorization``... are redacted; token counts not."""
    call_llm(
        "hello",
        "hunter2-key",
        max_tokens=64,
        password="pw-123",
        headers={"Authorization": "Basic abc", "Accept": "json"},
        access_token="at-1",
    )

    inputs, result, records = _wire(events, "call_llm")
    assert inputs == {
        "prompt": "hello",
        "api_key": "[REDACTED]",
        "max_tokens": 64,
        "password": "[REDACTED]",
        "headers": {"Authorization": "[REDACTED]", "Accept": "json"},
        "access_token": "[REDACTED]",
    }
    assert result == {"text": "answer to hello", "usage": {"total_tokens": 42, "prompt_tokens": 30}}
    assert records == {"token": "[REDACTED]", "total_tokens": 42}


def test_secret_looking_values_inside_strings_are_redacted(events: CapturedEvents) -> None:
    """``sk-...`` keys and ``Bearer ...`` tokens are cut out of any string, error text included."""

    @pipelens.step
    def leaky(note: str) -> str:
        pipelens.record("header", BEARER)
        raise ValueError(f"rejected key {SECRET_KEY}")

    with pytest.raises(ValueError, match=SECRET_KEY):
        leaky(f"use {SECRET_KEY} now")

    inputs, _, records = _wire(events, "leaky")
    assert inputs == {"note": "use [REDACTED] now"}
    assert records == {"header": "[REDACTED]"}
    error = events.step("leaky").error
    assert error is not None
    assert error.message == "rejected key [REDACTED]"
    assert SECRET_KEY not in (error.traceback or "")


def test_secrets_inside_a_truncated_value_are_redacted(events: CapturedEvents) -> None:
    """A value cut by the size cap keeps no secret in its preview."""
    pipelens.configure(max_value_bytes=400)
    request = {"model": "m", "api_key": "hunter2-key", "token": "tok-1", "prompt": "p" * 2000}

    assert request is echo(request)

    inputs, result, _ = _wire(events, "echo")
    for value in (inputs, result):
        assert True is value["$truncated"]
        assert "hunter2" not in value["preview"]
        assert "tok-1" not in value["preview"]
        assert "[REDACTED]" in value["preview"]


def test_redaction_can_be_turned_off(events: CapturedEvents) -> None:
    """``configure(redact=False)`` sends values as they are, for steps decorated before it too."""
    pipelens.configure(redact=False)
    call_llm(f"key {SECRET_KEY}", "hunter2-key")

    inputs, _, records = _wire(events, "call_llm")
    assert {"prompt": f"key {SECRET_KEY}", "api_key": "hunter2-key"} == inputs
    assert records == {"token": "tok-123456", "total_tokens": 42}


def test_redact_keys_replaces_the_default_patterns(events: CapturedEvents) -> None:
    """``configure(redact_keys=[...])`` redacts those keys instead of the defaults."""
    pipelens.configure(redact_keys=["^prompt$", "customer"])
    call_llm("private question", "hunter2-key", customer_id=7)

    inputs, _, records = _wire(events, "call_llm")
    assert inputs == {
        "prompt": "[REDACTED]",
        "api_key": "hunter2-key",
        "customer_id": "[REDACTED]",
    }
    assert records == {"token": "tok-123456", "total_tokens": 42}


def test_secret_values_are_redacted_with_custom_keys_too(events: CapturedEvents) -> None:
    """Custom key patterns do not switch off the search for secret-looking values."""
    pipelens.configure(redact_keys=["customer"])
    echo(f"key {SECRET_KEY}")
    inputs, result, _ = _wire(events, "echo")
    assert (inputs, result) == ({"value": "key [REDACTED]"}, "key [REDACTED]")


def test_file_transport_writes_no_secret(tmp_path: Path) -> None:
    """Events written by the batching file transport are redacted like the in-memory ones."""
    path = tmp_path / "runs.jsonl"
    pipelens.configure(file=str(path))
    call_llm(f"use {SECRET_KEY}", "hunter2-key", 16, headers={"Authorization": BEARER})
    assert pipelens.flush(10)

    text = path.read_text()
    for secret in (SECRET_KEY, "hunter2-key", "tok-123456", "eyJhbGciOiJIUzI1NiJ9"):
        assert secret not in text
    events = [e for batch in pipelens.read_event_file(path) for e in batch.events]
    (started,) = [e for e in events if isinstance(e, StepStarted)]
    assert json.loads(started.inputs or "null") == {
        "prompt": "use [REDACTED]",
        "api_key": "[REDACTED]",
        "max_tokens": 16,
        "headers": {"Authorization": "[REDACTED]"},
    }


def test_capture_can_be_switched_off_per_step(events: CapturedEvents) -> None:
    """``capture_args=False`` / ``capture_result=False`` on one step leave those fields empty."""

    @pipelens.step(capture_args=False)
    def no_args(x: int) -> int:
        return x

    @pipelens.step(capture_result=False)
    def no_result(x: int) -> int:
        return x

    assert (no_args(1), no_result(2)) == (1, 2)
    assert [s.inputs for s in events.steps_started()] == [None, '{"x":2}']
    assert [s.result for s in events.steps()] == ["1", None]


def test_capture_can_be_switched_off_globally(events: CapturedEvents) -> None:
    """``configure(capture_args=False, capture_result=False)`` holds for all steps; records stay."""
    pipelens.configure(capture_args=False, capture_result=False)
    call_llm("hello", "key")
    inputs, result, records = _wire(events, "call_llm")
    assert (inputs, result) == (None, None)
    assert records == {"token": "[REDACTED]", "total_tokens": 42}

    events.clear()
    pipelens.configure(capture_args=True, capture_result=True)
    assert echo("x") == "x"
    assert _wire(events, "echo")[:2] == ({"value": "x"}, "x")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("enabled", "yes"),
        ("capture_args", 1),
        ("capture_result", "no"),
        ("redact", "false"),
        ("propagate_threads", "off"),
        ("max_value_bytes", 0),
        ("max_value_bytes", "1MB"),
        ("max_value_bytes", True),
        ("max_records", -5),
        ("exit_timeout", -1),
        ("exit_timeout", "soon"),
        ("heartbeat", -1),
        ("heartbeat", "soon"),
        ("heartbeat", True),
        ("heartbeat", float("inf")),
        ("redact_keys", ["(unclosed"]),
        ("redact_keys", [42]),
        ("transport", object()),
        ("file", 123),
    ],
)
def test_invalid_configure_argument_names_the_option(option: str, value: object) -> None:
    """A bad ``configure()`` argument raises ``ConfigurationError`` naming the option."""
    options: dict[str, Any] = {option: value}
    with pytest.raises(pipelens.ConfigurationError, match=f"{option}="):
        pipelens.configure(**options)


def test_invalid_configure_call_changes_nothing() -> None:
    """A ``configure()`` call with one bad argument leaves every setting as it was."""
    before = {name: getattr(settings, name) for name in Settings.__slots__}
    with pytest.raises(pipelens.ConfigurationError, match="max_records="):
        pipelens.configure(capture_args=False, transport=pipelens.MemoryTransport(), max_records=0)
    assert before == {name: getattr(settings, name) for name in Settings.__slots__}


def test_a_record_key_that_is_not_a_str_is_a_type_error_and_loses_no_other_record(
    events: CapturedEvents,
) -> None:
    """``record(5, ...)`` says what is wrong; the step's other records and the run's LLM usage
    survive it (a non-str key once nulled the step's records and the run's usage)."""
    seen: list[str] = []

    @pipelens.step
    def keyed() -> None:
        pipelens.record("kept", 1)
        for bad in (5, "", None):
            with pytest.raises(TypeError, match="key must be a non-empty str") as caught:
                pipelens.record(bad, 1)  # type: ignore[arg-type]
            seen.append(str(caught.value))
        pipelens.current_step().records[7] = "written directly, as the seed's code may"  # type: ignore[union-attr,index]
        with pipelens.llm_call(provider="openai", model="gpt-4o") as call:
            call.set_usage(input_tokens=10, output_tokens=5)

    keyed()
    _, _, records = _wire(events, "keyed")
    assert records == {"kept": 1}
    assert "not 5" in seen[0]
    usage = json.loads(events.runs()[0].llm_usage or "null")
    assert usage["gpt-4o"]["calls"] == 1

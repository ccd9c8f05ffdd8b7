"""The server scrubs secrets too: whatever a client sends raw (``/api/v1/events``, the seed's
endpoints, ``/import``) is stored redacted, by the same rules as the client's."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import msgspec
import pytest
from _dashboard_kit import form_token
from _pg_testkit import JSON, MSGPACK, T0, json_body, msgpack_body, read_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from pipelens._core.capture import scrub
from pipelens._core.settings import SECRET_FRAGMENTS
from pipelens.events import ErrorInfo, Event, RunFinished, RunStarted, StepFinished, StepStarted
from pipelens_server._ingest._scrub import (
    REDACTED,
    may_hold_secret,
    patterns,
    scrub_json,
    scrub_text,
    secrets_file,
)

Client = TestClient[Litestar]
MS = time.time_ns() // 1_000_000 - 3_600_000

URL = "https://admin:pw-1@db.example/prod"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlX2hlcmU"
GOOGLE = "AIza" + "Sy0123456789abcdefghijklmnopqrstuvw"
SLACK = "xoxb-1234567890-abcdefghijkl"
API_KEY = "api_key=zz9plural9alpha"
#: What no stored row may hold once scrubbed.
PLANTED = ("pw-1", JWT, "hunter2", "open-sesame", GOOGLE, SLACK, "zz9plural9alpha", "s3cr3t-attr")

INPUTS = {"url": URL, "note": JWT, "pwd": "hunter2", "passphrase": "open-sesame"}
RESULT = [GOOGLE, f"slack says {SLACK}"]
RECORDS = {"jwt": JWT, "count": 3, "nested": {"pwd": "hunter2", "ok": "fine"}}
MESSAGE = f"connect failed ({API_KEY})"
TRACEBACK = f'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: {API_KEY}'


def _stored_text(database_url: str) -> str:
    return json.dumps(read_rows(database_url), default=str)


def _assert_scrubbed(database_url: str) -> dict[str, list[dict[str, Any]]]:
    text = _stored_text(database_url)
    assert [secret for secret in PLANTED if secret in text] == []
    return read_rows(database_url)


def _events(run_id: str) -> list[Event]:
    error = ErrorInfo(type="ValueError", message=MESSAGE, traceback=TRACEBACK)
    inputs, result, records = json.dumps(INPUTS), json.dumps(RESULT), json.dumps(RECORDS)
    return [
        RunStarted(run_id=run_id, pipeline="p", start_ns=T0,
                   attributes={"db_password": "s3cr3t-attr", "dsn": URL}),
        StepStarted(run_id=run_id, step_id="s", key="a", name="a", start_ns=T0, inputs=inputs),
        StepFinished(run_id=run_id, step_id="s", key="a", name="a", start_ns=T0, end_ns=T0 + 5,
                     duration_ns=5, status="failed", inputs=inputs, result=result,
                     records=records, error=error),
        RunFinished(run_id=run_id, pipeline="p", start_ns=T0, end_ns=T0 + 5, duration_ns=5,
                    status="failed", error=error, step_count=1),
    ]  # fmt: skip


def _check_event_rows(rows: dict[str, list[dict[str, Any]]]) -> None:
    (run,) = rows["runs"]
    assert run["attributes"] == {
        "db_password": REDACTED,
        "dsn": "https://[REDACTED]@db.example/prod",
    }
    assert run["error_message"] == f"connect failed ({REDACTED})"
    (step,) = rows["steps"]
    assert step["inputs"] == {
        "url": "https://[REDACTED]@db.example/prod",
        "note": REDACTED,
        "pwd": REDACTED,
        "passphrase": REDACTED,
    }
    assert step["result"] == [REDACTED, f"slack says {REDACTED}"]
    assert step["records"] == {
        "jwt": REDACTED,
        "count": 3,
        "nested": {"pwd": REDACTED, "ok": "fine"},
    }
    assert step["error_message"] == f"connect failed ({REDACTED})"
    assert step["error_traceback"].endswith(f"ValueError: {REDACTED}")


@pytest.mark.parametrize("mode", ["json", "msgpack"])
def test_raw_api_events_are_stored_redacted(client: Client, database_url: str, mode: str) -> None:
    """Events a client sends unscrubbed are stored with every planted secret redacted."""
    events = _events("raw")
    body, headers = (json_body(events), JSON) if mode == "json" else (msgpack_body(events), MSGPACK)
    assert client.post("/api/v1/events", content=body, headers=headers).status_code == 202
    _check_event_rows(_assert_scrubbed(database_url))


def _seed_step(key: str, **extra: Any) -> dict[str, Any]:
    time = {"startTs": MS, "endTs": MS + 10, "timeUsageMs": 10}
    return {"name": key, "key": key, "time": time, **extra}


def _seed_pipeline(run_id: str) -> dict[str, Any]:
    step = _seed_step(
        "demo", records=RECORDS, result={"dsn": URL, "google": [GOOGLE]}, error=MESSAGE
    )
    return {**step, "logVersion": 1, "runId": run_id, "steps": [step]}


def _check_seed_rows(rows: dict[str, list[dict[str, Any]]]) -> None:
    (run,) = rows["runs"]
    assert run["error_message"] == f"connect failed ({REDACTED})"
    (step,) = rows["steps"]
    assert step["records"] == {
        "jwt": REDACTED,
        "count": 3,
        "nested": {"pwd": REDACTED, "ok": "fine"},
    }
    assert step["result"] == {"dsn": "https://[REDACTED]@db.example/prod", "google": [REDACTED]}
    assert step["error_message"] == f"connect failed ({REDACTED})"


def test_seed_endpoints_store_redacted(client: Client, database_url: str) -> None:
    """The seed's batch endpoint (and so its others, which share the rows) scrubs records,
    results and errors of steps and runs."""
    meta = _seed_pipeline("seed")
    body = [
        {"type": "pipeline", "operation": "start", "meta": {**meta, "steps": []}},
        {"type": "step", "operation": "finish", "runId": "seed", "step": meta["steps"][0]},
        {"type": "pipeline", "operation": "finish", "status": "failed", "meta": meta},
    ]
    assert client.post("/api/ingestion/batch", json=body).status_code == 200
    _check_seed_rows(_assert_scrubbed(database_url))


def test_seed_step_finish_stores_redacted(client: Client, database_url: str) -> None:
    """``/step/finish`` alone scrubs too."""
    meta = _seed_pipeline("seed2")
    assert client.post("/api/ingestion/pipeline/start", json=meta).status_code == 201
    body = {"runId": "seed2", "step": meta["steps"][0]}
    assert client.post("/api/ingestion/step/finish", json=body).status_code in {200, 201}
    _check_seed_rows(_assert_scrubbed(database_url))


def _import(client: Client, name: str, data: bytes) -> None:
    token = form_token(client, "/import")
    files = [("files", (name, data, "application/octet-stream"))]
    response = client.post("/import", files=files, data={"csrf_token": token})
    assert response.status_code == 200, response.text
    assert "nothing was imported" not in response.text


def test_imported_event_lines_are_stored_redacted(client: Client, database_url: str) -> None:
    """A JSON-lines file of unscrubbed batches is imported redacted."""
    _import(client, "events.jsonl", json_body(_events("imp")) + b"\n")
    _check_event_rows(_assert_scrubbed(database_url))


def test_an_imported_seed_export_is_stored_redacted(client: Client, database_url: str) -> None:
    """A seed PipelineMeta export is imported redacted."""
    _import(client, "run.json", json.dumps(_seed_pipeline("imp-seed")).encode())
    _check_seed_rows(_assert_scrubbed(database_url))


SAME_AS_CLIENT = [
    {"url": URL, "note": JWT, "pwd": "x", "passphrase": "y", "max_tokens": 5},
    [GOOGLE, SLACK, API_KEY, "Bearer abcdefghijkl", "sk-" + "a" * 20, "AKIA" + "A" * 16],
    {"Authorization": "x", "session_id": 1, "access-key": [1], "private_key": None},
    {"records": {"api_key": "k", "session": "s", "total_tokens": 3, "auth": "a", "author": "b"}},
    {"$truncated": True, "bytes": 99999, "preview": '{"a": 1, "password": "hunter2", "b'},
    {"text": "token: abcdef and password='p4ss' then ghp_" + "b" * 24},
    "nothing to see here",
    [1, 2.5, None, True, {"k": "v"}],
    {"caf\u00e9": "https://us\u00e9r:p\u00e4ss@h/"},
]


@pytest.mark.parametrize("value", SAME_AS_CLIENT)
def test_the_server_scrubs_as_the_client_does(value: Any) -> None:
    """The same JSON text scrubbed by the client and by the server is the same text."""
    text = msgspec.json.encode(value).decode()
    assert scrub_json(text) == scrub(text)


def test_text_is_scrubbed_as_the_client_scrubs_error_text() -> None:
    """Error messages and tracebacks lose their matches, as the client's ``scrub_event`` does."""
    assert scrub_text(TRACEBACK).endswith(f"ValueError: {REDACTED}")
    assert scrub_text("plain") == "plain"


def test_escaped_json_is_scrubbed_and_invalid_json_is_left_as_it_is() -> None:
    """Escapes cannot hide a secret from the pre-check; text that is not JSON stays as it was."""
    escaped = '{"p\\u0061ssword": "x", "u": "https:\\/\\/a:b@h"}'
    assert json.loads(scrub_json(escaped)) == {"password": REDACTED, "u": f"https://{REDACTED}@h"}
    assert scrub_json('{"pwd": ') == '{"pwd": '
    plain = '{"a": [1, 2], "b": "fine"}'
    assert scrub_json(plain) is plain


def test_the_pre_check_misses_no_folded_letter_and_shares_the_fragments() -> None:
    """The fragments are the client's (one list); a key only case-insensitive matching folds to
    a secret one (the long s of ``pa\u017fsword``) is still redacted."""
    assert patterns().fragments == SECRET_FRAGMENTS
    assert json.loads(scrub_json('{"pa\u017fsword": "x"}')) == {"pa\u017fsword": REDACTED}
    assert all(may_hold_secret(secret) for secret in (URL, JWT, GOOGLE, SLACK, API_KEY))


@pytest.mark.parametrize("padding", [0, 100], ids=["short", "long"])
def test_the_pre_check_finds_each_fragment_in_short_and_long_texts(padding: int) -> None:
    """Each fragment, lower or upper case, is found in a short text (one regular expression)
    and in a long one (a test per fragment); a text with none of them passes."""
    pad = "x" * padding
    for fragment in patterns().fragments:
        for text in (fragment, fragment.upper()):
            assert patterns().suspect(f'{pad}["{text}"]'), text
    assert not patterns().suspect(f'{pad}{{"i":57}}')


def test_a_run_s_llm_usage_is_stored_redacted(client: Client, database_url: str) -> None:
    """A run's ``llm_usage`` (by model name, which may be a URL with a password or carry a key)
    is scrubbed like every other captured text; the counts stay, and two names that scrub to
    one add up."""
    usage = {
        URL: {"calls": 1, "input_tokens": 3},
        URL.replace("pw-1", "pw-2"): {"calls": 4},
        "gpt-4o": {"calls": 2, "note": GOOGLE},
    }
    finished = RunFinished(
        run_id="u", pipeline="p", start_ns=T0, end_ns=T0 + 5, duration_ns=5,
        status="completed", step_count=0, llm_usage=json.dumps(usage),
    )  # fmt: skip
    events: list[Event] = [finished]
    response = client.post("/api/v1/events", content=msgpack_body(events), headers=MSGPACK)
    assert response.status_code == 202
    (run,) = _assert_scrubbed(database_url)["runs"]
    assert run["llm_usage"] == {
        "https://[REDACTED]@db.example/prod": {"calls": 5, "input_tokens": 3},
        "gpt-4o": {"calls": 2, "note": REDACTED},
    }


_SECRETS = json.loads(secrets_file().read_text())
_EXAMPLES = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("pattern", _SECRETS["values"])
def test_every_value_pattern_is_reached_through_a_fragment(pattern: str) -> None:
    """Any text matching a ``values`` pattern of ``secrets.json`` passes the hand-kept
    ``fragments`` pre-check and is redacted by server and client alike: a pattern added without
    its fragment fails here."""

    @_EXAMPLES
    @given(st.from_regex(pattern))
    def check(text: str) -> None:
        assert patterns().suspect(text)
        assert REDACTED in scrub_text(text)
        assert REDACTED in (scrub(json.dumps([text])) or "")

    check()


@pytest.mark.parametrize("pattern", _SECRETS["keys"])
def test_every_key_pattern_is_reached_through_a_fragment(pattern: str) -> None:
    """Any key matching a ``keys`` pattern (case-insensitively) passes the pre-check, and the
    value under it is redacted by server and client alike."""

    @_EXAMPLES
    @given(st.from_regex(re.compile(pattern, re.IGNORECASE)))
    def check(key: str) -> None:
        assert patterns().suspect(key)
        document = json.dumps({key: "plain"})
        assert json.loads(scrub_json(document)) == {key: REDACTED}
        assert json.loads(scrub(document) or "") == {key: REDACTED}

    check()

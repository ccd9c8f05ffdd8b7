"""Never a 5xx for bad input: every route answers 4xx naming the field, pages answer HTML, and
stored data can never break a page (issue 9)."""

from __future__ import annotations

import os

import msgspec
import psycopg
import pytest
from _dashboard_kit import form_token, ingest
from _pg_testkit import JSON, MSGPACK, T0, json_body, json_with, read_rows, run_events
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import (
    MAX_KEY_BYTES,
    MAX_NAME_BYTES,
    MAX_PIPELINE_BYTES,
    MAX_RUN_ID_BYTES,
    RunFinished,
    RunStarted,
    StepFinished,
)
from pipelens_server._pages._gantt import CHILD_CAP

Client = TestClient[Litestar]
EMPTY: dict[str, list[object]] = {"runs": [], "steps": [], "pipelines": []}


def _post(
    client: Client, body: bytes, headers: dict[str, str] = JSON
) -> tuple[int, dict[str, str]]:
    response = client.post("/api/v1/events", content=body, headers=headers)
    return response.status_code, response.json()


def _step(**fields: object) -> StepFinished:
    values: dict[str, object] = {
        "run_id": "r1",
        "step_id": "s1",
        "key": "answer",
        "name": "answer",
        "start_ns": T0,
        "end_ns": T0 + 10,
        "duration_ns": 10,
        "status": "completed",
    } | fields
    return StepFinished(**values)  # type: ignore[arg-type]


# -- nesting and numbers ------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_100, 100_000])
def test_deep_nesting_in_a_json_body_is_a_400(
    client: Client, database_url: str, depth: int
) -> None:
    """An unknown field nested deeper than Python's recursion limit is a 400 at ``$``."""
    body = b'{"v":1,"x":' + b"[" * depth + b"]" * depth + b',"events":[]}'
    status, answer = _post(client, body)
    assert (status, answer["path"]) == (400, "$")
    assert "nests deeper" in answer["detail"]
    assert read_rows(database_url) == EMPTY


def test_deep_nesting_in_a_msgpack_body_is_a_400(client: Client) -> None:
    """The same in msgpack (a fixarray of one, 100,000 times)."""
    body = b"\x82\xa1v\x01\xa1x" + b"\x91" * 100_000 + b"\xc0"
    status, answer = _post(client, body, MSGPACK)
    assert (status, answer["path"]) == (400, "$")


@pytest.mark.parametrize("depth", [600, 5_000])
def test_deep_nesting_in_a_captured_value_is_a_400_naming_it(
    client: Client, database_url: str, depth: int
) -> None:
    """A captured value nested past the limit is a 400 naming the event's field."""
    events = run_events("r1")
    body = json_with(events, 3, result="[" * depth + "]" * depth)
    status, answer = _post(client, body)
    assert (status, answer["path"]) == (400, "$.events[3].result")
    assert read_rows(database_url) == EMPTY


def test_numbers_postgres_cannot_store_are_stored_safely(client: Client, database_url: str) -> None:
    """``1e-20000`` and 20,000 decimals (beyond ``numeric``) are stored as the float they read
    as; a 400 would lose a whole batch for one odd number."""
    tiny = "0." + "0" * 20_000 + "1"
    body = json_with(run_events("r1"), 3, result=f'{{"a": 1e-20000, "b": {tiny}, "c": "1e-20000"}}')
    status, _ = _post(client, body)
    assert status == 202
    (step,) = [s for s in read_rows(database_url)["steps"] if s["key"] == "answer.retrieve"]
    assert step["result"] == {"a": 0.0, "b": 0.0, "c": "1e-20000"}


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "1e400", "[" + "9" * 5_000 + "]"])
def test_numbers_json_cannot_hold_are_a_400_naming_the_field(client: Client, text: str) -> None:
    """NaN, infinities and numbers past a double are refused, naming the field."""
    status, answer = _post(client, json_with(run_events("r1"), 3, records=text))
    assert (status, answer["path"]) == (400, "$.events[3].records")


# -- nonsense and lengths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "fields", "path"),
    [
        (0, {"run_id": ""}, "$.events[0].run_id"),
        (0, {"pipeline": ""}, "$.events[0].pipeline"),
        (7, {"pipeline": ""}, "$.events[7].pipeline"),
        (3, {"run_id": ""}, "$.events[3].run_id"),
        (3, {"key": ""}, "$.events[3].key"),
        (3, {"end_ns": T0}, "$.events[3].end_ns"),
        (7, {"start_ns": T0 + 1_000}, "$.events[7].end_ns"),
        (0, {"run_id": "r" * (MAX_RUN_ID_BYTES + 1)}, "$.events[0].run_id"),
        (0, {"pipeline": "é" * (MAX_PIPELINE_BYTES // 2 + 1)}, "$.events[0].pipeline"),
        (3, {"key": "k" * (MAX_KEY_BYTES + 1)}, "$.events[3].key"),
        (3, {"name": "n" * 3_000}, "$.events[3].name"),
        (3, {"step_id": "s" * 3_000}, "$.events[3].step_id"),
        (3, {"parent_id": "p" * 3_000}, "$.events[3].parent_id"),
        (1, {"kind": "k" * 3_000}, "$.events[1].kind"),
    ],
)
def test_nonsense_and_overlong_fields_are_a_400_naming_them(
    client: Client, database_url: str, index: int, fields: dict[str, object], path: str
) -> None:
    """Empty ids, an end before the start, and texts over the limits are refused by name, and the
    batch writes nothing (before: a 503 from the btree limit, retried forever)."""
    status, answer = _post(client, json_with(run_events("r1"), index, **fields))
    assert (status, answer["path"]) == (400, path), answer
    assert read_rows(database_url) == EMPTY


def test_texts_at_the_limits_are_stored(client: Client, database_url: str) -> None:
    """Incompressible texts of exactly the limits fit every index (the step stats index holds
    pipeline, key and run id together)."""
    noise = os.urandom(4_000).hex()
    run_id, pipeline = noise[:MAX_RUN_ID_BYTES], noise[1 : MAX_PIPELINE_BYTES + 1]
    key, name = noise[2 : MAX_KEY_BYTES + 2], noise[3 : MAX_NAME_BYTES + 3]
    events = [
        RunStarted(run_id=run_id, pipeline=pipeline, start_ns=T0),
        _step(run_id=run_id, key=key, name=name, step_id=noise[4:MAX_NAME_BYTES + 4]),
        RunFinished(run_id=run_id, pipeline=pipeline, start_ns=T0, end_ns=T0 + 10,
                    duration_ns=10, status="completed"),
    ]  # fmt: skip
    status, _ = _post(client, json_body(events))
    assert status == 202
    assert [s["key"] for s in read_rows(database_url)["steps"]] == [key]


# -- LLM values the pages compute with ----------------------------------------------------------


@pytest.mark.parametrize(
    ("llm", "path"),
    [
        ({"usage": {"input_tokens": 1e30}}, "$.events[0].llm.usage.input_tokens"),
        ({"usage": {"output_tokens": -5}}, "$.events[0].llm.usage.output_tokens"),
        ({"output": {"tool_calls": 7}}, "$.events[0].llm.output.tool_calls"),
    ],
)
def test_llm_values_no_page_can_sum_or_list_are_a_400(
    client: Client, llm: dict[str, object], path: str
) -> None:
    """Token counts out of range and tool calls that are not a list are refused by name."""
    status, answer = _post(
        client, json_body([_step(kind="llm", llm=msgspec.json.encode(llm).decode())])
    )
    assert (status, answer["path"]) == (400, path)


def test_run_llm_usage_out_of_range_is_a_400(client: Client) -> None:
    """A run's ``llm_usage`` counts are checked the same way."""
    usage = '{"gpt-4o": {"calls": 1, "input_tokens": 1e30}}'
    status, answer = _post(client, json_with(run_events("r1"), 7, llm_usage=usage))
    assert (status, answer["path"]) == (400, "$.events[7].llm_usage.gpt-4o.input_tokens")


def test_stored_bad_llm_values_break_no_page(client: Client, database_url: str) -> None:
    """Rows written around the ingest checks (older rows, other writers): a token count of 1e30
    and tool calls that are not a list still leave /llm, the usage API and the step panel up
    (before: a 500 for everyone until purged)."""
    ingest(client, run_events("r1"))
    llm = (
        '{"model": "gpt-4o", "usage": {"input_tokens": 1e30, "output_tokens": 1e30}, '
        '"output": {"tool_calls": 7, "text": "hi"}}'
    )
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE steps SET kind = 'llm', llm = %s::jsonb WHERE key = 'answer.rerank'", [llm]
        )
        conn.execute(
            "UPDATE runs SET llm_usage = %s::jsonb",
            ['{"gpt-4o": {"calls": 1e30, "input_tokens": 1e30, "output_tokens": -1e30}}'],
        )
    since = f"?since_ns={T0 - 10**9}&until_ns={T0 + 10**9}"
    assert client.get(f"/llm{since}").status_code == 200
    assert client.get(f"/api/v1/llm/usage{since}").status_code == 200
    with psycopg.connect(database_url) as conn:  # the step-level usage path too
        conn.execute("UPDATE runs SET llm_usage = NULL")
    assert client.get(f"/llm{since}").status_code == 200
    assert client.get(f"/api/v1/llm/usage{since}").status_code == 200
    panel = client.get(
        "/runs/r1?step=answer.rerank", headers={"hx-request": "true", "hx-target": "step_panel"}
    )
    assert panel.status_code in (200, 286)
    assert "hi" in panel.text


# -- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/api/v1/runs?pipeline=a%00b", "pipeline"),
        ("/api/v1/runs?after=1:%00", "after"),
        ("/api/v1/runs/r%00", "run_id"),
        ("/api/v1/pipelines/p%00/steps/k/stats", "name"),
        ("/api/v1/pipelines/p/steps/k%00/timeseries", "key"),
        ("/api/v1/llm/usage?pipeline=%00", "pipeline"),
    ],
)
def test_a_nul_in_an_api_parameter_is_a_json_400_naming_it(
    client: Client, url: str, parameter: str
) -> None:
    """A NUL (``%00``) anywhere in a query or path parameter is a 400 naming it."""
    response = client.get(url)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["path"] == parameter
    assert parameter in response.json()["detail"]


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/?q=%00", "q"),
        ("/runs/r%00", "run_id"),
        ("/pipelines/p%00/runs", "name"),
        ("/pipelines/p/runs?step_name=%00", "step_name"),
        ("/pipelines/p/steps/k%00", "key"),
        ("/llm?pipeline=%00", "pipeline"),
        ("/settings?saved=%00", "saved"),
        ("/static/%00.css", "path"),
    ],
)
def test_a_nul_in_a_page_parameter_is_an_html_400_naming_it(
    client: Client, url: str, parameter: str
) -> None:
    """The same on the pages, answered as an HTML page."""
    response = client.get(url)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert parameter in response.text


@pytest.mark.parametrize("prefix", ["/api/v1/runs", "/pipelines/rag/runs"])
@pytest.mark.parametrize("after", ["²:x", "9" * 30 + ":x", "9223372036854775808:x"])
def test_a_bad_page_cursor_is_a_400_naming_after(client: Client, prefix: str, after: str) -> None:
    """A cursor whose start is not a bigint of ASCII digits is a 400 naming ``after``."""
    response = client.get(prefix, params={"after": after})
    assert response.status_code == 400
    assert "after=" in response.text


def test_settings_days_of_5000_digits_is_a_400_naming_days(client: Client) -> None:
    """``days`` of thousands of digits is a 400 naming the allowed range."""
    data = {"days": "9" * 5_000, "csrf_token": form_token(client, "/settings")}
    response = client.post("/settings", data=data, follow_redirects=False)
    assert response.status_code == 400
    assert "whole number of days from 1 to" in response.text


# -- pages answer HTML --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [("GET", "/no-such-page", 404), ("DELETE", "/", 405), ("PUT", "/settings", 405),
     ("GET", "/runs/nope", 404)],
)  # fmt: skip
def test_page_errors_are_html(client: Client, method: str, url: str, status: int) -> None:
    """404 and 405 on a page path are an HTML page."""
    response = client.request(method, url)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert f"<h1>{status}</h1>" in response.text


@pytest.mark.parametrize(
    ("method", "url", "status"), [("GET", "/api/v1/nope", 404), ("DELETE", "/api/v1/runs", 405)]
)
def test_api_errors_are_json(client: Client, method: str, url: str, status: int) -> None:
    """The API's stay JSON."""
    response = client.request(method, url)
    assert (response.status_code, response.json()["status_code"]) == (status, status)


# -- import -------------------------------------------------------------------------------------


def test_one_bad_file_in_an_import_gets_its_own_result(client: Client, database_url: str) -> None:
    """Three files, the middle one nested too deep: one result row per file, the others
    imported, the bad one wrote nothing (before: a bare 500 after the first was committed)."""
    deep = b'{"v":1,"x":' + b"[" * 5_000 + b"]" * 5_000 + b',"events":[]}\n'
    files = [
        ("files", ("a.jsonl", json_body(run_events("ra")) + b"\n", "application/json")),
        ("files", ("deep.jsonl", deep, "application/json")),
        ("files", ("b.jsonl", json_body(run_events("rb")) + b"\n", "application/json")),
    ]
    token = form_token(client, "/import")
    response = client.post("/import", files=files, data={"csrf_token": token})
    assert response.status_code == 200
    assert "deep.jsonl" in response.text
    assert "nests deeper" in response.text
    assert {r["run_id"] for r in read_rows(database_url)["runs"]} == {"ra", "rb"}


# -- the run page with bad trees ----------------------------------------------------------------


def test_a_parent_cycle_does_not_blank_the_run_page(client: Client) -> None:
    """Steps whose parent ids form a cycle are still shown, once each."""
    events = [
        RunStarted(run_id="c", pipeline="p", start_ns=T0),
        _step(run_id="c", step_id="a", parent_id="b", key="a", name="step-a"),
        _step(run_id="c", step_id="b", parent_id="a", key="a.b", name="step-b", start_ns=T0 + 1),
    ]
    ingest(client, events)
    page = client.get("/runs/c")
    assert page.status_code == 200
    assert (page.text.count(">step-a<"), page.text.count(">step-b<")) == (1, 1)


def test_the_roots_are_capped_as_children_are(client: Client) -> None:
    """A run of many top-level steps shows the first and last ones and a gap row."""
    n = CHILD_CAP * 3
    events = [RunStarted(run_id="wide", pipeline="p", start_ns=T0)] + [
        _step(run_id="wide", step_id=f"s{i}", key=f"root___{i}", name=f"root-{i}",
              start_ns=T0 + i, end_ns=T0 + i + 1, duration_ns=1)
        for i in range(n)
    ]  # fmt: skip
    ingest(client, events)
    page = client.get("/runs/wide")
    assert page.status_code == 200
    assert f"{n - CHILD_CAP:,} more steps" in page.text
    assert ">root-0<" in page.text
    assert f">root-{n - 1}<" in page.text
    assert f">root-{n // 2}<" not in page.text
    every = client.get("/runs/wide", params={"all": ""})
    assert f">root-{n // 2}<" in every.text


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("pipeline", "rag\x00", "pipeline"),
        ("pipeline", "p" * 5_000, "pipeline"),
        ("days", "1\x00", "days"),
        ("days", "\x00", "days"),
        ("csrf_token", "\x00", "token"),
        ("csrf_token", "é" * 43, "token"),
    ],
)
def test_settings_form_with_a_bad_value_is_an_html_4xx_naming_it(
    client: Client, database_url: str, field: str, value: str, named: str
) -> None:
    """A NUL, an oversized name or a non-ASCII token in any ``/settings`` field is an HTML 4xx
    page naming the field, never a 500, and changes nothing."""
    ingest(client, run_events("r-settings"))
    data = {"pipeline": "rag", "days": "3", "csrf_token": form_token(client, "/settings")}
    data[field] = value
    response = client.post("/settings", data=data, follow_redirects=False)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
    assert named in response.text
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT pipeline, days FROM retention").fetchall() == []


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/pipelines/rag/scores",
        "/api/v1/pipelines/rag/steps/rag/stats",
        "/api/v1/pipelines/rag/steps/rag/timeseries",
    ],
)
@pytest.mark.parametrize("param", ["since_ns", "until_ns"])
def test_a_time_past_bigint_is_a_400_naming_it(client: Client, url: str, param: str) -> None:
    """A range end past 2**63 ns made the bucket arithmetic numeric: fractional buckets at 0."""
    ingest(client, run_events("r"))
    response = client.get(url, params={param: 10**30})
    assert response.status_code == 400, response.text
    assert param in response.text

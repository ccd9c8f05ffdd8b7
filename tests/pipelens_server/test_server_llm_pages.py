"""The LLM usage page and the step panel's LLM call, with data from the real client
(``pipelens.llm_call`` and ``auto_patch(openai)`` against the OpenAI stub) on a real PostgreSQL."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import openai
import pytest
from _dashboard_kit import SECOND, ingest, table_rows
from _pg_testkit import LOCAL
from litestar import Litestar
from litestar.testing import TestClient

import pipelens
from pipelens.events import Event, RunFinished, StepFinished
from pipelens.testing import capture_runs
from pipelens_server import Settings, create_app
from pipelens_server._pages._chart import USAGE_CHART
from pipelens_server._read._llm import bucket_width, call_view

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelens"))
from _openai_stub import StubServer

Client = TestClient[Litestar]
HTMX = {"HX-Request": "true"}
#: Calls as (model asked, model answered, input, cached, output tokens).
Call = tuple[str, str | None, int, int, int]


def llm_run(pipeline: str, calls: Sequence[Call], *, ago_s: float = 60) -> list[Event]:
    """The events of a real run of ``pipeline`` making ``calls`` with ``pipelens.llm_call``,
    moved to have started ``ago_s`` seconds ago."""

    def body() -> None:
        for asked, answered, input_tokens, cached, output_tokens in calls:
            with pipelens.llm_call(provider="openai", model=asked) as call:
                call.response_model = answered
                call.set_usage(input_tokens, output_tokens, cached_tokens=cached)
                call.set_output("ok")

    with capture_runs() as captured:
        pipelens.step(name=pipeline)(body)()
    return moved(captured.events, time.time_ns() - int(ago_s * SECOND))


def moved(events: list[Event], start_ns: int) -> list[Event]:
    """``events`` of one run shifted in time so that the run starts at ``start_ns``."""
    shift = start_ns - min(e.start_ns for e in events if e.start_ns is not None)
    out = []
    for event in events:
        fields = {
            name: getattr(event, name) + shift
            for name in ("start_ns", "end_ns")
            if getattr(event, name, None) is not None
        }
        out.append(msgspec.structs.replace(event, **fields))
    return out


def still_running(events: list[Event], root: str) -> list[Event]:
    """``events`` without the finish of the run and of its root step: a run still running."""
    return [
        e
        for e in events
        if not isinstance(e, RunFinished) and not (isinstance(e, StepFinished) and e.key == root)
    ]


def by_model(client: Client, **params: str) -> dict[str, list[str]]:
    """The "by model" table: model → calls, input, cached, output, reasoning, cost."""
    html = client.get("/llm", params=params).text
    section = html.split("<h2>By model</h2>")[1].split("<h2>By pipeline</h2>")[0]
    return {row[0]: row[1:] for row in table_rows(section)}


def by_pipeline(client: Client, **params: str) -> dict[str, list[str]]:
    """The "by pipeline" table: pipeline → calls, input, cached, output, reasoning, cost."""
    html = client.get("/llm", params=params).text
    return {row[0]: row[1:] for row in table_rows(html.split("<h2>By pipeline</h2>")[1])}


def test_llm_page_without_llm_calls_shows_how_to_record_them(client: Client) -> None:
    """Before any LLM call the page explains the one line (auto_patch) and llm_call."""
    response = client.get("/llm")
    assert response.status_code == 200
    assert "No LLM calls yet" in response.text
    assert "pipelens.auto_patch(openai)" in response.text
    assert 'href="/llm"' in response.text  # the nav links the page


def test_tokens_and_server_cost_by_model_and_by_pipeline(client: Client) -> None:
    """Tokens are summed per model and per pipeline; costs are priced from the table: a dated
    model as its base, cached input at the cached price."""
    ingest(client, llm_run("rag", [("gpt-4o", "gpt-4o-2024-08-06", 1000, 400, 200)]))
    ingest(client, llm_run("rag", [("gpt-4o-mini", None, 2_000_000, 0, 1_000_000)]))
    ingest(client, llm_run("agent", [("gpt-4o", "gpt-4o-2024-08-06", 3000, 0, 100)]))
    # gpt-4o: 600 x 2.5 + 400 x 1.25 + 200 x 10 = 4,000 ; 3,000 x 2.5 + 100 x 10 = 8,500 (micro-USD)
    # gpt-4o-mini: 2M x 0.15 + 1M x 0.6 = $0.90
    assert by_model(client) == {
        "gpt-4o-mini": ["1", "2,000,000", "0", "1,000,000", "0", "$0.90"],
        "gpt-4o-2024-08-06": ["2", "4,000", "400", "300", "0", "$0.013"],
    }
    assert by_pipeline(client) == {
        "rag": ["2", "2,001,000", "400", "1,000,200", "0", "$0.90"],
        "agent": ["1", "3,000", "0", "100", "0", "$0.0085"],
    }


def test_unknown_model_has_an_unknown_cost_not_zero(client: Client) -> None:
    """A model missing from the price table shows "unknown", and the total says it is left out."""
    ingest(client, llm_run("rag", [("my-local-llama", None, 500, 0, 50)]))
    ingest(client, llm_run("rag", [("gpt-4o-mini", None, 1_000_000, 0, 0)]))
    html = client.get("/llm").text
    assert by_model(client)["my-local-llama"][-1] == "unknown"
    assert by_pipeline(client)["rag"][-1] == "$0.15 + unknown"
    assert "+ unknown (my-local-llama not in the price table)" in html


def test_server_reprices_usage_whatever_cost_the_client_sent(client: Client) -> None:
    """The client's ``cost_usd`` in ``llm_usage`` is ignored: the page prices the tokens."""
    events = llm_run("rag", [("gpt-4o-mini", None, 1_000_000, 0, 0)])
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.llm_usage is not None
    usage = msgspec.json.decode(finished.llm_usage)
    usage["gpt-4o-mini"]["cost_usd"] = 999.0
    events[-1] = msgspec.structs.replace(finished, llm_usage=msgspec.json.encode(usage).decode())
    ingest(client, events)
    assert by_model(client)["gpt-4o-mini"][-1] == "$0.15"


def test_running_run_counts_its_calls_and_a_finished_run_counts_once(client: Client) -> None:
    """A run without usage yet counts its steps' calls; once finished, its usage replaces them
    (the calls are not counted twice)."""
    events = llm_run("rag", [("gpt-4o-mini", None, 100, 0, 10), ("gpt-4o-mini", None, 100, 0, 10)])
    ingest(client, still_running(events, "rag"))
    assert by_model(client)["gpt-4o-mini"][:4] == ["2", "200", "0", "20"]
    ingest(client, events)
    assert by_model(client)["gpt-4o-mini"][:4] == ["2", "200", "0", "20"]


def test_time_range_and_pipeline_filters(client: Client) -> None:
    """Only calls in the chosen time range count; the pipeline filter keeps one pipeline."""
    ingest(client, llm_run("rag", [("gpt-4o", None, 10, 0, 1)], ago_s=600))
    ingest(client, llm_run("rag", [("o3", None, 20, 0, 2)], ago_s=3 * 86400))
    ingest(client, llm_run("agent", [("gpt-4.1", None, 30, 0, 3)], ago_s=600))
    assert sorted(by_model(client, range="24h")) == ["gpt-4.1", "gpt-4o"]
    assert sorted(by_model(client, range="7d")) == ["gpt-4.1", "gpt-4o", "o3"]
    assert sorted(by_model(client, range="7d", pipeline="rag")) == ["gpt-4o", "o3"]
    assert "No LLM calls in this time range." in client.get("/llm", params={"range": "5m"}).text


def test_chart_stacks_each_models_tokens_per_bucket(client: Client) -> None:
    """The SVG has one segment per model and bucket, titled with its tokens, tallest the most."""
    now = time.time_ns()
    hour = 3600 * SECOND
    ingest(client, moved(llm_run("rag", [("gpt-4o", None, 900, 0, 100)]), now - 5 * hour))
    ingest(client, moved(llm_run("rag", [("gpt-4o-mini", None, 400, 0, 100)]), now - 5 * hour))
    ingest(client, moved(llm_run("rag", [("gpt-4o", None, 200, 0, 50)]), now - 2 * hour))
    html = client.get("/llm", params={"range": "24h"}).text
    segments = {
        title.split(" · ")[1]: (x, float(y), float(height))
        for x, y, height, title in re.findall(
            r'<rect class="segment" x="([\d.]+)%" y="([\d.]+)" width="[\d.]+%" '
            r'height="([\d.]+)"[^>]*><title>([^<]*)</title>',
            html,
        )
    }
    assert sorted(segments) == ["gpt-4o-mini: 500", "gpt-4o: 1k", "gpt-4o: 250"]
    big, mini, late = segments["gpt-4o: 1k"], segments["gpt-4o-mini: 500"], segments["gpt-4o: 250"]
    assert big[0] == mini[0] != late[0]  # one bar 5 hours ago, another 2 hours ago
    assert big[1] + big[2] == late[1] + late[2] == USAGE_CHART.base  # the bigger model lowest
    assert mini[1] + mini[2] == pytest.approx(big[1])  # stacked on it
    assert (big[2] / late[2], big[2] / mini[2]) == pytest.approx((4, 2), rel=1e-3)  # px rounding
    assert "per 30 minutes" in html


def _x_labels(html: str) -> list[str]:
    return re.findall(r'<text x="[\d.]+%" y="212"[^>]*>([^<]*)</text>', html)


def test_chart_time_labels_are_the_other_charts(client: Client) -> None:
    """The usage chart labels its time axis as the runs timeline and the step statistics do
    (``_chart.time_label``): hours and minutes under bars a minute wide, month, day and
    time over a day, and the date alone under bars a day wide."""
    ingest(client, llm_run("rag", [("gpt-4o", None, 10, 0, 1)]))
    by_range = {
        preset: _x_labels(client.get("/llm", params={"range": preset}).text)
        for preset in ("1h", "24h", "30d")
    }
    patterns = {
        "1h": r"\d\d:\d\d",  # one-minute bars
        "24h": r"\d\d-\d\d \d\d:\d\d",
        "30d": r"\d{4}-\d\d-\d\d",  # one-day bars
    }
    for preset, pattern in patterns.items():
        assert by_range[preset], preset
        assert [label for label in by_range[preset] if not re.fullmatch(pattern, label)] == []


def test_chart_stacks_by_pipeline_on_request(client: Client) -> None:
    """``by=pipeline`` draws one series per pipeline, its models summed, in the legend."""
    ingest(client, llm_run("rag", [("gpt-4o", None, 100, 0, 10), ("o3", None, 200, 0, 20)]))
    ingest(client, llm_run("agent", [("gpt-4o", None, 30, 0, 3)]))
    html = client.get("/llm", params={"by": "pipeline"}).text
    titles = re.findall(r'<rect class="segment"[^>]*><title>[^<]* · ([^<]*)</title>', html)
    assert titles == ["rag: 330", "agent: 33"]
    legend = re.findall(
        r'<rect width="10" height="10" fill="[^"]*"></rect></svg> ([^<]*)</li>', html
    )
    assert legend == ["rag", "agent"]
    assert "Tokens per 30 minutes, by pipeline" in html


def test_cost_chart_leaves_out_unpriced_models(client: Client) -> None:
    """With metric=cost the chart stacks USD; a model without a price draws nothing."""
    ingest(client, llm_run("rag", [("gpt-4o-mini", None, 1_000_000, 0, 0)]))
    ingest(client, llm_run("rag", [("my-local-llama", None, 500, 0, 50)]))
    html = client.get("/llm", params={"metric": "cost"}).text
    titles = re.findall(r'<rect class="segment"[^>]*><title>([^<]*)</title>', html)
    assert [t.split(" · ")[1] for t in titles] == ["gpt-4o-mini: $0.15"]
    assert "Cost in USD per" in html


def test_htmx_filter_change_gets_the_content_block(client: Client) -> None:
    """htmx asking for ``#content`` gets the page body without the layout."""
    ingest(client, llm_run("rag", [("gpt-4o", None, 10, 0, 1)]))
    response = client.get("/llm", params={"range": "1h"}, headers=HTMX | {"HX-Target": "content"})
    assert response.status_code == 200
    assert "<html" not in response.text
    assert '<div id="llm_usage"' in response.text


def test_live_refresh_polls_its_own_filters_and_gets_only_the_usage(client: Client) -> None:
    """The usage block polls the URL of its filters; that poll is answered with the block."""
    ingest(client, llm_run("rag", [("gpt-4o", None, 10, 0, 1)]))
    page = client.get("/llm", params={"range": "1h", "metric": "cost", "pipeline": "rag"}).text
    (poll_url,) = re.findall(r'<div id="llm_usage" hx-get="([^"]*)"', page)
    assert poll_url.replace("&amp;", "&") == "/llm?range=1h&metric=cost&by=model&pipeline=rag"
    response = client.get(poll_url.replace("&amp;", "&"), headers=HTMX | {"HX-Target": "llm_usage"})
    assert response.text.lstrip().startswith('<div id="llm_usage"')
    assert "<form" not in response.text


def test_unknown_range_is_a_400_page_naming_the_parameter(client: Client) -> None:
    """A range that is not a preset is refused with an HTML page."""
    response = client.get("/llm", params={"range": "forever"})
    assert (response.status_code, "range" in response.text) == (400, True)
    assert response.headers["content-type"].startswith("text/html")


def test_all_time_range_starts_at_the_first_call(client: Client) -> None:
    """``all`` spans from the first call to now, in buckets that fit it."""
    ingest(client, llm_run("rag", [("gpt-4o", None, 10, 0, 1)], ago_s=20 * 86400))
    html = client.get("/llm", params={"range": "all"}).text
    assert "per 12 hours" in html
    assert bucket_width(20 * 86400 * SECOND) == 12 * 3600 * SECOND


# --- the JSON API ------------------------------------------------------------------------------


def test_usage_api_has_tokens_and_server_priced_cost_per_bucket(client: Client) -> None:
    """``/api/v1/llm/usage`` lists each bucket, pipeline and model with its tokens and the
    server's cost (``null`` for a model without a price); ``pipeline`` keeps one pipeline."""
    ingest(client, llm_run("rag", [("gpt-4o-mini", None, 1_000_000, 0, 0)], ago_s=120))
    ingest(client, llm_run("agent", [("my-local-llama", None, 500, 0, 50)], ago_s=120))
    body = client.get("/api/v1/llm/usage", params={"range": "1h", "bucket_s": "60"}).json()
    assert body["bucket_ns"] == 60 * SECOND
    rows = {(r["pipeline"], r["model"]): r for r in body["usage"]}
    assert sorted(rows) == [("agent", "my-local-llama"), ("rag", "gpt-4o-mini")]
    mini, llama = rows["rag", "gpt-4o-mini"], rows["agent", "my-local-llama"]
    assert (mini["calls"], mini["input_tokens"], mini["cost_usd"]) == (1, 1_000_000, 0.15)
    assert (llama["output_tokens"], llama["cost_usd"]) == (50, None)
    assert mini["bucket_ns"] % (60 * SECOND) == 0
    only_rag = client.get("/api/v1/llm/usage", params={"pipeline": "rag"}).json()["usage"]
    assert [r["model"] for r in only_rag] == ["gpt-4o-mini"]


def test_usage_api_needs_the_token_and_is_in_the_schema(database_url: str) -> None:
    """With a token the API answers 401 without it and 200 with it; ``/schema`` documents it."""
    app = create_app(Settings(database_url=database_url, token="llm-token"))
    with TestClient(app, base_url=LOCAL) as token_client:
        assert token_client.get("/api/v1/llm/usage").status_code == 401
        headers = {"Authorization": "Bearer llm-token"}
        response = token_client.get("/api/v1/llm/usage", headers=headers)
        assert (response.status_code, response.json()["usage"]) == (200, [])
        assert "/api/v1/llm/usage" in token_client.get("/schema").json()["paths"]


# --- the step panel ---------------------------------------------------------------------------


def _panel(client: Client, run_id: str, key: str) -> str:
    response = client.get(
        f"/runs/{run_id}", params={"step": key}, headers=HTMX | {"HX-Target": "step_panel"}
    )
    assert response.status_code == 286, response.text  # a finished step: no polling
    return response.text


def _one_run(events: list[Event]) -> tuple[str, str]:
    """The run id and the key of its LLM step."""
    step = next(e for e in events if isinstance(e, StepFinished) and e.kind == "llm")
    return step.run_id, step.key


def test_step_panel_shows_the_llm_call_escaped_with_long_messages_collapsed(
    client: Client,
) -> None:
    """The panel shows provider, models, messages (escaped; a long one in <details>), output,
    tool calls, tokens, the server's cost, latency and request id."""
    long_text = "\n".join(f"line {i}" for i in range(40))

    def answer() -> None:
        messages = [
            {"role": "system", "content": long_text},
            {"role": "user", "content": "<script>alert(1)</script>"},
        ]
        with pipelens.llm_call(provider="openai", model="gpt-4o", messages=messages) as call:
            call.response_model = "gpt-4o-2024-08-06"
            call.request_id = "req_abc123"
            call.set_usage(1000, 200, cached_tokens=400, reasoning_tokens=50)
            call.set_output(
                "It is <b>sunny</b>",
                tool_calls=[pipelens.ToolCall(id="call_1", name="weather", arguments='{"c":1}')],
                finish_reason="tool_calls",
            )

    with capture_runs() as captured:
        pipelens.step(name="ask")(answer)()
    ingest(client, captured.events)
    html = _panel(client, *_one_run(captured.events))
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "It is &lt;b&gt;sunny&lt;/b&gt;" in html
    assert re.search(r"<details class=\"message\"><summary><strong>system</strong> line 0", html)
    assert "openai · chat" in html
    assert "gpt-4o → answered by gpt-4o-2024-08-06" in html
    assert "1,000 in (400 cached) · 200 out (50 reasoning)" in html
    assert "$0.004000" in html
    assert "req_abc123" in html
    assert "Tool call weather" in html
    assert "&#34;c&#34;: 1" in html
    assert "(tool_calls)" in html


def test_step_panel_of_a_failed_call_with_an_unknown_model(client: Client) -> None:
    """A failed call shows its HTTP status and error code; an unpriced model an unknown cost."""

    def answer() -> None:
        with pipelens.llm_call(provider="local", model="my-llama") as call:
            call.set_usage(10, 0)
            call.status_code = 429
            call.error_code = "rate_limit_exceeded"
            raise RuntimeError("rate limited")

    with capture_runs() as captured, pytest.raises(RuntimeError):
        pipelens.step(name="ask")(answer)()
    ingest(client, captured.events)
    html = _panel(client, *_one_run(captured.events))
    assert "HTTP 429 rate_limit_exceeded" in html
    assert "unknown (my-llama has no known price)" in html


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    """The OpenAI stub server for this module."""
    with StubServer() as server:
        yield server


def test_step_panel_of_a_streamed_openai_call(client: Client, stub: StubServer) -> None:
    """A stream made through ``auto_patch(openai)`` shows chunks, time to first token and
    tokens per second."""
    pipelens.auto_patch(openai)
    try:
        with (
            openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as llm,
            capture_runs() as captured,
        ):

            def answer() -> None:
                stream = llm.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
                for _ in stream:
                    pass

            pipelens.step(name="ask")(answer)()
    finally:
        pipelens.unpatch(openai)
    ingest(client, captured.events)
    html = _panel(client, *_one_run(captured.events))
    assert re.search(r"openai · chat · streamed \(\d+ chunks\)", html)
    assert "<dt>First token</dt>" in html
    assert re.search(r"<dt>Speed</dt><dd>[\d.]+ tokens/s</dd>", html)


def test_step_without_llm_call_has_no_llm_section(client: Client) -> None:
    """A plain step's panel has no LLM call section."""
    events = llm_run("rag", [("gpt-4o", None, 10, 0, 1)])
    ingest(client, events)
    assert "LLM call" not in _panel(client, events[0].run_id, "rag")


def test_call_view_survives_odd_shapes() -> None:
    """Stored calls of other shapes (the old ``model``/``output`` text, no usage, not a dict)
    give a view rather than an error."""
    old = call_view({"provider": "p", "model": "gpt-4o", "output": "d1", "messages": "text"})
    assert old is not None
    assert (old.request_model, old.output_text, old.tokens, old.cost_usd) == (
        "gpt-4o",
        "d1",
        None,
        None,
    )
    assert [(m.role, m.text) for m in old.messages] == [("input", "text")]
    bad = call_view({"usage": {"input_tokens": "many"}, "output": {"tool_calls": ["x"]}})
    assert bad is not None
    assert bad.tokens == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert call_view([1, 2]) is None

"""Honest LLM figures on the server: calls without usage are unknown (never 0 or $0.00), run
totals in the run shapes and pages, time to first token by model — from the real client on a
real PostgreSQL."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import openai
import pytest
from _dashboard_kit import SECOND, ingest, table_rows
from litestar import Litestar
from litestar.testing import TestClient

import pipelens
from pipelens.events import Event, RunFinished, StepFinished
from pipelens.testing import capture_runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelens"))
from _openai_stub import StubServer

Client = TestClient[Litestar]
MESSAGES = [{"role": "user", "content": "hi"}]


def moved(events: list[Event], start_ns: int) -> list[Event]:
    """``events`` of one run shifted in time so that the run starts at ``start_ns``."""
    shift = start_ns - min(e.start_ns for e in events if e.start_ns is not None)
    return [
        msgspec.structs.replace(
            e,
            **{
                name: getattr(e, name) + shift
                for name in ("start_ns", "end_ns")
                if getattr(e, name, None) is not None
            },
        )
        for e in events
    ]


def calls_run(pipeline: str, calls: list[tuple[str, int | None]]) -> list[Event]:
    """A real run of ``pipeline``: one ``llm_call`` per (model, input tokens or ``None`` for a
    call that reports no usage; output tokens are a tenth), started a minute ago."""

    def body() -> None:
        for model, tokens in calls:
            with pipelens.llm_call(provider="openai", model=model) as call:
                if tokens is not None:
                    call.set_usage(tokens, tokens // 10)

    with capture_runs() as captured:
        pipelens.step(name=pipeline)(body)()
    return moved(captured.events, time.time_ns() - 60 * SECOND)


def not_finished(events: list[Event], root: str) -> list[Event]:
    """``events`` without the run's end: its usage is read from its steps."""
    return [
        e
        for e in events
        if not isinstance(e, RunFinished) and not (isinstance(e, StepFinished) and e.key == root)
    ]


def run_id_of(events: list[Event]) -> str:
    return next(e.run_id for e in events if isinstance(e, StepFinished))


def llm_tables(client: Client) -> tuple[str, dict[str, list[str]]]:
    """The /llm page's total line and its "by model" rows."""
    html = client.get("/llm").text
    total = html.split('<p class="llm-total">')[1].split("</p>")[0]
    section = html.split("<h2>By model</h2>")[1].split("<h2>By pipeline</h2>")[0]
    text = re.sub(r"<[^>]+>", "", total)
    return " ".join(text.split()), {row[0]: row[1:] for row in table_rows(section)}


# --- unknown is not zero -----------------------------------------------------------------------


@pytest.mark.parametrize("finished", [True, False], ids=["finished", "running"])
def test_calls_without_usage_are_unknown_on_the_page_and_api(
    client: Client, finished: bool
) -> None:
    """Five calls without usage show unknown tokens and cost, and "5 calls without usage",
    never 0 or $0.00 — whether read from the run's usage or from its steps."""
    events = calls_run("rag", [("gpt-4o", None)] * 5)
    ingest(client, events if finished else not_finished(events, "rag"))
    total, models = llm_tables(client)
    assert models["gpt-4o"] == [
        "5 (5 without usage)",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
    ]
    assert "$0.00" not in total
    assert total.startswith("5 calls · unknown tokens · unknown")
    assert "5 calls without usage" in total
    usage = client.get("/api/v1/llm/usage").json()["usage"]
    assert [
        (u["calls"], u["calls_without_usage"], u["input_tokens"], u["cost_usd"]) for u in usage
    ] == [(5, 5, None, None)]


def test_calls_with_and_without_usage_sum_only_what_was_reported(client: Client) -> None:
    """A model with some calls reporting usage sums and prices those, counting the rest apart."""
    ingest(client, calls_run("rag", [("gpt-4o-mini", 1_000_000), ("gpt-4o-mini", None)]))
    total, models = llm_tables(client)
    assert models["gpt-4o-mini"][0] == "2 (1 without usage)"
    assert models["gpt-4o-mini"][1] == "1,000,000"
    assert models["gpt-4o-mini"][-1] == "$0.21"  # 1M x 0.15 + 100k x 0.6
    assert "1 call without usage" in total


def test_stored_zeros_of_calls_without_usage_read_as_unknown(client: Client) -> None:
    """A run stored by an older client (zeros beside calls_without_usage) reads as unknown."""
    events = calls_run("rag", [("gpt-4o", None)] * 2)
    old = msgspec.json.encode(
        {
            "gpt-4o": {
                "calls": 2,
                "input_tokens": 0,
                "output_tokens": 0,
                "cached_tokens": 0,
                "reasoning_tokens": 0,
                "calls_without_usage": 2,
                "cost_usd": 0.0,
            }
        }
    ).decode()
    events = [
        msgspec.structs.replace(e, llm_usage=old) if isinstance(e, RunFinished) else e
        for e in events
    ]
    ingest(client, events)
    _, models = llm_tables(client)
    assert models["gpt-4o"][1:] == ["unknown"] * 5


# --- run totals --------------------------------------------------------------------------------


def test_run_totals_in_the_api_runs_list_and_run_header(client: Client) -> None:
    """A run's LLM calls, tokens and server cost are in the API's run shapes, the runs list
    and the run header; a run without usage shows unknown, a run without calls nothing."""
    priced = calls_run("rag", [("gpt-4o-mini", 1_000_000), ("gpt-4o-mini", None)])
    unknown = calls_run("rag", [("gpt-4o", None)])
    ingest(client, priced)
    ingest(client, unknown)
    ingest(client, moved(_plain_run("rag"), time.time_ns() - 30 * SECOND))
    runs = {r["run_id"]: r for r in client.get("/api/v1/runs").json()["runs"]}
    priced_id, unknown_id = run_id_of(priced), run_id_of(unknown)
    assert runs[priced_id]["llm"] == {
        "calls": 2,
        "calls_without_usage": 1,
        "input_tokens": 1_000_000,
        "output_tokens": 100_000,
        "cost_usd": pytest.approx(0.21),
        "unpriced": [],
    }
    assert runs[unknown_id]["llm"] == {
        "calls": 1,
        "calls_without_usage": 1,
        "input_tokens": None,
        "output_tokens": None,
        "cost_usd": None,
        "unpriced": [],
    }
    plain = [r for r in runs.values() if r["run_id"] not in (priced_id, unknown_id)]
    assert [r["llm"] for r in plain] == [None]
    detail = client.get(f"/api/v1/runs/{priced_id}").json()["run"]
    assert detail["llm"] == runs[priced_id]["llm"]

    rows = {row[0]: row for row in table_rows(client.get("/pipelines/rag/runs").text)}
    assert rows[priced_id][5:7] == ["1,100,000 (1 without usage)", "$0.21"]
    assert rows[unknown_id][5:7] == ["unknown (1 without usage)", "unknown"]
    assert rows[plain[0]["run_id"]][5:7] == ["—", "—"]
    header = client.get(f"/runs/{unknown_id}").text.split('<span class="run-llm">')[1]
    assert " ".join(header.split("</span>")[0].split()).startswith(
        "LLM: 1 call · unknown tokens · unknown"
    )


def _with_client_costs(event: Event, costs: dict[str, float]) -> Event:
    """``event`` with the client's ``cost_usd`` of each model (or of its call) set to
    ``costs``: a client's stale or wrong price table."""
    if isinstance(event, RunFinished) and event.llm_usage is not None:
        usage = msgspec.json.decode(event.llm_usage)
        for model, cost in costs.items():
            usage[model]["cost_usd"] = cost
        return msgspec.structs.replace(event, llm_usage=msgspec.json.encode(usage).decode())
    if isinstance(event, StepFinished) and event.llm is not None:
        call = msgspec.json.decode(event.llm)
        call["cost_usd"] = costs[call["request_model"]]
        return msgspec.structs.replace(event, llm=msgspec.json.encode(call).decode())
    return event


def test_the_api_answers_one_cost_the_servers_for_the_clients_usage(client: Client) -> None:
    """Every cost of a run in the API is the server's read-time price of the tokens, as the
    run's ``llm`` totals are, never the client's own estimate beside it (an unpriced model's
    is unknown): each model's in ``llm_usage`` (the run and the runs list) and each call's in
    its step's ``llm`` (the run)."""
    events = calls_run("rag", [("gpt-4o-mini", 1_000_000), ("my-local-llama", 500)])
    wrong = {"gpt-4o-mini": 99.0, "my-local-llama": 5.0}
    events = [_with_client_costs(e, wrong) for e in events]
    ingest(client, events)
    run_id = run_id_of(events)
    detail = client.get(f"/api/v1/runs/{run_id}").json()
    listed = {r["run_id"]: r for r in client.get("/api/v1/runs").json()["runs"]}[run_id]
    expected = {"gpt-4o-mini": pytest.approx(0.21), "my-local-llama": None}
    for run in (detail["run"], listed):
        costs = {model: entry["cost_usd"] for model, entry in run["llm_usage"].items()}
        assert costs == expected
        assert run["llm"]["cost_usd"] == costs["gpt-4o-mini"]
        assert run["llm_usage"]["gpt-4o-mini"]["input_tokens"] == 1_000_000
    calls = [step["llm"] for step in detail["steps"] if step["llm"] is not None]
    assert {call["request_model"]: call["cost_usd"] for call in calls} == expected
    assert [call["usage"]["input_tokens"] for call in calls] == [1_000_000, 500]


def _plain_run(pipeline: str) -> list[Event]:
    with capture_runs() as captured:
        pipelens.step(name=pipeline)(lambda: None)()
    return captured.events


# --- time to first token -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub() -> Any:
    """The OpenAI stub server for this module."""
    with StubServer() as server:
        yield server


def test_time_to_first_token_by_model_in_the_api_and_page(client: Client, stub: StubServer) -> None:
    """Streamed calls of the real openai client give p50/p95 time to first token by model."""
    pipelens.auto_patch(openai)
    try:
        with (
            capture_runs() as captured,
            openai.OpenAI(base_url=stub.base_url, api_key="sk-test", max_retries=0) as api,
        ):

            @pipelens.step(name="rag")
            def answer() -> None:
                for _ in range(3):
                    list(
                        api.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
                    )
                api.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # not streamed

            answer()
    finally:
        pipelens.unpatch(openai)
    ingest(client, captured.events)
    ttfts = sorted(
        msgspec.json.decode(e.llm)["time_to_first_token_ns"]
        for e in captured.events
        if isinstance(e, StepFinished) and e.llm and "time_to_first_token_ns" in e.llm
    )
    first = client.get("/api/v1/llm/usage").json()["time_to_first_token"]
    assert first == [
        {
            "model": "gpt-4o-2024-08-06",
            "calls": 3,
            "p50_ns": ttfts[1],
            # PostgreSQL interpolates in double precision its own way: a half may round apart.
            "p95_ns": pytest.approx(ttfts[1] + 0.9 * (ttfts[2] - ttfts[1]), abs=1),
        }
    ]
    html = client.get("/llm").text
    table = html.split("<h2>Time to first token</h2>")[1].split("</table>")[0]
    assert [row[:2] for row in table_rows(table)] == [["gpt-4o-2024-08-06", "3"]]

"""Our OTLP export read back by our own ``/v1/traces``: one run sent both ways (events to one
real ``pipelens serve``, OTLP spans to another) reads back the same, field by field that both
carry."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _pg_testkit import serve

import pipelens

TOKEN = "roundtrip-token"


@pytest.fixture
def servers(
    database_url: str, module_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    """Two servers on databases of their own: one takes our events, the other our OTLP."""
    monkeypatch.setenv("PIPELENS_SPOOL_DIR", str(tmp_path / "spool"))
    with (
        serve("--database-url", database_url, "--token", TOKEN) as (_, events_url),
        serve("--database-url", module_database_url, "--token", TOKEN) as (_, otlp_url),
    ):
        yield events_url, otlp_url


@pipelens.step
def retrieve(query: str) -> list[str]:
    pipelens.record("n_docs", 2)
    return [query, "doc"]


@pipelens.step
def rerank(docs: list[str]) -> list[str]:
    raise RuntimeError(f"reranker down for {len(docs)} docs")


@pipelens.step
def fetch_more() -> None:
    raise asyncio.CancelledError("deadline passed")


@pipelens.step
def rag(query: str) -> dict[str, Any]:
    docs = retrieve(query)
    with contextlib.suppress(RuntimeError):
        rerank(docs)
    with contextlib.suppress(asyncio.CancelledError):
        fetch_more()
    with pipelens.llm_call(
        provider="openai", model="gpt-4o-mini", messages=[{"role": "user", "content": query}]
    ) as call:
        call.set_usage(120, 30)
        call.set_output("the answer")
    return {"answer": "the answer", "docs": docs}


def _read(url: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{url}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


RUN_FIELDS = ("run_id", "pipeline", "status", "start_ns", "end_ns", "duration_ns", "error")
STEP_FIELDS = (
    "step_id",
    "parent_id",
    "name",
    "kind",
    "status",
    "start_ns",
    "end_ns",
    "duration_ns",
    "inputs",
    "result",
    "error",
)
LLM_FIELDS = ("provider", "operation", "request_model", "usage")


def _common(detail: dict[str, Any]) -> dict[str, Any]:
    """What both ingests carry of a run: the run's fields, each step's by id, the LLM call's
    provider, model and tokens, and the root's key (other keys are derived from span ids)."""
    steps = {}
    for step in detail["steps"]:
        fields = {name: step[name] for name in STEP_FIELDS}
        if step["llm"] is not None:
            fields["llm"] = {name: step["llm"].get(name) for name in LLM_FIELDS}
        if step["parent_id"] is None:
            fields["key"] = step["key"]
        steps[step["step_id"]] = fields
    return {"run": {name: detail["run"][name] for name in RUN_FIELDS}, "steps": steps}


def test_a_run_exported_as_otlp_reads_back_as_the_run_sent_as_events(
    servers: tuple[str, str],
) -> None:
    """Ids, nesting, names, statuses (a cancelled step's too), times, inputs, results, the
    errors and the LLM call's tokens are the same through ``/v1/traces`` as through
    ``/api/v1/events``."""
    events_url, otlp_url = servers
    pipelens.configure(
        url=events_url,
        token=TOKEN,
        otlp_endpoint=otlp_url,
        otlp_headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert rag("what is otlp")["docs"] == ["what is otlp", "doc"]
    assert pipelens.flush(30) is True
    (run_id,) = [
        r["run_id"]
        for r in httpx.get(
            f"{events_url}/api/v1/runs", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()["runs"]
    ]
    sent, exported = _read(events_url, run_id), _read(otlp_url, run_id)
    want, got = _common(sent), _common(exported)
    assert got["run"] == want["run"]
    assert sorted(got["steps"]) == sorted(want["steps"])
    for step_id, fields in want["steps"].items():  # one step at a time: a clear difference
        assert got["steps"][step_id] == fields
    assert len(sent["steps"]) == 5
    failed = next(s for s in exported["steps"] if s["name"] == "rerank")
    assert (failed["status"], failed["error"]["type"]) == ("failed", "RuntimeError")
    cancelled = next(s for s in exported["steps"] if s["name"] == "fetch_more")
    assert (cancelled["status"], cancelled["error"]["type"]) == (
        "cancelled",
        "asyncio.exceptions.CancelledError",
    )
    llm = next(s for s in exported["steps"] if s["kind"] == "llm")["llm"]
    assert (llm["usage"]["input_tokens"], llm["usage"]["output_tokens"]) == (120, 30)

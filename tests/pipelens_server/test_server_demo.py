"""``pipelens demo --serve`` (what ``make run`` runs) against a real server on a real database:
days of runs of a few pipelines, failed, abandoned and live ones among them, and something on
every page at first look."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _browser_kit import TIMEOUT_MS, shot
from _pg_testkit import free_port
from playwright.sync_api import Browser, expect

PIPELINES = {"rag_demo", "support_agent", "ingest_docs", "nightly_eval"}
_DAY_NS = 86_400 * 10**9


@pytest.fixture(scope="module")
def demo(module_database_url: str) -> Iterator[str]:
    """A demo server filled by ``pipelens demo --serve``; its URL once the fill is announced."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELENS_") and k != "PORT"}
    command = [sys.executable, "-m", "pipelens", "demo", "--serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--database-url", module_database_url],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        announced = process.stdout.readline()  # blocks until the history was sent
        assert announced.startswith("pipelens: demo sent: "), announced
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        stopped = process.wait(60)
        assert process.stdout is not None
        process.stdout.close()
    assert stopped == 0


def _runs(url: str, **params: Any) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = httpx.get(
        f"{url}/api/v1/runs", params={"limit": 1000, **params}
    ).json()["runs"]
    return runs


def test_the_demo_sends_days_of_runs_of_every_pipeline(demo: str) -> None:
    """Dozens of runs of four pipelines spread over days, completed and failed ones, one still
    running, and the one whose client died marked abandoned by the server."""
    runs = _runs(demo)
    assert len(runs) >= 40
    assert {r["pipeline"] for r in runs} == PIPELINES
    statuses = collections.Counter(r["status"] for r in runs)
    assert statuses["completed"] >= 30
    assert statuses["failed"] >= 2
    assert "nightly_eval" in [r["pipeline"] for r in runs if r["status"] == "running"]
    starts = [r["start_ns"] for r in runs]
    assert max(starts) - min(starts) > 2 * _DAY_NS
    deadline = time.monotonic() + 90  # the demo's server abandons silent runs after 15 s
    while not _runs(demo, status="abandoned") and time.monotonic() < deadline:
        time.sleep(1)
    assert [r["pipeline"] for r in _runs(demo, status="abandoned")] == ["support_agent"]
    assert [r["pipeline"] for r in _runs(demo, status="running")] == ["nightly_eval"]


def test_a_demo_run_nests_across_threads_asyncio_generators_and_llm_calls(demo: str) -> None:
    """A completed RAG run has steps from a thread pool, asyncio tasks, a generator and an LLM
    call of the real openai client (priced tokens), with its tags, user and session."""
    run = next(r for r in _runs(demo, pipeline="rag_demo") if r["status"] == "completed")
    detail = httpx.get(f"{demo}/api/v1/runs/{run['run_id']}").json()
    steps = {s["key"]: s for s in detail["steps"]}
    assert {
        "rag_demo.answer.score___2",  # a thread pool's worker
        "rag_demo.answer.rerank.fetch_detail___2",  # an asyncio task
        "rag_demo.answer.compose.stream_tokens",  # a generator
    } <= set(steps)
    (llm,) = [s for s in steps.values() if s["kind"] == "llm"]
    assert llm["key"].startswith("rag_demo.generate.")
    assert "demo" in detail["run"]["tags"]
    scores = httpx.get(f"{demo}/api/v1/runs/{run['run_id']}/scores").json()
    assert {"helpful", "relevance"} == {score["name"] for score in scores}
    assert detail["run"]["user_id"]
    assert detail["run"]["session_id"]


def test_every_page_has_something_to_show(demo: str) -> None:
    """The overview lists every pipeline, the runs page runs, the step stats page its steps and
    a step's statistics, the LLM page the models called, a session its runs in order."""
    pages = {path: httpx.get(f"{demo}{path}") for path in ("/", "/llm", "/pipelines/rag_demo/runs")}
    assert all(page.status_code == 200 for page in pages.values())
    assert all(f">{name}<" in pages["/"].text for name in PIPELINES)
    assert "gpt-4o-mini" in pages["/llm"].text
    assert "text-embedding-3-small" in pages["/llm"].text
    rag_runs = _runs(demo, pipeline="rag_demo")
    assert sum(r["run_id"] in pages["/pipelines/rag_demo/runs"].text for r in rag_runs) >= 10
    steps = httpx.get(f"{demo}/pipelines/rag_demo/steps").text
    assert "rag_demo.generate.openai_chat" in steps
    stats = httpx.get(f"{demo}/pipelines/rag_demo/steps/rag_demo.answer.retrieve")
    assert stats.status_code == 200
    assert "p95" in stats.text
    sessions = collections.Counter(r["session_id"] for r in _runs(demo) if r["session_id"])
    session, count = sessions.most_common(1)[0]
    assert count >= 2
    page = httpx.get(f"{demo}/sessions/{session}").text
    members = sorted((r["start_ns"], r["run_id"]) for r in _runs(demo, session_id=session))
    positions = [page.index(run_id) for _, run_id in members]
    assert positions == sorted(positions)  # oldest first
    run = next(r["run_id"] for r in rag_runs if r["status"] == "completed")
    assert "openai_chat" in httpx.get(f"{demo}/runs/{run}").text


@pytest.mark.browser
def test_the_demo_in_chromium(browser: Browser, demo: str) -> None:
    """In a real Chromium the overview shows a row per demo pipeline and a run page draws its
    Gantt; screenshots ``demo-overview.png``, ``demo-run.png``, ``demo-llm.png``."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{demo}/")
    expect(page.locator("main table tbody tr")).to_have_count(len(PIPELINES))
    shot(page, "demo-overview")
    run = next(r for r in _runs(demo, pipeline="support_agent") if r["status"] == "completed")
    page.goto(f"{demo}/runs/{run['run_id']}")
    expect(page.locator("svg").first).to_be_visible()
    shot(page, "demo-run")
    page.goto(f"{demo}/llm")
    expect(page.locator(".llm-table td", has_text="gpt-4o-mini").first).to_be_visible()
    shot(page, "demo-llm")
    context.close()

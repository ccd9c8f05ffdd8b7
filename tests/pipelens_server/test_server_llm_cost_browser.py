"""The honest LLM figures in a real headless Chromium: calls without usage, time to first token
by model, and run totals in the runs list and the run header."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _browser_kit import TIMEOUT_MS
from _browser_kit import ingest as _ingest
from _browser_kit import shot as _shot
from playwright.sync_api import Browser, Page, expect

import pipelens
from pipelens.events import Event, StepFinished
from pipelens.testing import capture_runs

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Browser, site: str) -> Iterator[Page]:
    """A fresh tab whose time zone (UTC) the server already knows."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([{"name": "tz", "value": "UTC", "url": site}])
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    yield tab
    context.close()


def _run(calls: list[tuple[str, int | None, int | None]]) -> list[Event]:
    """A real run ``rag``: one ``llm_call`` per (model, input tokens or ``None`` for no usage,
    time to first token in ms or ``None``)."""

    def rag() -> None:
        for model, tokens, first_ms in calls:
            with pipelens.llm_call(provider="openai", model=model) as call:
                if tokens is not None:
                    call.set_usage(tokens, tokens // 10)
                if first_ms is not None:
                    call.stream = True
                    call.time_to_first_token_ns = first_ms * 1_000_000

    with capture_runs() as captured:
        pipelens.step(name="rag")(rag)()
    return captured.events


def _run_id(events: list[Event]) -> str:
    return next(e.run_id for e in events if isinstance(e, StepFinished))


def test_unknown_usage_first_token_and_run_totals_as_a_user_sees_them(
    site: str, page: Page
) -> None:
    """/llm says how many calls had no usage and shows time to first token by model; the runs
    list and the run header show each run's tokens and cost, unknown where it is."""
    priced = _run([("gpt-4o-mini", 1_000_000, 100), ("gpt-4o-mini", 1_000_000, 300)])
    unknown = _run([("gpt-4o", None, 200), ("gpt-4o", None, None)])
    _ingest(site, priced)
    _ingest(site, unknown)
    page.goto(f"{site}/llm")
    total = page.locator(".llm-total")
    expect(total).to_contain_text("2 calls without usage")
    expect(total).not_to_contain_text("$0.00")
    ttft = page.locator("table.ttft-table tbody tr")
    expect(ttft).to_have_count(2)
    expect(ttft.filter(has_text="gpt-4o-mini")).to_contain_text("2")
    expect(ttft.filter(has_text="gpt-4o-mini").locator("td").nth(2)).to_have_text("200.0 ms")
    _shot(page, "llm-usage-unknown-and-first-token")

    page.goto(f"{site}/pipelines/rag/runs")
    priced_row = page.locator("tr", has=page.get_by_role("link", name=_run_id(priced)))
    unknown_row = page.locator("tr", has=page.get_by_role("link", name=_run_id(unknown)))
    expect(priced_row.locator("td.llm-cost")).to_have_text("$0.42")
    expect(priced_row.locator("td.llm-tokens")).to_have_text("2,200,000")
    expect(unknown_row.locator("td.llm-cost")).to_have_text("unknown")
    expect(unknown_row.locator("td.llm-tokens")).to_have_text("unknown (2 without usage)")
    _shot(page, "runs-llm-totals")
    unknown_row.get_by_role("link", name=_run_id(unknown)).click()
    expect(page.locator(".run-llm")).to_have_text(
        "LLM: 2 calls · unknown tokens · unknown · 2 without usage"
    )

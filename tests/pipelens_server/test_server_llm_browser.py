"""The LLM usage page and an LLM step's panel in a real headless Chromium (Debian's ``chromium``,
driven by Playwright); screenshots go to ``tests/output/screenshots/`` (not committed)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from _browser_kit import TIMEOUT_MS
from _browser_kit import ingest as _ingest
from _browser_kit import shot as _shot
from playwright.sync_api import Browser, Page, expect
from test_server_llm_pages import llm_run

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


def _chat_run() -> list[Event]:
    """A real run ``ask`` with one chat call whose system prompt is long."""

    def ask() -> None:
        prompt = "\n".join(f"Rule {i}: answer from the documents only." for i in range(30))
        messages = [{"role": "system", "content": prompt}, {"role": "user", "content": "Weather?"}]
        with pipelens.llm_call(provider="openai", model="gpt-4o", messages=messages) as call:
            call.response_model = "gpt-4o-2024-08-06"
            call.request_id = "req_browser"
            call.set_usage(1200, 80, cached_tokens=1024)
            call.set_output("It is sunny in Paris.", finish_reason="stop")

    with capture_runs() as captured:
        pipelens.step(name="ask")(ask)()
    return captured.events


def test_llm_usage_page_chart_metric_and_an_llm_step_panel(site: str, page: Page) -> None:
    """From the nav a user reaches the usage chart, switches it to cost by pipeline (the URL keeps
    it), and
    opens an LLM step's panel with its messages, a long one collapsed until opened."""
    page.goto(f"{site}/")
    page.get_by_role("link", name="LLM usage").click()
    expect(page.locator(".empty")).to_contain_text("No LLM calls yet")
    _shot(page, "llm-empty")
    _ingest(site, llm_run("rag", [("gpt-4o-mini", None, 40_000, 0, 9_000)], ago_s=5 * 3600))
    _ingest(site, llm_run("rag", [("gpt-4o", None, 20_000, 4_000, 3_000)], ago_s=2 * 3600))
    _ingest(site, llm_run("agent", [("my-local-llama", None, 8_000, 0, 2_000)], ago_s=3600))
    chat = _chat_run()
    _ingest(site, chat)
    page.reload()
    expect(page.locator("svg.usage-chart rect.segment")).to_have_count(4)
    expect(page.locator(".llm-total")).to_contain_text("+ unknown (my-local-llama")
    _shot(page, "llm-usage-tokens")
    page.select_option("#metric", "cost")
    expect(page).to_have_url(re.compile(r"metric=cost"))
    expect(page.locator("figcaption")).to_contain_text("Cost in USD")
    expect(page.locator("svg.usage-chart rect.segment")).to_have_count(3)  # the llama: no price
    page.select_option("#by", "pipeline")
    expect(page).to_have_url(re.compile(r"metric=cost&by=pipeline"))
    expect(page.locator("figcaption")).to_contain_text("by pipeline")
    page.reload()
    expect(page.locator("#metric")).to_have_value("cost")
    expect(page.locator("#by")).to_have_value("pipeline")
    page.emulate_media(color_scheme="dark")
    _shot(page, "llm-usage-cost-dark")
    page.emulate_media(color_scheme="light")
    step = next(e for e in chat if isinstance(e, StepFinished) and e.kind == "llm")
    page.goto(f"{site}/runs/{step.run_id}")
    page.locator(".tree").get_by_role("link", name=step.name).click()
    panel = page.locator("#step_panel .llm-call")
    expect(panel).to_contain_text("gpt-4o → answered by gpt-4o-2024-08-06")
    expect(panel).to_contain_text("1,200 in (1,024 cached) · 80 out")
    expect(panel.locator(".llm-output")).to_have_text("It is sunny in Paris.")
    long_message = panel.locator("details.message")
    expect(long_message.locator("pre")).not_to_be_visible()
    long_message.locator("summary").click()
    expect(long_message.locator("pre")).to_contain_text("Rule 29")
    _shot(page, "run-llm-step-panel")

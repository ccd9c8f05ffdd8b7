"""Comparing two runs in a real headless Chromium: from the runs page's pick and the run page's
"compare with", the changed steps, a step's diff, all the steps; screenshot ``compare.png``."""

from __future__ import annotations

import re

import pytest
from _browser_kit import serious_violations
from _dashboard_kit import recent_run
from playwright.sync_api import Page, expect
from test_server_compare import _slower_with_extra
from test_server_pages_browser import _ingest, _shot, page

pytestmark = pytest.mark.browser
__all__ = ["page"]  # the fixture this module's tests take from test_server_pages_browser


def test_pick_two_runs_read_what_changed_and_a_steps_diff(site: str, page: Page) -> None:
    """The runs page's form compares the two newest runs; the page lists the changed steps
    with both durations and the delta, a step's panel its result's diff, and "Show all steps"
    the unchanged one too; axe finds nothing serious."""
    _ingest(site, recent_run("base", ago_s=120))
    _ingest(site, _slower_with_extra("new"))
    page.goto(f"{site}/pipelines/rag/runs")
    expect(page.locator("#pick_a")).to_have_value("base")
    expect(page.locator("#pick_b")).to_have_value("new")
    page.get_by_role("button", name="Compare").click()
    expect(page).to_have_url(re.compile(r"/compare\?a=base&b=new$"))
    rows = page.locator("table.compare tbody tr")
    expect(rows).to_have_count(3)
    rerank = page.locator('tr[data-key="answer.rerank"]')
    expect(rerank).to_contain_text("completed → failed")
    expect(rerank.locator("td.delta")).to_have_text("+300.0 ms")
    expect(page.locator('tr[data-key="answer.cite"]')).to_contain_text("only in B")
    rerank.get_by_role("link", name="rerank").click()
    expect(page.locator("#compare_panel h2")).to_have_text("answer.rerank")
    expect(page.locator("#compare_panel .diff .del").first).to_have_text('- "d1"')
    assert serious_violations(page) == []
    _shot(page, "compare")
    page.get_by_role("link", name="Show all steps").click()
    expect(rows).to_have_count(4)
    expect(page.locator('tr[data-key="answer.retrieve"]')).to_have_class(re.compile("same"))
    page.get_by_role("link", name="Collapse answer").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("+3, 2 changed")


def test_the_run_page_compares_with_the_previous_run(site: str, page: Page) -> None:
    """A run page's "Compare" compares the previous run of its pipeline with it."""
    _ingest(site, recent_run("base", ago_s=120))
    _ingest(site, _slower_with_extra("new"))
    page.goto(f"{site}/runs/new")
    expect(page.locator("#compare_a")).to_have_value("base")
    page.get_by_role("button", name="Compare").click()
    expect(page).to_have_url(re.compile(r"/compare\?b=new&a=base$"))
    expect(page.locator("table.compare tbody tr")).to_have_count(3)

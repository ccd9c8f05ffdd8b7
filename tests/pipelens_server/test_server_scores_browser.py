"""Scores in a real headless Chromium: the run page's form adds a score without a reload, the
runs page shows it and filters by it, and draws the pipeline's score charts. Fixtures as in
``test_server_pages_browser.py``; screenshots go to ``tests/output/screenshots/``."""

from __future__ import annotations

import re
import time

import pytest
from _browser_kit import TIMEOUT_MS, ingest, shot
from _dashboard_kit import recent_run
from playwright.sync_api import Browser, expect

from pipelens.events import ScoreAdded

pytestmark = pytest.mark.browser


def test_add_a_score_on_the_run_page_then_filter_the_runs_by_it(
    browser: Browser, site: str
) -> None:
    """The form's score appears in the run's list (htmx, no reload); the runs page's column
    shows it, ``score=`` narrows the list to it, and the charts draw it."""
    for i in range(4):
        ingest(site, recent_run(f"run{i}", ago_s=60 * (i + 1)))
        ingest(
            site,
            [
                ScoreAdded(
                    run_id=f"run{i}",
                    score_id="auto",
                    name="relevance",
                    value=0.25 * i,
                    at_ns=time.time_ns(),
                )
            ],
        )
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{site}/runs/run2")
    scores = page.locator("#run_scores tbody tr")
    expect(scores).to_have_count(1)
    page.locator("#score_name").fill("helpful")
    page.locator("#score_value").fill("true")
    page.locator("#score_comment").fill("answered the question")
    page.locator(".score-form button").click()
    expect(scores).to_have_count(2)
    expect(scores.nth(1)).to_contain_text("answered the question")
    expect(page).to_have_url(f"{site}/runs/run2")  # no reload, no redirect
    shot(page, "run-scores")
    page.goto(f"{site}/pipelines/rag/runs")
    expect(page.locator("#runs_table tbody tr")).to_have_count(4)
    # The runs' mean duration, relevance and helpful.
    expect(page.locator(".score-chart")).to_have_count(3)
    page.locator("#score").fill("helpful:true")
    expect(page.locator("#runs_table tbody tr")).to_have_count(1)
    expect(page.locator("#runs_table .run-scores")).to_contain_text("helpful true")
    expect(page).to_have_url(re.compile(r"[?&]score=helpful%3Atrue(&|$)"))
    shot(page, "runs-scores")
    context.close()

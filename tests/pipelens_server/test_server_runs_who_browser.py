"""Who and why in a real headless Chromium: the runs page's tag filter, the run header and the
session page. Fixtures as in ``test_server_pages_browser.py``; the screenshot goes to
``tests/output/screenshots/``."""

from __future__ import annotations

import re

import pytest
from _browser_kit import TIMEOUT_MS, ingest, shot
from _dashboard_kit import recent_run, with_who
from playwright.sync_api import Browser, expect

pytestmark = pytest.mark.browser


def test_filter_by_tag_then_follow_the_session(browser: Browser, site: str) -> None:
    """Typing a tag narrows the runs; a run's header links its session, which lists its runs."""
    ingest(site, with_who(recent_run("first", ago_s=30), tags=["nightly"], session_id="conv-7"))
    ingest(site, with_who(recent_run("second", ago_s=20), user_id="u-42", session_id="conv-7"))
    ingest(site, recent_run("other", ago_s=10))
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{site}/pipelines/rag/runs")
    rows = page.locator("#runs_table tbody tr")
    expect(rows).to_have_count(3)
    page.locator("#tag").fill("nightly")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"[?&]tag=nightly(&|$)"))  # pushed: shareable
    page.locator("#runs_table a", has_text="first").click()
    expect(page.locator(".run-who .tag")).to_have_text("nightly")
    shot(page, "run-who")
    page.locator(".run-session").click()
    expect(page.locator("h1")).to_have_text("Session conv-7")
    expect(page.locator("tbody tr td:first-child")).to_have_text(["first", "second"])
    shot(page, "session")
    context.close()

"""A big run in a real headless Chromium: open a collapsed subtree, close it, click a bar."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect
from test_server_pages_browser import _ingest, _shot, page
from test_server_run_large import BUDGET, CHILDREN, _wide_run

from pipelens_server._pages import _gantt

pytestmark = pytest.mark.browser
__all__ = ["page"]  # the fixture this module's tests take from test_server_pages_browser


def test_a_collapsed_subtree_opens_closes_and_its_bars_open_the_panel(
    site: str, page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expand draws the first and last children and a gap, "show all" the others, each view in
    the URL; Collapse hides them again, and a click on a bar opens that step's panel."""
    # The server runs in this process.
    monkeypatch.setattr(_gantt, "ROW_BUDGET", BUDGET)
    monkeypatch.setattr(_gantt, "CHILD_CAP", 10)
    _ingest(site, _wide_run("wide"))
    page.goto(f"{site}/runs/wide")
    bars = page.locator("svg.gantt rect.bar")
    expect(bars).to_have_count(1)
    page.get_by_role("link", name="Expand loop").click()
    expect(bars).to_have_count(11)
    expect(page).to_have_url(f"{site}/runs/wide?expand=loop")
    page.get_by_role("link", name=f"… {CHILDREN - 10} more steps: show all").click()
    expect(bars).to_have_count(CHILDREN + 1)
    expect(page).to_have_url(f"{site}/runs/wide?expand=loop&all=loop")
    _shot(page, "run-big-expanded")
    page.locator('rect[data-key="loop.item___3"]').click()
    expect(page.locator("#step_panel h2")).to_contain_text("loop.item___3")
    expect(page).to_have_url(re.compile(r"/runs/wide\?step=loop.item___3$"))
    page.get_by_role("link", name="Collapse loop").click()
    expect(bars).to_have_count(1)

"""The step stats page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The fixtures follow ``test_server_pages_browser.py``: a missing browser fails, never skips;
screenshots go to ``tests/output/screenshots/`` (not committed).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from _browser_kit import TIMEOUT_MS
from _browser_kit import shot as _shot
from _dashboard_kit import MS, SECOND, at
from _pg_testkit import MSGPACK, msgpack_body, run_events
from playwright.sync_api import Browser, Page, expect

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Browser, site: str) -> Iterator[Page]:
    """A fresh browser tab in Paris's time zone (the zone cookie already set)."""
    context = browser.new_context(
        timezone_id="Europe/Paris", viewport={"width": 1280, "height": 900}
    )
    context.add_cookies([{"name": "tz", "value": "Europe/Paris", "url": site}])
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    yield tab
    context.close()


def test_from_a_step_panel_to_its_stats_their_chart_range_and_runs(site: str, page: Page) -> None:
    """A step panel leads to its key's stats: figures, a point per step, a range kept in the URL
    over a reload, and failed runs linking back to the step in their run."""
    now = time.time_ns()
    for i in range(1, 9):
        events = at(run_events(f"run-{i}", fail=i in (3, 7)), now - (90 - i * 10) * SECOND, i * MS)
        response = httpx.post(
            f"{site}/api/v1/events", content=msgpack_body(events), headers=MSGPACK
        )
        assert response.status_code == 202, response.text
    page.goto(f"{site}/runs/run-8?step=answer.rerank")
    page.get_by_role("link", name="Statistics of answer.rerank across runs").click()
    expect(page).to_have_url(f"{site}/pipelines/rag/steps/answer.rerank?range=7d")
    expect(page.locator("table.stats tbody td").nth(1)).to_have_text("25.0 %")
    expect(page.locator("svg.durations circle.point")).to_have_count(8)
    expect(page.locator("svg.durations circle.point.failed")).to_have_count(2)
    page.select_option("#range", "1h")
    expect(page).to_have_url(re.compile(r"range=1h$"))
    page.reload()
    expect(page.locator("#range")).to_have_value("1h")
    expect(page.locator("#failed tbody tr td:first-child")).to_have_text(["run-7", "run-3"])
    _shot(page, "step-stats")
    page.emulate_media(color_scheme="dark")
    _shot(page, "step-stats-dark")
    page.emulate_media(color_scheme="light")
    page.locator("#failed").get_by_role("link", name="run-7").click()
    expect(page).to_have_url(f"{site}/runs/run-7?step=answer.rerank")
    expect(page.locator("#step_panel")).to_contain_text("ValueError")


def test_at_1400_px_the_slowest_table_does_not_run_into_the_failures_beside_it(
    site: str, page: Page
) -> None:
    """The slowest-runs table and the "No failure in this range." text beside it each keep to
    their own column at 1400 px: the "Duration" header's box does not cross the text's."""
    now = time.time_ns()
    for i in range(3):
        # Run ids as long as the UUIDs clients make: the widest rows the table has.
        run_id = f"0192f0c4-7b1e-7a3c-9d4e-5f6a7b8c9d{i:02d}"
        events = at(run_events(run_id), now - (30 - i) * SECOND, MS)
        response = httpx.post(
            f"{site}/api/v1/events", content=msgpack_body(events), headers=MSGPACK
        )
        assert response.status_code == 202, response.text
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{site}/pipelines/rag/steps/answer.retrieve?range=1h")
    header = page.locator("#slowest").get_by_role("columnheader", name="Duration")
    text = page.get_by_text("No failure in this range.")
    expect(text).to_be_visible()
    a, b = header.bounding_box(), text.bounding_box()
    assert a is not None
    assert b is not None
    overlap_x = a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
    overlap_y = a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]
    assert not (overlap_x and overlap_y), f"Duration header {a} overlaps the text {b}"
    _shot(page, "step-stats-1400")

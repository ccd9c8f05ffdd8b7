"""The import and settings pages in a real headless Chromium (Debian's ``chromium``, Playwright).

A missing browser fails these tests, it never skips them. Screenshots go to
``tests/output/screenshots/`` (not committed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from _browser_kit import TIMEOUT_MS
from _browser_kit import shot as _shot
from playwright.sync_api import Browser, Page, expect

pytestmark = pytest.mark.browser

MS = 1_700_000_000_000  # epoch milliseconds


@pytest.fixture
def page(browser: Browser, site: str) -> Iterator[Page]:
    """A fresh browser tab whose zone cookie is already set (no first-visit redraw)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([{"name": "tz", "value": "UTC", "url": site}])
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    yield tab
    context.close()


def _seed_export(tmp_path: Path) -> Path:
    steps = [
        {"name": "demo", "key": "demo", "time": {"startTs": MS, "endTs": MS + 30}, "records": {}},
        {"name": "child", "key": "demo.child", "time": {"startTs": MS + 5}, "records": {}},
    ]
    path = tmp_path / "seed-run.json"
    path.write_text(json.dumps({**steps[0], "logVersion": 1, "runId": "seed-1", "steps": steps}))
    return path


def test_uploading_files_shows_a_result_per_file_and_the_run(
    site: str, page: Page, tmp_path: Path
) -> None:
    """Two files chosen in the form: one imported (linked to its run), one refused with why."""
    bad = tmp_path / "broken.json"
    bad.write_text('{"logVersion": 3, "runId": "x", "name": "x"}')
    page.goto(f"{site}/")
    page.get_by_role("navigation").get_by_role("link", name="Import").click()
    expect(page).to_have_url(f"{site}/import")
    page.locator("#files").set_input_files([_seed_export(tmp_path), bad])
    page.get_by_role("button", name="Import").click()
    rows = page.locator("#import_results tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("seed-run.json")
    expect(rows.nth(0)).to_contain_text("imported")
    expect(rows.nth(1)).to_contain_text("broken.json: unsupported logVersion 3")
    expect(rows.nth(1)).to_contain_text("$.logVersion")
    _shot(page, "import-results")
    rows.nth(0).get_by_role("link", name="seed-1").click()
    expect(page).to_have_url(f"{site}/runs/seed-1")
    expect(page.locator("svg.gantt rect.bar")).to_have_count(2)


def test_changing_a_retention_on_the_settings_page(site: str, page: Page, tmp_path: Path) -> None:
    """A pipeline's retention is changed through its form; a bad value is explained."""
    page.goto(f"{site}/import")
    page.locator("#files").set_input_files(_seed_export(tmp_path))
    page.get_by_role("button", name="Import").click()
    result = page.locator("#import_results tbody tr")
    expect(result).to_contain_text("older than the retention")  # a 2023 run: it says so
    result.get_by_role("link", name="Settings").click()
    row = page.locator("tbody tr", has_text="demo")
    expect(row.locator("td").nth(1)).to_have_text("14 days (default)")
    row.get_by_label("Days for demo").fill("30")
    row.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/settings\?saved=demo$"))
    expect(page.locator("tbody tr td").nth(1)).to_have_text("30 days")
    # The browser's own check (min/max) is bypassed to show the server's message.
    page.locator("#default_days").evaluate("input => input.removeAttribute('max')")
    page.locator("#default_days").fill("5000")
    page.get_by_role("button", name="Save default").click()
    expect(page.get_by_role("alert")).to_contain_text("from 1 to 3650, got '5000'")
    _shot(page, "settings-error")

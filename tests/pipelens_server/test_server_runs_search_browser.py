"""The runs page's custom range and searches in a real headless Chromium (Debian's ``chromium``).

Fixtures as in ``test_server_pages_browser.py``: a missing browser fails, it never skips; the
screenshot goes to ``tests/output/screenshots/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec
import pytest
from _browser_kit import SCREENSHOTS, TIMEOUT_MS
from _browser_kit import ingest as _ingest
from _dashboard_kit import recent_run
from playwright.sync_api import Browser, Page, expect

from pipelens.events import Event, StepFinished

pytestmark = pytest.mark.browser

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def page(browser: Browser, site: str) -> Iterator[Page]:
    """A fresh browser tab in Paris's time zone, which the server has learnt from it."""
    context = browser.new_context(
        timezone_id="Europe/Paris", viewport={"width": 1280, "height": 800}
    )
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.goto(f"{site}/")
    expect(tab.locator("header .zone")).to_have_text("Times in Europe/Paris")
    yield tab
    context.close()


def _run(run_id: str, ago_s: float, step_name: str, records: str) -> list[Event]:
    """A recent run whose middle step is called ``step_name`` and records ``records``."""
    events = []
    for event in recent_run(run_id, ago_s=ago_s):
        if getattr(event, "name", None) == "retrieve":
            event = msgspec.structs.replace(event, name=step_name)
            if isinstance(event, StepFinished):
                event = msgspec.structs.replace(event, records=records)
        events.append(event)
    return events


def _paris(moment: datetime) -> str:
    """What a datetime-local input holds for ``moment`` in Paris."""
    return f"{moment.astimezone(PARIS):%Y-%m-%dT%H:%M}"


def test_custom_range_and_searches_filter_live_and_survive_a_reload(site: str, page: Page) -> None:
    """Step name, record key and value, and a custom range (typed in Paris time) go into the URL,
    the live refresh keeps them, a reload shows the same view, and an inverted range says so."""
    _ingest(site, _run("embed-a", 40, "embed", '{"doc": "d1"}'))
    _ingest(site, _run("embed-b", 30, "embed", '{"doc": "d2"}'))
    _ingest(site, _run("plain", 20, "retrieve", '{"doc": "d1"}'))
    _ingest(site, _run("old-embed", 3 * 3600, "embed", '{"doc": "d1"}'))
    page.goto(f"{site}/pipelines/rag/runs")
    rows = page.locator("#runs_table tbody tr td:first-child")
    expect(rows).to_have_text(["plain", "embed-b", "embed-a", "old-embed"])
    expect(page.locator("#from")).to_be_hidden()
    page.locator("#step").press_sequentially("embed")
    expect(rows).to_have_text(["embed-b", "embed-a", "old-embed"])
    page.locator("#record_key").press_sequentially("doc")
    page.locator("#record_value").press_sequentially("d1")
    expect(rows).to_have_text(["embed-a", "old-embed"])
    expect(page).to_have_url(re.compile(r"step=embed&record_key=doc&record_value=d1(&|$)"))
    page.select_option("#range", "custom")
    expect(page.locator("#from")).to_be_visible()
    # Hours counted in UTC, shown in Paris: a day of a DST change has an hour that is not there
    # (Paris's now - 1 h of wall time may be now) and one that is there twice (read as the
    # first, so up to an hour early: ``to`` has an hour to spare, the inverted ``to`` too).
    now = datetime.now(UTC)
    page.fill("#from", _paris(now - timedelta(hours=1)))
    page.fill("#to", _paris(now + timedelta(hours=2)))
    expect(rows).to_have_text(["embed-a"])  # the 3-hour-old run is out of range
    expect(page).to_have_url(re.compile(r"range=custom&from=.+&to=.+&step=embed"))
    _ingest(site, _run("embed-c", 2, "embed", '{"doc": "d1"}'))
    expect(rows).to_have_text(["embed-c", "embed-a"])  # the live refresh kept every filter
    expect(page.locator(".custom-range")).to_contain_text("(Europe/Paris)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "runs-search.png", full_page=True)
    page.reload()
    expect(page.locator("#range")).to_have_value("custom")
    expect(page.locator("#from")).to_have_value(_paris(now - timedelta(hours=1)))
    expect(page.locator("#record_value")).to_have_value("d1")
    expect(rows).to_have_text(["embed-c", "embed-a"])
    page.fill("#to", _paris(now - timedelta(hours=3)))
    expect(page.locator("#runs_table [role=alert]")).to_contain_text("is not before to=")
    page.screenshot(path=SCREENSHOTS / "runs-search-inverted.png", full_page=True)


def test_search_box_finds_part_of_a_record_value_in_any_case(site: str, page: Page) -> None:
    """Typing ``ALI`` in the search box lists the runs with a step whose record value or name
    holds ``ali`` (``Alice``, ``fetch_alice``), puts ``q=`` in the URL, and a reload keeps it."""
    _ingest(site, _run("alice-run", 40, "retrieve", '{"user": "Alice"}'))
    _ingest(site, _run("named", 30, "fetch_alice", '{"user": "bob"}'))
    _ingest(site, _run("bob-run", 20, "retrieve", '{"user": "bob"}'))
    page.goto(f"{site}/pipelines/rag/runs")
    rows = page.locator("#runs_table tbody tr td:first-child")
    expect(rows).to_have_text(["bob-run", "named", "alice-run"])
    page.locator("#q").press_sequentially("ALI")
    expect(rows).to_have_text(["named", "alice-run"])
    expect(page).to_have_url(re.compile(r"q=ALI(&|$)"))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "runs-search-substring.png", full_page=True)
    page.reload()
    expect(page.locator("#q")).to_have_value("ALI")
    expect(rows).to_have_text(["named", "alice-run"])

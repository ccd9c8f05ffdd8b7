"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

A missing browser fails these tests, it never skips them: ``.ci/run`` installs it. Each test saves
screenshots to ``tests/output/screenshots/`` (not committed) for a person to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from _browser_kit import TIMEOUT_MS
from _browser_kit import ingest as _ingest
from _browser_kit import shot as _shot
from _dashboard_kit import recent_run, running_run
from _pg_testkit import live_server
from playwright.sync_api import Browser, Page, expect

from pipelens_server import Settings, create_app

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Browser, site: str) -> Iterator[Page]:
    """A fresh browser tab in Paris's time zone, which the server has learnt from it."""
    context = browser.new_context(
        timezone_id="Europe/Paris", viewport={"width": 1280, "height": 800}
    )
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    # The first page is drawn in UTC; static/pipelens.js sets the zone cookie and redraws it.
    tab.goto(f"{site}/")
    expect(tab.locator("header .zone")).to_have_text("Times in Europe/Paris")
    yield tab
    context.close()


def test_overview_to_a_run_its_gantt_bars_and_a_step_panel(site: str, page: Page) -> None:
    """From the overview a user reaches a run, sees a bar per step and opens a step's panel."""
    _ingest(site, recent_run("ok-run", ago_s=20))
    _ingest(site, recent_run("failed-run", fail=True, ago_s=10))
    page.goto(f"{site}/")
    expect(page.locator("tbody tr")).to_have_count(1)
    last_run = page.locator("tbody tr td").nth(7)  # the "Last run" column
    expect(last_run).to_have_text(re.compile(r" CES?T$"))  # Paris
    _shot(page, "overview")
    page.get_by_role("link", name="rag").click()
    expect(page).to_have_url(re.compile(r"/pipelines/rag/runs\?range=24h$"))
    expect(page.locator("#runs_table tbody tr")).to_have_count(2)
    _shot(page, "runs")
    page.get_by_role("link", name="failed-run").click()
    expect(page).to_have_url(f"{site}/runs/failed-run")
    bars = page.locator("svg.gantt rect.bar")
    expect(bars).to_have_count(3)
    expect(page.locator("svg.gantt rect.bar.failed")).to_have_count(2)
    page.locator(".tree").get_by_role("link", name="rerank").click()
    panel = page.locator("#step_panel")
    expect(panel).to_contain_text("ValueError")
    expect(panel).to_contain_text("Traceback ...")
    expect(page).to_have_url(f"{site}/runs/failed-run?step=answer.rerank")
    _shot(page, "run-with-step-panel")
    page.emulate_media(color_scheme="dark")
    _shot(page, "run-with-step-panel-dark")


def test_a_running_run_updates_live_and_stops_polling_once_finished(site: str, page: Page) -> None:
    """The run page refreshes while the run runs, shows it finish, then stops asking."""
    running, rest = running_run("live-run")
    _ingest(site, running)
    polls: list[str] = []
    page.on(
        "request",
        lambda request: (
            polls.append(request.url) if request.headers.get("hx-target") == "run_live" else None
        ),
    )
    page.goto(f"{site}/runs/live-run")
    live = page.locator("#run_live")
    expect(live).to_have_attribute("data-status", "running")
    expect(page.locator("svg.gantt rect.bar")).to_have_count(2)
    expect(page.locator("svg.gantt rect.bar.running")).to_have_count(2)
    _shot(page, "run-running")
    # A running bar reaches "now": each refresh draws it longer (its title says how long so far).
    title = page.locator('rect[data-key="answer"] title')
    expect(title).to_contain_text("so far")
    expect(title).not_to_have_text(title.text_content() or "")
    _ingest(site, rest)
    expect(live).to_have_attribute("data-status", "completed")
    expect(page.locator("svg.gantt rect.bar.completed")).to_have_count(3)
    _shot(page, "run-finished")
    polls_when_finished = len(polls)
    page.wait_for_timeout(5000)  # two more polling periods: none may come
    assert polls_when_finished == len(polls)
    assert polls_when_finished >= 1


def test_a_filter_change_pushes_its_url_keeps_refreshing_and_reloads(site: str, page: Page) -> None:
    """A status filter goes into the URL, the live refresh keeps it, a reload shows the same view,
    Back shows the unfiltered one; typing a run id filters without losing the input."""
    _ingest(site, recent_run("good", ago_s=30))
    _ingest(site, recent_run("bad-1", fail=True, ago_s=20))
    page.goto(f"{site}/pipelines/rag/runs")
    expect(page.locator("#runs_table tbody tr")).to_have_count(2)
    page.select_option("#status", "failed")
    expect(page).to_have_url(re.compile(r"status=failed"))
    rows = page.locator("#runs_table tbody tr td:first-child")
    expect(rows).to_have_text(["bad-1"])
    _ingest(site, recent_run("bad-2", fail=True, ago_s=5))
    _ingest(site, recent_run("good-2", ago_s=4))
    expect(rows).to_have_text(["bad-2", "bad-1"])  # the live refresh kept the filter
    _shot(page, "runs-filtered")
    page.reload()
    expect(page.locator("#status")).to_have_value("failed")
    expect(rows).to_have_text(["bad-2", "bad-1"])
    page.go_back()  # the unfiltered view, fresh from the server
    expect(page).not_to_have_url(re.compile(r"status=failed"))
    expect(page.locator("#status")).to_have_value("")
    expect(rows).to_have_text(["good-2", "bad-2", "bad-1", "good"])
    page.locator("#q").press_sequentially("good")  # typing filters, and the input keeps focus
    expect(rows).to_have_text(["good-2", "good"])
    expect(page).to_have_url(re.compile(r"q=good"))
    expect(page.locator("#q")).to_be_focused()
    expect(page.locator("#q")).to_have_value("good")


def test_empty_overview_in_the_dark_theme(site: str, browser: Browser) -> None:
    """A new user's overview explains the two lines to add; a dark system gets the dark theme."""
    context = browser.new_context(color_scheme="dark", viewport={"width": 1280, "height": 600})
    try:
        # The zone cookie already set: no first-visit redraw while the test looks at the page.
        context.add_cookies([{"name": "tz", "value": "UTC", "url": site}])
        tab = context.new_page()
        tab.goto(f"{site}/")
        expect(tab.locator(".empty")).to_contain_text("pipelens.configure(url=")
        background = tab.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(13, 17, 23)"
        _shot(tab, "overview-empty-dark")
    finally:
        context.close()


def test_login_form_leads_back_to_the_page_asked_for(database_url: str, browser: Browser) -> None:
    """With a token, a page sends the browser to the login form, which returns to that page."""
    app = create_app(Settings(database_url=database_url, token="browser-token"))
    with live_server(app) as url:
        context = browser.new_context()
        try:
            context.add_cookies([{"name": "tz", "value": "UTC", "url": url}])
            tab = context.new_page()
            tab.goto(f"{url}/pipelines/rag/runs?range=7d")
            expect(tab).to_have_url(re.compile(r"/login\?next="))
            tab.fill("#token", "wrong")
            tab.click("button[type=submit]")
            expect(tab.get_by_role("alert")).to_have_text("That token is not the server's.")
            _shot(tab, "login-refused")
            tab.fill("#token", "browser-token")
            tab.click("button[type=submit]")
            expect(tab).to_have_url(f"{url}/pipelines/rag/runs?range=7d")
            expect(tab.locator("h1")).to_have_text("Runs of rag")
        finally:
            context.close()

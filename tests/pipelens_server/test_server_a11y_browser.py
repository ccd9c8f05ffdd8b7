"""Every dashboard page audited by axe-core in a real headless Chromium, light and dark, and
looked at on a laptop (1024 px) and a phone (390 px).

One server and one browser serve the whole module (the pages are read, never changed), so the
audit stays cheap. The screenshots go to ``tests/output/screenshots/a11y-*.png`` (not committed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from _browser_kit import TIMEOUT_MS, serious_violations
from _browser_kit import ingest as _ingest
from _browser_kit import shot as _shot
from _dashboard_kit import recent_run, with_who
from _pg_testkit import live_server
from playwright.sync_api import Browser, BrowserContext, Page, expect
from test_server_llm_pages import llm_run

from pipelens.events import StepStarted
from pipelens_server import Settings, create_app

pytestmark = pytest.mark.browser

TOKEN = "a11y-token"
WIDTHS = {"laptop": 1024, "phone": 390}


@pytest.fixture(scope="module")
def seeded(module_database_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A server with a token, holding a good run, a failed run, a run with an LLM call and a
    run of a session; its URL and the path of each page to audit, by name."""
    app = create_app(Settings(database_url=module_database_url, token=TOKEN))
    with live_server(app) as site:
        _ingest(site, recent_run("ok-run", ago_s=40), TOKEN)
        _ingest(site, recent_run("failed-run", fail=True, ago_s=30), TOKEN)
        llm = llm_run("rag", [("gpt-4o", "gpt-4o-2024-08-06", 1_200, 0, 80)], ago_s=20)
        llm_key = next(e.key for e in llm if isinstance(e, StepStarted) and e.kind == "llm")
        _ingest(site, llm, TOKEN)
        _ingest(
            site, with_who(recent_run("talk-run", "chat", ago_s=10), session_id="conv-1"), TOKEN
        )
        yield (
            site,
            {
                "overview": "/",
                "runs": "/pipelines/rag/runs",
                "run-failed-step": "/runs/failed-run?step=answer.rerank",
                "run-llm-step": f"/runs/{llm[0].run_id}?step={llm_key}",
                "steps": "/pipelines/rag/steps",
                "step-stats": "/pipelines/rag/steps/answer.retrieve",
                "llm": "/llm",
                "compare": "/compare?a=ok-run&b=failed-run",
                "session": "/sessions/conv-1",
                "import": "/import",
                "settings": "/settings",
                "error": "/runs/no-such-run",
            },
        )


@pytest.fixture(scope="module")
def logged_in(browser: Browser, seeded: tuple[str, dict[str, str]]) -> Iterator[BrowserContext]:
    """A browser context in UTC (the server knows it) that has logged in with the token."""
    site, _ = seeded
    context = browser.new_context(viewport={"width": WIDTHS["laptop"], "height": 800})
    context.add_cookies([{"name": "tz", "value": "UTC", "url": site}])
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.goto(f"{site}/login")
    tab.fill("#token", TOKEN)
    tab.get_by_role("button", name="Log in").click()
    expect(tab).to_have_url(f"{site}/")
    tab.close()
    yield context
    context.close()


@pytest.fixture(scope="module")
def tab(logged_in: BrowserContext) -> Iterator[Page]:
    """One tab reused for every page of the audit."""
    page = logged_in.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    page.close()


#: The views audited and photographed: each colour scheme at the laptop width, light on a phone.
VIEWS = (("light", WIDTHS["laptop"]), ("dark", WIDTHS["laptop"]), ("light", WIDTHS["phone"]))


def _audit(page: Page, name: str) -> dict[str, list[str]]:
    """The serious findings on ``page`` in each of the ``VIEWS`` that has some, by view; a
    screenshot of every view."""
    found = {}
    for scheme, width in VIEWS:
        page.emulate_media(color_scheme=scheme)
        page.set_viewport_size({"width": width, "height": 800})
        found[f"{scheme}-{width}"] = serious_violations(page)
        _shot(page, f"a11y-{name}-{scheme}-{width}")
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": WIDTHS["laptop"], "height": 800})
    return {view: lines for view, lines in found.items() if lines}


PAGES = [
    "overview",
    "runs",
    "run-failed-step",
    "run-llm-step",
    "steps",
    "step-stats",
    "llm",
    "compare",
    "session",
    "import",
    "settings",
    "error",
]


#: The pictures each page draws (some asked for once the page shows): audited with the page.
PICTURES = {
    "overview": "svg.spark",
    "runs": "svg.timeline",
    "run-failed-step": ".time-strip svg",
    "run-llm-step": ".time-strip svg",
    "step-stats": "svg.histogram",
}


@pytest.mark.parametrize("name", PAGES)
def test_page_has_no_serious_axe_violation_in_light_or_dark(
    seeded: tuple[str, dict[str, str]], tab: Page, name: str
) -> None:
    """axe-core finds nothing serious or critical on the page, its pictures drawn, light or
    dark, wide or narrow."""
    site, paths = seeded
    tab.goto(site + paths[name])
    expect(tab.locator("main h1")).to_be_visible()
    if name in PICTURES:
        expect(tab.locator(PICTURES[name]).first).to_be_visible()
    assert _audit(tab, name) == {}


def test_login_page_has_no_serious_axe_violation(
    browser: Browser, seeded: tuple[str, dict[str, str]]
) -> None:
    """The login form (a server with a token, no session yet) passes the audit too."""
    site, _ = seeded
    context = browser.new_context(viewport={"width": WIDTHS["laptop"], "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{site}/settings")
    expect(page).to_have_url(re.compile(r"/login"))
    try:
        assert _audit(page, "login") == {}
    finally:
        context.close()


def test_the_audit_reports_an_unlabeled_input(tab: Page) -> None:
    """The audit is not blind: a page with an input nobody named is refused, by rule."""
    tab.set_content(
        '<!doctype html><html lang="en"><head><title>t</title></head>'
        '<body><main><h1>Form</h1><input type="text"></main></body></html>'
    )
    found = serious_violations(tab)
    assert [line.split(" ")[0] for line in found] == ["label"]


@pytest.mark.parametrize(
    ("name", "current", "title"),
    [
        ("overview", "Pipelines", "Pipelines · PipeLens"),
        ("runs", "Pipelines", "Runs of rag · PipeLens"),
        ("run-failed-step", "Pipelines", "Run failed-r… · rag · PipeLens"),
        ("step-stats", "Pipelines", "Statistics of answer.retrieve · rag · PipeLens"),
        ("llm", "LLM usage", "LLM usage · PipeLens"),
        ("import", "Import", "Import · PipeLens"),
        ("settings", "Settings", "Settings · PipeLens"),
    ],
)
def test_navigation_marks_the_current_item_and_the_title_names_the_page(
    seeded: tuple[str, dict[str, str]], tab: Page, name: str, current: str, title: str
) -> None:
    """One navigation item, the page's own, is aria-current; the tab's title says what it shows."""
    site, paths = seeded
    tab.goto(site + paths[name])
    expect(tab.locator('header nav [aria-current="page"]')).to_have_text([current])
    expect(tab).to_have_title(title)


def test_favicon_is_an_svg_served_by_the_server(
    seeded: tuple[str, dict[str, str]], tab: Page
) -> None:
    """The page names an SVG icon and the server itself answers it (no network beyond)."""
    site, _ = seeded
    tab.goto(f"{site}/")
    href = tab.locator('link[rel="icon"]').get_attribute("href")
    assert href == "/static/favicon.svg"
    answer = tab.request.get(site + href)
    assert (answer.status, answer.headers["content-type"]) == (200, "image/svg+xml")
    assert answer.text().startswith("<svg")


def test_on_a_phone_the_gantt_and_a_table_scroll_in_their_boxes_not_the_page(
    seeded: tuple[str, dict[str, str]], tab: Page
) -> None:
    """At 390 px the Gantt keeps its width and scrolls in its box, the runs table in its own; the
    page stays 390 px wide."""
    site, paths = seeded
    tab.set_viewport_size({"width": WIDTHS["phone"], "height": 800})
    try:
        tab.goto(site + paths["run-failed-step"])
        box = tab.locator(".gantt-box")
        scroll, client = box.evaluate("b => [b.scrollWidth, b.clientWidth]")
        assert scroll > client, "the chart squashed into its box instead of scrolling"
        assert tab.locator("svg.gantt").bounding_box()["width"] >= 420
        assert tab.evaluate("document.documentElement.scrollWidth") == WIDTHS["phone"]
        # The runs table scrolls in its own box and is still a table to assistive technology.
        tab.goto(site + paths["runs"])
        assert tab.evaluate("document.documentElement.scrollWidth") == WIDTHS["phone"]
        expect(tab.get_by_role("table")).to_have_count(1)
        expect(tab.get_by_role("columnheader", name="Duration")).to_have_count(1)
    finally:
        tab.set_viewport_size({"width": WIDTHS["laptop"], "height": 800})


def test_keyboard_reaches_a_gantt_bar_and_enter_opens_its_step(
    seeded: tuple[str, dict[str, str]], tab: Page
) -> None:
    """Tab goes from the step tree's links to the Gantt's bars; Enter on a bar opens its step."""
    site, _ = seeded
    tab.goto(f"{site}/runs/ok-run")
    tab.locator(".tree a", has_text="rerank").focus()
    tab.keyboard.press("Tab")  # the chart's box
    tab.keyboard.press("Tab")  # its first bar
    tab.keyboard.press("Tab")
    focused = tab.evaluate("document.activeElement.getAttribute('aria-label')")
    assert focused.startswith("answer.retrieve")
    tab.keyboard.press("Enter")
    expect(tab.locator("#step_panel h2")).to_contain_text("answer.retrieve")
    expect(tab).to_have_url(f"{site}/runs/ok-run?step=answer.retrieve")


def test_charts_name_themselves_and_describe_their_figures(
    seeded: tuple[str, dict[str, str]], tab: Page
) -> None:
    """The step statistics chart, the LLM usage chart and the Gantt are images whose accessible
    description holds the figures drawn (counts, durations, tokens)."""
    site, paths = seeded
    tab.goto(site + paths["step-stats"])
    chart = tab.get_by_role("img", name="Duration of answer.retrieve over time")
    expect(chart).to_have_accessible_description(
        re.compile(r"^2 finished steps: fastest 100\.0 ms, median 100\.0 ms, .*slowest 100\.0 ms")
    )
    tab.goto(site + paths["llm"])
    chart = tab.get_by_role("img", name=re.compile(r"^Tokens per .* by model"))
    expect(chart).to_have_accessible_description(re.compile(r"1 calls, 1,280 tokens.*gpt-4o"))
    tab.goto(site + paths["run-failed-step"])
    gantt = tab.get_by_role("group", name="Gantt chart of the steps")
    expect(gantt).to_have_accessible_description(re.compile(r"^3 steps over 300\.0 ms"))
